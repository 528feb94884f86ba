//! Dependencies failing under a running stack: what was acknowledged is
//! never lost or doubled, what cannot be done is refused with a clear
//! status, and everything resumes once the dependency is back.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use stack_tests::{Grpc, Settings, Shared, spawn_archiver, spawn_core};
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
    let mut during = Vec::new();
    for n in 0..50 {
        during.push(grpc.send(&alice, room, &format!("during {n}")).await.expect("sends go on without the archiver"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(archived(&shared.database_url, &during).await, 0, "nothing reaches the database while it is cut off");

    proxy.restore();
    let all: Vec<i64> = before.iter().chain(&during).copied().collect();
    assert_eq!(all_archived(&shared.database_url, &all).await, 100, "every acknowledged message, once");
}

#[tokio::test]
async fn sends_are_refused_while_the_message_log_hangs_and_nothing_acknowledged_is_lost() {
    let broker = Broker::start().await;
    let shared = Shared { kafka_brokers: broker.addr.clone(), ..Shared::new().await };
    let (core, _stop_core) = spawn_core(&shared, &Settings::default()).await;
    let _stop_archiver = spawn_archiver(&shared).await;
    let mut grpc = Grpc::connect(core).await;
    let alice = grpc.register("alice").await;
    let room = grpc.create_room(&alice, "General", false).await;
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        acknowledged.push(grpc.send(&alice, room, &format!("before {n}")).await.unwrap());
    }

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
}
