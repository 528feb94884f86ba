//! The two ways in meet: a message sent over WebSocket arrives on a gRPC
//! stream, and one sent over gRPC arrives on the WebSocket.

use chat_proto::v1::{Message, MessageKind};
use serde_json::json;
use stack_tests::{TestApp, Ws, next_event};

/// Not presence nor typing, which come as members come, go and type.
fn an_entry(event: &Message) -> bool {
    !matches!(event.kind(), MessageKind::Presence | MessageKind::Typing)
}

#[tokio::test]
async fn websocket_and_grpc_clients_share_a_room() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    app.put("/join", Some(&bob.token), json!({"RoomID": room})).await;
    let mut grpc = app.grpc().await;
    let mut stream = grpc.subscribe(&bob, room).await;
    let mut ws = Ws::connect(&app.base, &alice.token).await;
    ws.enter(room).await;

    let (sent, _) = ws.say("from the browser").await;
    let event = next_event(&mut stream, an_entry).await;
    assert_eq!(
        (json!(event.id), event.uid, event.text.as_str()),
        (sent["MessageID"].clone(), alice.uid, "from the browser")
    );

    let id = grpc.send(&bob, room, "from a service").await.unwrap();
    let frame = ws.recv().await;
    assert_eq!(frame["Type"], "message");
    assert_eq!(
        (frame["ID"].as_i64(), frame["UID"].as_i64(), frame["Text"].as_str()),
        (Some(id), Some(bob.uid), Some("from a service"))
    );
    let echoed = next_event(&mut stream, an_entry).await;
    assert_eq!(echoed.id, id, "Bob's stream has his own message too");
}
