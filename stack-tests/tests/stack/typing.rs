//! Typing: the WebSocket `typing` frame and the `Typing` RPC, relayed live
//! to the room's other members, never stored, at most one per user and room
//! every 3 s.

use chat_proto::v1::TypingRequest;
use serde_json::json;
use stack_tests::{TestApp, Ws, assert_status, authed};
use tonic::Code;

#[tokio::test]
async fn typing_outside_a_room_is_refused() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.send(json!({"Type": "typing", "Ref": "t1"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "not in room", "Ref": "t1"}));
    let room = app.create_room(&alice, "General", false).await;
    ws.enter(room).await;
    ws.enter(0).await;
    ws.send(json!({"Type": "typing"})).await;
    assert_eq!(ws.recv().await, json!({"Type": "error", "Error": "not in room"}), "back in the lobby");
}

#[tokio::test]
async fn the_typing_rpc_is_for_members_only() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let room = app.create_room(&alice, "General", false).await;
    let secret = app.create_room(&alice, "Secret", true).await;
    let mut grpc = app.grpc().await;
    let typing = |user, room_id| authed(user, TypingRequest { room_id });
    assert_status(grpc.messages.typing(TypingRequest { room_id: room }).await, Code::Unauthenticated, "missing token");
    assert_status(grpc.messages.typing(typing(&carol, room)).await, Code::PermissionDenied, "not room member");
    assert_status(grpc.messages.typing(typing(&carol, secret)).await, Code::NotFound, "room not found");
    assert_status(grpc.messages.typing(typing(&carol, 999_999)).await, Code::NotFound, "room not found");
    for bad in [0, -5] {
        assert_status(grpc.messages.typing(typing(&alice, bad)).await, Code::InvalidArgument, "room");
    }
    grpc.messages.typing(typing(&alice, room)).await.expect("a member may");
    grpc.messages.typing(typing(&alice, room)).await.expect("and again: dropped silently, not refused");
}
