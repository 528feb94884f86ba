//! `chat.v1.MessageService` over gRPC: send and history.

use chat_proto::v1::{HistoryRequest, JoinRoomRequest, MessageKind, SendRequest};
use stack_tests::{Settings, TestApp, User, assert_status, authed};
use tonic::Code;

fn send(room_id: i64, text: &str) -> SendRequest {
    SendRequest { room_id, text: text.into(), ..SendRequest::default() }
}

fn history(room_id: i64, last_id: i64, limit: u32) -> HistoryRequest {
    HistoryRequest { room_id, last_id, limit, after_id: None }
}

#[tokio::test]
async fn sent_messages_are_in_history_at_once_newest_first() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let bob = grpc.register("bob").await;
    let room = grpc.create_room(&alice, "General", false).await;
    grpc.rooms.join_room(authed(&bob, JoinRoomRequest { room_id: room })).await.unwrap();

    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let sent = grpc.messages.send(authed(&alice, send(room, text))).await.unwrap().into_inner();
        assert!(sent.timestamp.is_some());
        ids.push(sent.message_id);
    }
    assert!(ids.is_sorted(), "ids increase: {ids:?}");

    let page = grpc.messages.history(authed(&bob, history(room, 0, 0))).await.unwrap().into_inner().messages;
    let texts: Vec<&str> = page.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["three", "two", "one", ""], "newest first, ending with Bob's join");
    assert_eq!(page[3].kind(), MessageKind::Join);
    assert_eq!((page[3].uid, page[0].uid, page[0].room_id), (bob.uid, alice.uid, room));

    let older = grpc.messages.history(authed(&bob, history(room, ids[1], 1))).await.unwrap().into_inner();
    assert_eq!(older.messages.iter().map(|m| m.id).collect::<Vec<_>>(), [ids[1]], "LastID is inclusive");
    let after = HistoryRequest { after_id: Some(ids[0]), ..history(room, 0, 0) };
    let newer = grpc.messages.history(authed(&bob, after)).await.unwrap().into_inner();
    assert_eq!(newer.messages.iter().map(|m| m.id).collect::<Vec<_>>(), ids[1..], "after_id: oldest first");
}

#[tokio::test]
async fn send_and_history_refuse_what_the_contract_refuses() {
    let app = TestApp::spawn_with(Settings { send_per_second: 5, ..Settings::default() }).await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let mallory = grpc.register("mallory").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let private = grpc.create_room(&alice, "Secret", true).await;
    let say = |user: &User, room_id: i64, text: &str| authed(user, send(room_id, text));

    assert_status(grpc.messages.send(send(room, "hi")).await, Code::Unauthenticated, "missing token");
    assert_status(grpc.messages.send(say(&alice, room, " \n ")).await, Code::InvalidArgument, "empty message");
    let long = "é".repeat(2001);
    assert_status(grpc.messages.send(say(&alice, room, &long)).await, Code::InvalidArgument, "message too long");
    assert!(grpc.messages.send(say(&alice, room, &"é".repeat(2000))).await.is_ok());
    assert_status(grpc.messages.send(say(&alice, 0, "hi")).await, Code::InvalidArgument, "room");
    assert_status(grpc.messages.send(say(&mallory, room, "hi")).await, Code::PermissionDenied, "not room member");

    let read = |user: &User, room_id: i64, limit: u32| authed(user, history(room_id, 0, limit));
    assert_status(grpc.messages.history(read(&mallory, room, 0)).await, Code::PermissionDenied, "not room member");
    assert_status(grpc.messages.history(read(&mallory, private, 0)).await, Code::NotFound, "room not found");
    assert_status(grpc.messages.history(read(&alice, room, 101)).await, Code::InvalidArgument, "limit");
    assert_status(grpc.messages.history(authed(&alice, history(room, -1, 0))).await, Code::InvalidArgument, "last id");
    assert_status(grpc.messages.history(history(room, 0, 0)).await, Code::Unauthenticated, "missing token");

    let mut refused = None;
    for n in 0..20 {
        if let Err(status) = grpc.messages.send(say(&alice, room, &format!("flood {n}"))).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("the flood is cut off");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.metadata().get("retry-after").is_some());
}
