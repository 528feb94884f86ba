//! The archiver against the real log and database: no record stops it
//! (one that can never be stored is set aside as a dead letter, and so is a
//! different message with an id already stored), offsets are committed
//! only after the insert, and storing what is already stored changes
//! nothing. Changes to entries end in the same state whatever their order,
//! however often they are read, and however often the archiver dies.

use std::{sync::Arc, time::Duration};

use chat_proto::{
    events::v1::{Deleted, Edited, Event, Posted, Reacted, event::Kind},
    v1::{EditRequest, HistoryRequest, ReactRequest},
};
use chrono::{DateTime, Utc};
use prost::Message as _;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use service_kit::message_log;
use sqlx::{Connection, PgConnection};
use stack_tests::{
    Grpc, Settings, Shared, User, archiver_group, authed, eventually, spawn_archiver, spawn_archiver_in, spawn_core,
    spawn_killable_archiver,
};
use testkit::Proxy;

/// The longest one request to the broker may take.
const KAFKA_CALL: Duration = Duration::from_secs(5);

/// One row of the `messages` table.
type Row = (i64, i64, i64, i16, String, DateTime<Utc>);

/// The whole archived history, by id.
async fn history(database_url: &str) -> Vec<Row> {
    let mut db = PgConnection::connect(database_url).await.expect("the test database");
    sqlx::query_as("SELECT id, room_id, user_id, kind, text, created_at FROM messages ORDER BY id")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// How many of `ids` are archived.
async fn archived(database_url: &str, ids: &[i64]) -> usize {
    let stored = history(database_url).await;
    ids.iter().filter(|id| stored.iter().any(|row| row.0 == **id)).count()
}

/// One row of the `dead_letters` table: partition, offset, message id,
/// payload, reason.
type DeadLetter = (i32, i64, Option<i64>, Option<Vec<u8>>, String);

/// Every record of `topic` set aside, in log order.
async fn dead_letters(database_url: &str, topic: &str) -> Vec<DeadLetter> {
    let mut db = PgConnection::connect(database_url).await.expect("the test database");
    sqlx::query_as(
        "SELECT partition, record_offset, message_id, payload, reason FROM dead_letters
         WHERE topic = $1 ORDER BY partition, record_offset",
    )
    .bind(topic)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

/// A message record's payload, as core-svc would write it (with the time
/// it was sent: a copy of the record is then the same message).
fn message(id: i64, room_id: i64, text: &str) -> Vec<u8> {
    let kind = Some(Kind::Posted(Posted { text: text.into(), ..Posted::default() }));
    let timestamp = Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 });
    Event { id, room_id, uid: 1, timestamp, kind }.encode_to_vec()
}

/// Writes records straight to one test's topic, as any producer could.
struct Producer {
    producer: FutureProducer,
    topic: String,
}

impl Producer {
    fn to(shared: &Shared) -> Self {
        let producer = ClientConfig::new().set("bootstrap.servers", &shared.kafka_brokers).create().unwrap();
        Self { producer, topic: shared.topic.clone() }
    }

    /// Writes `payload` keyed by `room`, as core-svc does; where it went:
    /// the partition and the offset.
    async fn write(&self, room: i64, payload: &[u8]) -> (i32, i64) {
        let key = room.to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(payload);
        let delivery = self.producer.send(record, KAFKA_CALL).await.map_err(|(error, _)| error).expect("written");
        (delivery.partition, delivery.offset)
    }

    /// Writes core-svc's withdrawal of a refused message.
    async fn withdraw(&self, room: i64, id: i64) {
        let (key, id) = (room.to_string(), id.to_string());
        let header = Header { key: message_log::WITHDRAWN, value: Some(id.as_str()) };
        let record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&self.topic).key(key.as_str()).headers(OwnedHeaders::new().insert(header));
        self.producer.send(record, KAFKA_CALL).await.map_err(|(error, _)| error).expect("written");
    }
}

/// core-svc (which migrates the database and creates the topic) and a room
/// with one member, with no archiver yet.
struct Room {
    shared: Shared,
    grpc: Grpc,
    alice: User,
    id: i64,
    _stop_core: tokio::sync::oneshot::Sender<()>,
}

