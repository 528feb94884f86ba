//! Dependencies failing under a running stack: what was acknowledged is
//! never lost or doubled, what cannot be done is refused with a clear
//! status, and everything resumes once the dependency is back.

use std::time::Duration;

use chat_proto::v1::{Message, SubscribeRequest};
use sqlx::{Connection, PgConnection};
use stack_tests::{Grpc, Settings, Shared, authed, eventually, next_event, spawn_archiver, spawn_core};
use testkit::{Broker, Proxy};
use tonic::Code;

/// How many of `ids` the archiver has written to PostgreSQL.
async fn archived(database_url: &str, ids: &[i64]) -> i64 {
    let mut db = PgConnection::connect(database_url).await.expect("the test database");
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1)").bind(ids).fetch_one(&mut db).await.unwrap()
}

/// Waits until every one of `ids` is archived; how many are.
async fn all_archived(database_url: &str, ids: &[i64]) -> i64 {
    for _ in 0..300 {
        let count = archived(database_url, ids).await;
        if count == ids.len() as i64 {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    archived(database_url, ids).await
}

#[tokio::test]
async fn the_archiver_waits_out_a_postgres_outage_and_loses_nothing() {
    let shared = Shared::new().await;
    let (core, _stop_core) = spawn_core(&shared, &Settings::default()).await;
    // The archiver reaches PostgreSQL through a link the test can cut.
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let through_proxy = shared.database_url.replace("127.0.0.1:5432", &proxy.addr().to_string());
    assert_ne!(through_proxy, shared.database_url, "TEST_POSTGRES_URL must point at 127.0.0.1:5432");
    let _stop_archiver = spawn_archiver(&Shared { database_url: through_proxy, ..shared.clone() }).await;
    let mut grpc = Grpc::connect(core).await;
    let alice = grpc.register("alice").await;
    let room = grpc.create_room(&alice, "General", false).await;

    let mut before = Vec::new();
    for n in 0..50 {
        before.push(grpc.send(&alice, room, &format!("before {n}")).await.unwrap());
    }
    assert_eq!(all_archived(&shared.database_url, &before).await, 50);

    proxy.cut();
    let tried_before = proxy.connections();
    let mut during = Vec::new();
    for n in 0..50 {
        during.push(grpc.send(&alice, room, &format!("during {n}")).await.expect("sends go on without the archiver"));
    }
    // The archiver has read them once it tries to reach the database.
    for _ in 0..300 {
        if proxy.connections() > tried_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.connections() > tried_before, "the archiver tries to store what it read");
    assert_eq!(archived(&shared.database_url, &during).await, 0, "nothing reaches the database while it is cut off");

    proxy.restore();
    let all: Vec<i64> = before.iter().chain(&during).copied().collect();
    assert_eq!(all_archived(&shared.database_url, &all).await, 100, "every acknowledged message, once");
}

/// core-svc and an archiver on a broker of the test's own, and a room with
/// one member.
struct OnItsOwnBroker {
    broker: Broker,
    shared: Shared,
    core: std::net::SocketAddr,
    grpc: Grpc,
    alice: stack_tests::User,
    room: i64,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl OnItsOwnBroker {
    async fn start() -> Self {
        let broker = Broker::start().await;
        let shared = Shared { kafka_brokers: broker.addr.clone(), ..Shared::new().await };
        let (core, stop_core) = spawn_core(&shared, &Settings::default()).await;
        let stop_archiver = spawn_archiver(&shared).await;
        let mut grpc = Grpc::connect(core).await;
        let alice = grpc.register("alice").await;
        let room = grpc.create_room(&alice, "General", false).await;
        Self { broker, shared, core, grpc, alice, room, _stops: vec![stop_archiver, stop_core] }
    }
}

#[tokio::test]
async fn sends_are_refused_while_the_message_log_hangs_and_nothing_acknowledged_is_lost() {
    let OnItsOwnBroker { broker, shared, core: _, mut grpc, alice, room, _stops } = OnItsOwnBroker::start().await;
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        acknowledged.push(grpc.send(&alice, room, &format!("before {n}")).await.unwrap());
    }

    // A member in the room: live events reach it only once they are durable.
    let subscribe = authed(&alice, SubscribeRequest { room_id: room, after_id: None });
    let mut live = grpc.messages.subscribe(subscribe).await.expect("subscribed").into_inner();

    broker.pause();
    let refused = grpc.send(&alice, room, "while the log hangs").await.expect_err("no ack, no success");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(refused.message(), "temporarily unavailable");

    broker.resume();
    // The producer reconnects on its own; the first sends may still fail.
    let mut resumed = false;
    for n in 0..100 {
        match grpc.send(&alice, room, &format!("after {n}")).await {
            Ok(id) => {
                acknowledged.push(id);
                resumed = true;
            }
            Err(status) if !resumed && status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("send failed after the log came back: {status:?}"),
        }
        if acknowledged.len() >= 40 {
            break;
        }
    }
    assert!(resumed, "sends succeed again once the log is back");
    let expected = acknowledged.len() as i64;
    assert_eq!(all_archived(&shared.database_url, &acknowledged).await, expected);
    // Live events keep their order: had the refused one been published, it
    // would come before the first one sent after it.
    let first_after = acknowledged[20];
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), live.message()).await.expect("live events flow");
        let event = event.expect("the stream is open").expect("an event");
        assert_ne!(event.text, "while the log hangs", "a refused send reached a live subscriber");
        if event.id == first_after {
            break;
        }
    }
    let stored = archived_texts(&shared.database_url, room).await;
    assert!(!stored.contains_key("while the log hangs"), "a refused send is not in history");
}

