//! `MessageService.Subscribe`: a room's live events over a gRPC stream.

use std::time::Duration;

use chat_proto::v1::{
    InviteRequest, Message, MessageKind, SubscribeRequest, message_service_client::MessageServiceClient,
};
use client_input::token::TokenKeys;
use stack_tests::{
    Grpc, JWT_SECRET, Settings, Shared, TestApp, User, assert_status, authed, spawn_archiver, spawn_core,
};
use tonic::{Code, Streaming, transport::Endpoint};

const WAIT: Duration = Duration::from_secs(10);

async fn next(stream: &mut Streaming<Message>) -> Message {
    let item = tokio::time::timeout(WAIT, stream.message()).await.expect("an event within 10 s");
    item.expect("the stream goes on").expect("the stream is open")
}

/// Reads until the stream fails; its status.
async fn end_of(stream: &mut Streaming<Message>) -> tonic::Status {
    loop {
        match tokio::time::timeout(WAIT, stream.message()).await.expect("the stream ends within 10 s") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => return status,
        }
    }
}

async fn subscribe(grpc: &mut Grpc, user: &User, room_id: i64, after_id: Option<i64>) -> Streaming<Message> {
    let request = authed(user, SubscribeRequest { room_id, after_id });
    grpc.messages.subscribe(request).await.expect("subscribed").into_inner()
}

#[tokio::test]
async fn a_stream_delivers_live_messages_and_joins() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let bob = grpc.register("bob").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let mut stream = subscribe(&mut grpc, &alice, room, None).await;

    grpc.rooms.invite(authed(&alice, InviteRequest { room_id: room, uid: bob.uid })).await.unwrap();
    let join = next(&mut stream).await;
    assert_eq!((join.kind(), join.uid, join.room_id, join.text.as_str()), (MessageKind::Join, bob.uid, room, ""));
    let id = grpc.send(&bob, room, "hello").await.unwrap();
    let message = next(&mut stream).await;
    assert_eq!(
        (message.id, message.kind(), message.uid, message.text.as_str()),
        (id, MessageKind::Message, bob.uid, "hello")
    );
}

#[tokio::test]
async fn a_stream_from_an_id_replays_what_was_missed_then_goes_live_without_gap_or_duplicate() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let first = grpc.send(&alice, room, "seen").await.unwrap();
    let mut missed = Vec::new();
    for n in 0..150 {
        missed.push(grpc.send(&alice, room, &format!("missed {n}")).await.unwrap());
    }
    let mut stream = subscribe(&mut grpc, &alice, room, Some(first)).await;
    // Sent while the replay is being read: live, and maybe in the replay too.
    let mut sender = grpc.clone();
    let sender_alice = alice.clone();
    let during = tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 0..20 {
            ids.push(sender.send(&sender_alice, room, &format!("during {n}")).await.unwrap());
        }
        ids
    });
    let expected: Vec<i64> = missed.into_iter().chain(during.await.unwrap()).collect();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        received.push(next(&mut stream).await.id);
    }
    let mut sorted = expected.clone();
    sorted.sort_unstable();
    assert_eq!(received, sorted, "every message once, oldest first");
    let last = grpc.send(&alice, room, "live").await.unwrap();
    assert_eq!(next(&mut stream).await.id, last, "nothing else came first");
}

#[tokio::test]
async fn subscribe_refuses_strangers_and_bad_input() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let mallory = grpc.register("mallory").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let private = grpc.create_room(&alice, "Secret", true).await;
    let to = |user: &User, room_id: i64, after_id| authed(user, SubscribeRequest { room_id, after_id });
    assert_status(grpc.messages.subscribe(to(&mallory, room, None)).await, Code::PermissionDenied, "not room member");
    assert_status(grpc.messages.subscribe(to(&mallory, private, None)).await, Code::NotFound, "room not found");
    assert_status(grpc.messages.subscribe(to(&alice, room + 1000, None)).await, Code::NotFound, "room not found");
    assert_status(grpc.messages.subscribe(to(&alice, -1, None)).await, Code::InvalidArgument, "room");
    assert_status(grpc.messages.subscribe(to(&alice, room, Some(-5))).await, Code::InvalidArgument, "after id");
    let anonymous = grpc.messages.subscribe(SubscribeRequest { room_id: room, after_id: None }).await;
    assert_status(anonymous, Code::Unauthenticated, "missing token");
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off_and_others_go_on() {
    let settings = Settings { subscribe_queue: 16, ..Settings::default() };
    let app = TestApp::spawn_with(settings).await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let room = grpc.create_room(&alice, "General", false).await;
    // A small HTTP/2 window, so the server soon has nowhere to put events.
    let channel = Endpoint::from_shared(format!("http://{}", app.core))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut slow_client = MessageServiceClient::new(channel);
    let mut slow = slow_client
        .subscribe(authed(&alice, SubscribeRequest { room_id: room, after_id: None }))
        .await
        .unwrap()
        .into_inner();
    let mut keeping_up = subscribe(&mut grpc, &alice, room, None).await;
    let text = "x".repeat(1500);
    for _ in 0..200 {
        let id = grpc.send(&alice, room, &text).await.unwrap();
        assert_eq!(next(&mut keeping_up).await.id, id);
    }
    let status = end_of(&mut slow).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let id = grpc.send(&alice, room, "still here").await.unwrap();
    assert_eq!(next(&mut keeping_up).await.id, id);
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable() {
    let shared = Shared::new().await;
    let (core, stop_core) = spawn_core(&shared, &Settings::default()).await;
    let _stop_archiver = spawn_archiver(&shared).await;
    let mut grpc = Grpc::connect(core).await;
    let alice = grpc.register("alice").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let mut stream = subscribe(&mut grpc, &alice, room, None).await;
    drop(stop_core);
    let status = end_of(&mut stream).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("after_id"), "{status:?}");
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let short_lived = TokenKeys::new(JWT_SECRET.as_bytes()).issue(alice.uid, chrono::Duration::seconds(2));
    let alice_for_now = User { uid: alice.uid, token: short_lived.token };
    let mut stream = subscribe(&mut grpc, &alice_for_now, room, None).await;
    let id = grpc.send(&alice, room, "while the token lasts").await.unwrap();
    assert_eq!(next(&mut stream).await.id, id);
    let status = end_of(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(chrono::Utc::now() >= short_lived.expires_at, "not before the token expired");
}