impl Room {
    async fn open() -> Self {
        let shared = Shared::new().await;
        let (core, _stop_core) = spawn_core(&shared, &Settings::default()).await;
        let mut grpc = Grpc::connect(core).await;
        let alice = grpc.register("alice").await;
        let id = grpc.create_room(&alice, "General", false).await;
        Self { shared, grpc, alice, id, _stop_core }
    }

    /// Sends `count` messages; their ids.
    async fn send(&mut self, count: usize) -> Vec<i64> {
        let mut ids = Vec::new();
        for n in 0..count {
            ids.push(self.grpc.send(&self.alice, self.id, &format!("message {n}")).await.unwrap());
        }
        ids
    }
}

/// A consumer group's committed offsets on one test's topic, seen from
/// outside the group.
struct GroupOffsets {
    consumer: Arc<BaseConsumer>,
    topic: String,
}

impl GroupOffsets {
    fn of(shared: &Shared, group: &str) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", &shared.kafka_brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("a Kafka client");
        Self { consumer: Arc::new(consumer), topic: shared.topic.clone() }
    }

    /// Whether the group has committed, on every partition, the offset past
    /// the last record: it has read, and so stored, everything. A broker
    /// error (the group's coordinator still loading, say) is a "not yet":
    /// callers ask again.
    async fn caught_up(&self) -> bool {
        self.blocking(|consumer, topic| {
            let partitions = partitions(consumer, topic);
            let Ok(committed) = consumer.committed_offsets(partitions.clone(), KAFKA_CALL) else { return false };
            partitions.elements().iter().all(|partition| {
                let Ok((_, end)) = consumer.fetch_watermarks(topic, partition.partition(), KAFKA_CALL) else {
                    return false;
                };
                let at = committed.find_partition(topic, partition.partition()).map(|p| p.offset());
                end == 0 || at == Some(Offset::Offset(end))
            })
        })
        .await
    }

    /// Commits the start of every partition, as if the group had never read
    /// anything; false while the group still has members, which the broker
    /// does not let anyone else commit for.
    async fn rewind(&self) -> bool {
        self.blocking(|consumer, topic| {
            let mut start = partitions(consumer, topic);
            start.set_all_offsets(Offset::Offset(0)).expect("offsets");
            consumer.commit(&start, CommitMode::Sync).is_ok()
        })
        .await
    }

    /// Runs `call` on a thread that may block: librdkafka's calls block.
    async fn blocking<T: Send + 'static>(&self, call: impl FnOnce(&BaseConsumer, &str) -> T + Send + 'static) -> T {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || call(&consumer, &topic)).await.unwrap()
    }
}

/// Every partition of `topic`.
fn partitions(consumer: &BaseConsumer, topic: &str) -> TopicPartitionList {
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_CALL).expect("the topic's metadata");
    let mut list = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        list.add_partition(topic, partition.id());
    }
    list
}

#[tokio::test]
async fn an_archiver_that_read_a_batch_it_could_not_store_then_was_replaced_still_gets_it_stored() {
    let mut room = Room::open().await;
    let sent = room.send(20).await;
    // The first archiver reaches PostgreSQL only through a link cut from the start.
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    proxy.cut();
    let through_proxy = room.shared.database_url.replace("127.0.0.1:5432", &proxy.addr().to_string());
    assert_ne!(through_proxy, room.shared.database_url, "TEST_POSTGRES_URL must point at 127.0.0.1:5432");
    let stop_first = spawn_archiver(&Shared { database_url: through_proxy, ..room.shared.clone() }).await;
    // It connects to the database only to store a batch: once it tries, it
    // has read one.
    eventually("the first archiver tries to store what it read", async || proxy.connections() > 0).await;

    let _ = stop_first.send(());
    let _stop_second = spawn_archiver(&room.shared).await;
    eventually("its replacement in the same group stores every message", async || {
        archived(&room.shared.database_url, &sent).await == sent.len()
    })
    .await;
}