fn stored_once(stored: &std::collections::HashMap<String, i64>, text: &str) -> bool {
    stored.get(text) == Some(&1)
}

/// How many times each of `texts` is in the room's archived history.
async fn archived_texts(database_url: &str, room: i64) -> std::collections::HashMap<String, i64> {
    let mut db = PgConnection::connect(database_url).await.expect("the test database");
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT text, count(*) FROM messages WHERE room_id = $1 AND kind = 1 GROUP BY text")
            .bind(room)
            .fetch_all(&mut db)
            .await
            .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn a_broker_killed_mid_stream_refuses_sends_then_resumes_and_nothing_acknowledged_is_lost_or_doubled() {
    let OnItsOwnBroker { mut broker, shared, core, mut grpc, alice, room, _stops } = OnItsOwnBroker::start().await;

    // A steady stream of sends, some of them in flight when the broker dies.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let streaming = {
        let (mut grpc, alice) = (Grpc::connect(core).await, alice.clone());
        tokio::spawn(async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0);
            for n in 0.. {
                if *stopped.borrow_and_update() {
                    break;
                }
                let text = format!("stream {n}");
                // A send either succeeds or is refused within the produce
                // timeout: it never hangs.
                let answer = tokio::time::timeout(Duration::from_secs(30), grpc.send(&alice, room, &text))
                    .await
                    .expect("a send is answered while the broker is down");
                match answer {
                    Ok(_) => acknowledged.push(text),
                    Err(status) => {
                        assert_eq!((status.code(), status.message()), (Code::Unavailable, "temporarily unavailable"));
                        refused += 1;
                    }
                }
            }
            (acknowledged, refused)
        })
    };
    let mut before = Vec::new();
    for n in 0..20 {
        grpc.send(&alice, room, &format!("before {n}")).await.unwrap();
        before.push(format!("before {n}"));
    }
    // The archiver is mid-stream too: it has stored and committed some.
    for _ in 0..300 {
        let stored = archived_texts(&shared.database_url, room).await;
        if before.iter().all(|text| stored_once(&stored, text)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    broker.kill();
    let refused = tokio::time::timeout(Duration::from_secs(30), grpc.send(&alice, room, "while the broker is down"))
        .await
        .expect("a send is answered while the broker is down")
        .expect_err("no broker, no success");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(refused.message(), "temporarily unavailable");

    broker.restart().await;
    // The same core-svc and archiver go on: the producer reconnects by itself.
    let mut after = Vec::new();
    let restarted = std::time::Instant::now();
    for n in 0.. {
        if restarted.elapsed() > Duration::from_secs(90) {
            break;
        }
        let text = format!("after {n}");
        match grpc.send(&alice, room, &text).await {
            Ok(_) => after.push(text),
            Err(status) if after.is_empty() && status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("a send failed after the broker came back: {status:?}"),
        }
        if after.len() == 20 {
            break;
        }
    }
    assert_eq!(after.len(), 20, "sends succeed again once the broker is back");
    stop.send_replace(true);
    let (streamed, streamed_refused) = streaming.await.unwrap();
    assert!(streamed_refused > 0, "the stream was running while the broker was down");

    let acknowledged: Vec<String> = before.into_iter().chain(streamed).chain(after).collect();
    let mut stored = archived_texts(&shared.database_url, room).await;
    for _ in 0..300 {
        if acknowledged.iter().all(|text| stored.contains_key(text)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = archived_texts(&shared.database_url, room).await;
    }
    let missing: Vec<&String> = acknowledged.iter().filter(|text| !stored.contains_key(*text)).collect();
    assert!(missing.is_empty(), "acknowledged but not in history: {missing:?}");
    let doubled: Vec<(&String, &i64)> = stored.iter().filter(|(_, count)| **count > 1).collect();
    assert!(doubled.is_empty(), "stored more than once: {doubled:?}");
}

/// A replica whose connection to NATS is down holds what it publishes until
/// the connection is back. It answers a send only once the live copy is
/// out, so that the client's next send, through a replica whose connection
/// is up, reaches live readers after it rather than before (the fault
/// suite saw such pairs out of order after a NATS restart).
#[tokio::test]
async fn a_replica_cut_off_from_nats_answers_a_send_once_its_live_copy_is_out() {
    let shared = Shared::new().await;
    let nats = testkit::nats_url().trim_start_matches("nats://").parse().expect("NATS at host:port");
    let proxy = Proxy::start(nats).await;
    let cut_off = Settings { nats_url: format!("nats://{}", proxy.addr()), ..Settings::default() };
    let (core_a, _stop_a) = spawn_core(&shared, &cut_off).await;
    let (core_b, _stop_b) = spawn_core(&shared, &Settings::default()).await;
    let (mut a, mut b) = (Grpc::connect(core_a).await, Grpc::connect(core_b).await);
    let alice = b.register("alice").await;
    let room = b.create_room(&alice, "General", false).await;
    let mut live = b.subscribe(&alice, room).await;

    let tried = proxy.connections();
    proxy.cut();
    eventually("the cut-off replica tries to connect again", async || proxy.connections() > tried).await;
    let back_in_a_second = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.restore();
    };
    let first = async { a.send(&alice, room, "through the replica cut off").await.expect("sent") };
    let ((), first) = tokio::join!(back_in_a_second, first);
    let second = b.send(&alice, room, "through the other").await.expect("sent");
    let posted = |event: &Message| !event.text.is_empty();
    let heard = [next_event(&mut live, posted).await.id, next_event(&mut live, posted).await.id];
    assert_eq!(heard, [first, second], "live in the order they were sent");
}
