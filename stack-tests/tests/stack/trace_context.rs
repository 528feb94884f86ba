//! The W3C trace context a client sends goes on with its message through
//! every hop: gateway, core-svc, the Kafka record and the NATS event.

use std::time::Duration;

use chat_proto::{events::v1::Event, v1::SendRequest};
use futures::StreamExt;
use prost::Message as _;
use rdkafka::{
    ClientConfig,
    consumer::{Consumer, StreamConsumer},
    message::{Headers, Message as _},
};
use serde_json::json;
use stack_tests::{Grpc, Settings, Shared, TestApp, authed, spawn_core, spawn_gateway};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WAIT: Duration = Duration::from_secs(10);

fn traceparent() -> String {
    format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
}

#[track_caller]
fn assert_same_trace(carried: Option<&str>) {
    let carried = carried.expect("a traceparent is carried");
    assert!(carried.starts_with(&format!("00-{TRACE_ID}-")), "{carried} is not in trace {TRACE_ID}");
    assert_ne!(carried, traceparent(), "the hop adds a span of its own to the trace");
}

async fn live_events(shared: &Shared, room: i64) -> async_nats::Subscriber {
    let nats = async_nats::connect(testkit::nats_url()).await.expect("the local NATS");
    let subscriber = nats.subscribe(format!("{}.room.{room}", shared.nats_prefix)).await.unwrap();
    nats.flush().await.unwrap();
    subscriber
}

#[tokio::test]
async fn a_grpc_send_carries_its_trace_into_the_kafka_record_and_the_nats_event() {
    let shared = Shared::new().await;
    let (core, _stop_core) = spawn_core(&shared, &Settings::default()).await;
    let mut grpc = Grpc::connect(core).await;
    let alice = grpc.register("alice").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let mut live = live_events(&shared, room).await;

    let mut request = authed(&alice, SendRequest { room_id: room, text: "traced".into(), ..SendRequest::default() });
    request.metadata_mut().insert("traceparent", traceparent().parse().unwrap());
    let id = grpc.messages.send(request).await.unwrap().into_inner().message_id;

    let event = tokio::time::timeout(WAIT, live.next()).await.expect("a live event").unwrap();
    assert_eq!(Event::decode(event.payload).unwrap().id, id);
    assert_same_trace(event.headers.as_ref().and_then(|headers| headers.get("traceparent")).map(|v| v.as_str()));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &shared.kafka_brokers)
        .set("group.id", format!("{}-reader", shared.nats_prefix))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&shared.topic]).unwrap();
    loop {
        let record = tokio::time::timeout(WAIT, consumer.recv()).await.expect("the record").unwrap();
        if Event::decode(record.payload().unwrap()).unwrap().id != id {
            continue;
        }
        let headers = record.headers().expect("record headers");
        let carried = headers.iter().find(|header| header.key == "traceparent").and_then(|header| header.value);
        assert_same_trace(carried.map(|value| std::str::from_utf8(value).unwrap()));
        break;
    }
}

#[tokio::test]
async fn a_rest_call_carries_its_trace_through_the_gateway_to_the_join_event() {
    let shared = Shared::new().await;
    let settings = Settings::default();
    let (core, _stop_core) = spawn_core(&shared, &settings).await;
    let (gateway, _stop_gateway) = spawn_gateway(&shared, &settings, core).await;
    let app = TestApp::at(gateway.clone(), core, &shared);
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&alice, "General", false).await;
    let mut live = live_events(&shared, room).await;

    let joined = reqwest::Client::new()
        .put(format!("{gateway}/join"))
        .header("Authorization", &bob.token)
        .header("traceparent", traceparent())
        .body(json!({"RoomID": room}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), reqwest::StatusCode::OK);
    let event = tokio::time::timeout(WAIT, live.next()).await.expect("the join event").unwrap();
    assert_eq!(Event::decode(event.payload).unwrap().uid, bob.uid);
    assert_same_trace(event.headers.as_ref().and_then(|headers| headers.get("traceparent")).map(|v| v.as_str()));
}