#[tokio::test]
async fn storing_the_log_again_leaves_history_as_it_was_and_the_archiver_running() {
    let mut room = Room::open().await;
    let shared = room.shared.clone();
    let group = GroupOffsets::of(&shared, &archiver_group(&shared));
    let stop_first = spawn_archiver(&shared).await;
    let sent = room.send(30).await;
    eventually("the archiver stores and commits the log", async || group.caught_up().await).await;
    let before = history(&shared.database_url).await;
    assert_eq!(archived(&shared.database_url, &sent).await, sent.len());

    // The same batches again in the same group, as after a crash between
    // the insert and the commit: stopped, rewound to the start, restarted.
    let _ = stop_first.send(());
    eventually("the stopped archiver's group is rewound", async || group.rewind().await).await;
    let _stop_again = spawn_archiver(&shared).await;
    // And the whole log once more, in a group of its own.
    let replay_group = format!("{}-replay", shared.nats_prefix);
    let replay = GroupOffsets::of(&shared, &replay_group);
    let _stop_replay = spawn_archiver_in(&shared, &replay_group).await;
    eventually("both groups store and commit the log again", async || {
        group.caught_up().await && replay.caught_up().await
    })
    .await;
    assert_eq!(history(&shared.database_url).await, before, "the same rows, once each, unchanged");
    let set_aside = dead_letters(&shared.database_url, &shared.topic).await;
    assert!(set_aside.is_empty(), "a message stored again is not set aside: {set_aside:?}");

    let after = room.send(1).await;
    eventually("a message sent afterwards is archived", async || archived(&shared.database_url, &after).await == 1)
        .await;
    let now = history(&shared.database_url).await;
    assert_eq!(now.len(), before.len() + 1);
    assert!(before.iter().all(|row| now.contains(row)), "history before it is unchanged");
}

#[tokio::test]
async fn a_record_postgres_refuses_or_that_is_no_message_is_set_aside_and_the_rest_is_archived() {
    let mut room = Room::open().await;
    let shared = room.shared.clone();
    let log = Producer::to(&shared);
    log.write(room.id, &message(1, room.id, "before")).await;
    // PostgreSQL text cannot hold NUL: the row is refused, for ever.
    let nul = message(2, room.id, "a \0 in the text");
    let nul_at = log.write(room.id, &nul).await;
    log.write(room.id, &message(3, room.id, "between")).await;
    let garbage = b"\xff\xff\xff\xff".to_vec();
    let garbage_at = log.write(room.id, &garbage).await;
    log.write(room.id, &message(4, room.id, "after")).await;
    let _stop_archiver = spawn_archiver(&shared).await;
    let sent = room.send(1).await;

    let group = GroupOffsets::of(&shared, &archiver_group(&shared));
    eventually("the archiver stores and commits the log", async || group.caught_up().await).await;
    let expected: Vec<i64> = [1, 3, 4].into_iter().chain(sent).collect();
    assert_eq!(archived(&shared.database_url, &expected).await, expected.len(), "every other message is archived");
    assert_eq!(archived(&shared.database_url, &[2]).await, 0);
    assert_eq!(
        dead_letters(&shared.database_url, &shared.topic).await,
        vec![
            (nul_at.0, nul_at.1, Some(2), Some(nul), "refused".to_owned()),
            (garbage_at.0, garbage_at.1, None, Some(garbage), "undecodable".to_owned()),
        ],
    );
}

#[tokio::test]
async fn a_different_message_with_an_id_already_stored_is_set_aside_not_dropped() {
    let mut room = Room::open().await;
    let shared = room.shared.clone();
    let log = Producer::to(&shared);
    let first = message(1, room.id, "first with id 1");
    log.write(room.id, &first).await;
    // Two with one id in the same batch: written before the archiver starts.
    log.write(room.id, &message(2, room.id, "first with id 2")).await;
    let second_2 = message(2, room.id, "second with id 2");
    let second_2_at = log.write(room.id, &second_2).await;
    let _stop_archiver = spawn_archiver(&shared).await;
    eventually("the first ones are archived", async || archived(&shared.database_url, &[1, 2]).await == 2).await;

    // Then, in a later batch, a copy of a stored record (no collision), and
    // a different message with a stored id.
    log.write(room.id, &first).await;
    let second_1 = message(1, room.id, "second with id 1");
    let second_1_at = log.write(room.id, &second_1).await;
    let sent = room.send(1).await;
    let group = GroupOffsets::of(&shared, &archiver_group(&shared));
    eventually("the archiver stores and commits the log", async || group.caught_up().await).await;

    let texts: Vec<(i64, String)> =
        history(&shared.database_url).await.into_iter().filter(|row| row.0 <= 2).map(|row| (row.0, row.4)).collect();
    assert_eq!(texts, [(1, "first with id 1".to_owned()), (2, "first with id 2".to_owned())]);
    assert_eq!(archived(&shared.database_url, &sent).await, 1, "the archiver goes on");
    assert_eq!(
        dead_letters(&shared.database_url, &shared.topic).await,
        vec![
            (second_2_at.0, second_2_at.1, Some(2), Some(second_2), "id collision".to_owned()),
            (second_1_at.0, second_1_at.1, Some(1), Some(second_1), "id collision".to_owned()),
        ],
    );
}

