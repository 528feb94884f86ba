//! Message id node leases, against the real PostgreSQL: only the holder
//! renews or releases a lease, and a node's ids keep increasing across
//! holders.

use core_svc::ids::NodeLease;
use sqlx::PgPool;

async fn migrated_database() -> PgPool {
    let db = PgPool::connect(&testkit::fresh_database().await).await.expect("the test database");
    core_svc::app::migrate(&db).await.expect("migrated");
    db
}

/// What a replica that paused for longer than its lease sees: the lease
/// lapsed while it was away.
async fn lapse(db: &PgPool, node: i32) {
    sqlx::query("UPDATE node_leases SET expires_at = now() - interval '1 second' WHERE node_id = $1")
        .bind(node)
        .execute(db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replica_that_lost_its_lease_can_neither_release_nor_renew_its_successors() {
    let db = migrated_database().await;
    let (paused, paused_ids) = NodeLease::acquire(db.clone()).await.unwrap();
    lapse(&db, paused.node).await;
    let (successor, successor_ids) = NodeLease::acquire(db.clone()).await.unwrap();
    assert_eq!(successor.node, paused.node, "the lapsed node id is taken again");

    // The paused replica comes back and stops: its release must not free
    // the successor's node id, nor may it renew it.
    assert!(!paused.renew(paused_ids.last_issued()).await.unwrap());
    paused.release(&paused_ids).await;
    assert_eq!(paused_ids.next(), None, "a released generator issues nothing");
    let (third, _) = NodeLease::acquire(db.clone()).await.unwrap();
    assert_ne!(third.node, successor.node, "two running replicas never share a node id");
    assert!(successor.renew(successor_ids.last_issued()).await.unwrap(), "the successor still holds its lease");
    assert!(successor_ids.next().is_some());
}

#[tokio::test]
async fn a_new_holder_issues_ids_above_every_id_issued_under_its_node() {
    let db = migrated_database().await;
    let (first, first_ids) = NodeLease::acquire(db.clone()).await.unwrap();
    let issued: Vec<i64> = (0..1000).map(|_| first_ids.next().unwrap()).collect();
    first.release(&first_ids).await;
    let recorded: i64 = sqlx::query_scalar("SELECT last_id FROM node_leases WHERE node_id = $1")
        .bind(first.node)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(recorded, *issued.last().unwrap(), "the release records the last id issued");

    // A holder whose clock ran an hour ahead: its successor's clock is
    // behind every id it issued, and must still not go below them.
    let an_hour_of_ids = 3_600_000_i64 << 12;
    sqlx::query("UPDATE node_leases SET last_id = last_id + $2 WHERE node_id = $1")
        .bind(first.node)
        .bind(an_hour_of_ids)
        .execute(&db)
        .await
        .unwrap();
    let (second, second_ids) = NodeLease::acquire(db.clone()).await.unwrap();
    assert_eq!(second.node, first.node, "a released node id is taken at once");
    let next = second_ids.next().unwrap();
    assert!(next > recorded + an_hour_of_ids, "{next} is above the last id issued under node {}", second.node);

    // Renewing records the last id issued too.
    assert!(second.renew(second_ids.last_issued()).await.unwrap());
    let recorded: i64 = sqlx::query_scalar("SELECT last_id FROM node_leases WHERE node_id = $1")
        .bind(second.node)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(recorded, next);
}