/// A send refused for want of an acknowledgement may reach the log all the
/// same; its withdrawal, before or after it, keeps it out of history, even
/// once it is stored.
#[tokio::test]
async fn a_withdrawn_message_never_stays_in_history_whichever_record_comes_first() {
    let room = Room::open().await;
    let shared = room.shared.clone();
    let log = Producer::to(&shared);
    log.write(room.id, &message(10, room.id, "refused, then taken")).await;
    log.withdraw(room.id, 10).await;
    log.withdraw(room.id, 11).await;
    log.write(room.id, &message(11, room.id, "taken after its withdrawal")).await;
    log.write(room.id, &message(12, room.id, "acknowledged")).await;
    let _stop_archiver = spawn_archiver(&shared).await;
    let group = GroupOffsets::of(&shared, &archiver_group(&shared));
    eventually("the archiver stores and commits the log", async || group.caught_up().await).await;
    assert_eq!(archived(&shared.database_url, &[12]).await, 1);
    assert_eq!(archived(&shared.database_url, &[10, 11]).await, 0, "withdrawn messages stay out");

    // Withdrawn after it was stored: it leaves history.
    log.write(room.id, &message(13, room.id, "stored, then withdrawn")).await;
    eventually("the message is stored", async || archived(&shared.database_url, &[13]).await == 1).await;
    log.withdraw(room.id, 13).await;
    eventually("the message leaves history", async || archived(&shared.database_url, &[13]).await == 0).await;
    assert_eq!(dead_letters(&shared.database_url, &shared.topic).await, vec![], "a withdrawal is no dead letter");
}

/// A change's record, as core-svc would write it, by user 5.
fn change(id: i64, room_id: i64, kind: Kind) -> Vec<u8> {
    let timestamp = Some(prost_types::Timestamp { seconds: 1_800_000_000 + id, nanos: 0 });
    Event { id, room_id, uid: 5, timestamp, kind: Some(kind) }.encode_to_vec()
}

fn edit(id: i64, room_id: i64, message_id: i64, text: &str) -> Vec<u8> {
    change(id, room_id, Kind::Edited(Edited { message_id, text: text.into() }))
}

fn react(id: i64, room_id: i64, message_id: i64, added: bool) -> Vec<u8> {
    change(id, room_id, Kind::Reacted(Reacted { message_id, emoji: "👍".into(), added }))
}

/// An entry's stored state: text, the edit it comes from, deleted, and the
/// users whose reaction stands.
async fn state(database_url: &str, id: i64) -> (String, i64, bool, Vec<i64>) {
    let mut db = PgConnection::connect(database_url).await.expect("the test database");
    let (text, edit_id, deleted): (String, i64, bool) =
        sqlx::query_as("SELECT text, edit_id, deleted FROM messages WHERE id = $1")
            .bind(id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    let reactors =
        sqlx::query_scalar("SELECT user_id FROM message_reactions WHERE message_id = $1 AND added ORDER BY user_id")
            .bind(id)
            .fetch_all(&mut db)
            .await
            .unwrap();
    (text, edit_id, deleted, reactors)
}

#[tokio::test]
async fn changes_read_twice_out_of_order_or_before_their_entry_end_in_the_same_state() {
    let mut room = Room::open().await;
    let shared = room.shared.clone();
    let log = Producer::to(&shared);
    let room_id = room.id;
    // Changes before their entries, an older one after a newer, copies.
    log.write(room_id, &edit(20, room_id, 10, "second")).await;
    log.write(room_id, &react(22, room_id, 10, true)).await;
    log.write(room_id, &react(21, room_id, 10, false)).await;
    log.write(room_id, &change(30, room_id, Kind::Deleted(Deleted { message_id: 11 }))).await;
    log.write(room_id, &message(10, room_id, "first")).await;
    log.write(room_id, &message(11, room_id, "doomed")).await;
    log.write(room_id, &edit(25, room_id, 10, "third")).await;
    log.write(room_id, &edit(20, room_id, 10, "second")).await;
    log.write(room_id, &react(23, room_id, 11, true)).await;
    let stop_first = spawn_archiver(&shared).await;
    let group = GroupOffsets::of(&shared, &archiver_group(&shared));
    eventually("the archiver stores and commits the log", async || group.caught_up().await).await;
    // Then more, each in a batch of its own: an older edit, a copy.
    log.write(room_id, &edit(24, room_id, 10, "older than third")).await;
    eventually("the archiver stores it", async || group.caught_up().await).await;
    log.write(room_id, &react(22, room_id, 10, true)).await;
    log.write(room_id, &edit(31, room_id, 11, "a deleted one stays deleted")).await;
    let sent = room.send(1).await;
    eventually("the archiver stores the rest", async || archived(&shared.database_url, &sent).await == 1).await;

    let expected = [(10, ("third".to_owned(), 25, false, vec![5])), (11, (String::new(), 0, true, vec![]))];
    for (id, state_of) in &expected {
        assert_eq!(&state(&shared.database_url, *id).await, state_of, "entry {id}");
    }
    // Read by a user, as history shows it.
    let request = authed(&room.alice, HistoryRequest { room_id, ..HistoryRequest::default() });
    let page = room.grpc.messages.history(request).await.unwrap().into_inner().messages;
    let shown = |id: i64| page.iter().find(|entry| entry.id == id).unwrap().clone();
    assert_eq!((shown(10).text.as_str(), shown(10).reactions["👍"].uids.clone()), ("third", vec![5]));
    assert_eq!(shown(10).edited_at.unwrap().seconds, 1_800_000_025);
    assert!(shown(11).deleted && shown(11).text.is_empty() && shown(11).reactions.is_empty());

    // The whole log once more, in the same group rewound: the same state.
    let _ = stop_first.send(());
    eventually("the stopped archiver's group is rewound", async || group.rewind().await).await;
    let _stop_again = spawn_archiver(&shared).await;
    eventually("the group stores and commits the log again", async || group.caught_up().await).await;
    for (id, state_of) in &expected {
        assert_eq!(&state(&shared.database_url, *id).await, state_of, "entry {id}, read again");
    }
    assert_eq!(dead_letters(&shared.database_url, &shared.topic).await, vec![], "no change is a dead letter");
}

#[tokio::test]
async fn an_archiver_killed_again_and_again_in_a_stream_of_edits_ends_in_the_right_state() {
    let mut room = Room::open().await;
    let shared = room.shared.clone();
    let id = room.send(1).await[0];
    let mut archiver = spawn_killable_archiver(&shared).await;
    let (mut grpc, alice, room_id) = (room.grpc.clone(), room.alice.clone(), room.id);
    let edits = tokio::spawn(async move {
        let mut last = (0, 0);
        for n in 0..300 {
            let edit = EditRequest { room_id, message_id: id, text: format!("edit {n}") };
            last.0 = grpc.messages.edit(authed(&alice, edit)).await.expect("edited").into_inner().event_id;
            let react = ReactRequest { room_id, message_id: id, emoji: "👍".into(), added: n % 2 == 0 };
            last.1 = grpc.messages.react(authed(&alice, react)).await.expect("reacted").into_inner().event_id;
        }
        last
    });
    // Killed (its task dropped wherever it is, mid-batch or not) and
    // started again, while the edits go on.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        archiver.abort();
        archiver = spawn_killable_archiver(&shared).await;
    }
    let (last_edit, _) = edits.await.unwrap();
    // The last edit, and the last reaction (n = 299) after it, which took
    // the thumbs-up back: until the archiver has stored that one too, the
    // entry shows the one before (n = 298), which added it.
    let settled = ("edit 299".to_owned(), last_edit, false, vec![]);
    eventually("the archiver stores the last edit and the last reaction", async || {
        state(&shared.database_url, id).await == settled
    })
    .await;
    let mut db = PgConnection::connect(&shared.database_url).await.unwrap();
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM message_changes WHERE message_id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(changes, 600, "every change stored once");
    assert_eq!(dead_letters(&shared.database_url, &shared.topic).await, vec![]);
    archiver.abort();
}
