//! One WebSocket connection: its frames in, its room's frames out, pings,
//! and the limits that keep one client from hurting the others.

use std::{
    collections::{BTreeSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, close_code};
use chat_proto::{
    reason,
    v1::{
        CheckMembershipRequest, GetProfileRequest, HistoryRequest, MarkReadRequest, Message, SendRequest, SendResponse,
        TypingRequest, TypingResponse,
    },
};
use client_input::frame::ClientFrame;
use futures::{SinkExt, StreamExt};
use service_kit::{
    feeds::{Feed, Reconnects, Removal},
    live::Cursor,
    presence::Here,
};
use tokio::{
    sync::broadcast::{Receiver, error::RecvError},
    time::{Instant, MissedTickBehavior, interval, timeout},
};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tonic::Code;
use tracing::Instrument;

use super::{
    MAX_FRAME, Sockets,
    frames::{Frame, ServerFrame},
};
use crate::{
    extract::Token,
    metrics::{SEND_LATENCY, WS_CLOSED_BY_SERVER, WS_CONNECTIONS},
    routes::rfc3339,
};

const PING_EVERY: Duration = Duration::from_secs(30);
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
/// A write that cannot finish in this time means the connection hangs. (A
/// client that merely reads too slowly is closed sooner, by the queue limit.)
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Each call an enter makes (to core-svc, or to NATS to subscribe) gets this
/// long; past it the enter is refused as `temporarily unavailable`.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const REPLAY_PAGE: u32 = 100;
/// How many of the ids a replay wrote are kept, to skip their live copies.
/// A live copy still to come is of a message published moments before it
/// was read, so among the newest the replay wrote: two pages cover a live
/// feed that runs a whole page read behind history.
const REPLAYED_KEPT: usize = 2 * REPLAY_PAGE as usize;
/// The most room frames written in one go (before one flush).
const BATCH: usize = 64;
/// How long a closing socket waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The longest token an `auth` frame may carry (a JWT of this API is a few
/// hundred bytes); a longer one is refused unread.
const MAX_TOKEN: usize = 4096;

pub struct Connection {
    uid: i64,
    token: Token,
    /// Set when an `auth` frame replaced the token: the socket's deadline
    /// moves to the new one's.
    renewed: bool,
    sockets: Sockets,
    /// Left with [`Connection::leave_room`], which ends `live` too.
    room: Option<InRoom>,
    /// The other members' presence and typing in `room`, as they change.
    live: Option<Cursor<Frame>>,
    /// The user's removals from rooms, heard from their first enter on.
    removals: Option<Removals>,
    /// The rooms the user was removed from while an enter was on its way:
    /// that enter, if into one of them, is undone once it succeeds.
    removed_meanwhile: Vec<i64>,
    /// Wakes the socket when the NATS connection comes back, to begin its
    /// room's refill even if the room is quiet.
    nats_reconnects: Reconnects,
}

/// The user's feed of removals from rooms (on any gateway's or replica's
/// doing), held while the socket lives.
struct Removals {
    /// A stream, so that its wait stays registered across turns of the
    /// socket's loop rather than made anew for every frame written.
    queue: BroadcastStream<Removal>,
    _feed: Arc<Feed<Removal>>,
}

struct InRoom {
    id: i64,
    /// The socket's user, who is not shown their own live-only events.
    uid: i64,
    frames: Receiver<Frame>,
    /// Frames taken from the queue while a write waited, oldest first: they
    /// are written before the queue's next ones.
    held: VecDeque<Frame>,
    /// While history after the client's `LastID` is replayed.
    replay: Option<Replay>,
    /// Ids the replay wrote whose live copies may still come, so that those
    /// are skipped: the newest [`REPLAYED_KEPT`], each gone once its live
    /// copy has passed.
    replayed: BTreeSet<i64>,
    /// How many frames `held` (and a replay's `waiting`) may hold.
    limit: usize,
    /// The newest id taken to be written (written, or held or batched for
    /// writing), or the client's `LastID`: a refill after NATS comes back
    /// replays history from here.
    last_id: i64,
    /// The NATS connection coming back: asked as each frame is taken from
    /// the queue, so that the new connection's first frame already goes
    /// through the refill's replay.
    reconnects: Reconnects,
    /// NATS came back and the refill's replay has begun: its first page is
    /// read once nothing else is in flight.
    refill_due: bool,
    _feed: Arc<Feed<Frame>>,
    /// Counts this socket in the room's presence while it is in the room.
    _here: Here,
}

/// How far a replay of history has come. Every live event is in history
/// before it is published (core-svc writes the recent cache, then NATS), so
/// a live frame newer than what history has given so far need not be kept:
/// it is read from history in its turn. Only those that arrive while a page
/// is being read wait for it (that page may be the last), up to the queue's
/// limit. So however long the replay and however busy the room, the socket
/// holds at most a page and a queue, and its queue never overflows.
struct Replay {
    /// History has been read up to this id.
    read_to: i64,
    /// Whether a page is being read.
    reading: bool,
    /// Live frames newer than `read_to` that arrived while the page was read.
    waiting: VecDeque<Frame>,
    /// The oldest live frame dropped while the page was read (`waiting`
    /// being full), or `read_to + 1` if the queue lost some.
    overflow: Option<i64>,
    /// The newest live frame dropped: the replay must reach it.
    dropped_max: i64,
    limit: usize,
}

/// Why the loop ended, and what close frame (if any) to send.
enum End {
    Quietly,
    Close(Closing),
}

/// Why the server closes a socket: the close frame, and the `reason` label
/// that counts it.
#[derive(Clone, Copy)]
struct Closing {
    code: u16,
    reason: &'static str,
    label: &'static str,
}

const TOO_BIG: Closing =
    Closing { code: close_code::SIZE, reason: "frame larger than 16 KiB", label: "frame_too_large" };
const SILENT: Closing = Closing { code: close_code::AWAY, reason: "no answer to pings", label: "no_pong" };
const EXPIRED: Closing = Closing { code: close_code::POLICY, reason: "token expired", label: "token_expired" };
const SHUTDOWN: Closing = Closing { code: close_code::AWAY, reason: "server shutting down", label: "shutdown" };
const HUNG: Closing = Closing { code: close_code::POLICY, reason: "write timed out", label: "write_timeout" };
const TOO_SLOW: Closing = Closing { code: close_code::POLICY, reason: "too slow", label: "too_slow" };
const FEED_ENDED: Closing = Closing { code: close_code::ERROR, reason: "room feed ended", label: "feed_ended" };
/// Every `reason` a socket is closed for, to count from zero.
pub const CLOSE_REASONS: [&str; 7] =
    [TOO_BIG.label, SILENT.label, EXPIRED.label, SHUTDOWN.label, HUNG.label, TOO_SLOW.label, FEED_ENDED.label];

type Step = Result<(), End>;

/// What the socket waits for, at most one at a time: a send, an enter, a
/// page of a replay, a read mark. Meanwhile it goes on writing its room's frames,
/// pinging, and minding expiry and shutdown; the client's next frame waits
/// in the socket.
struct InFlight {
    step: Pin<Box<dyn Future<Output = Done> + Send>>,
    /// The `Ref` of the client frame it answers.
    reference: Option<String>,
    /// A send is waited for at shutdown, so that its client learns whether
    /// it was stored; an enter is abandoned.
    finish_at_shutdown: bool,
}

enum Done {
    /// The answer, and when the client's frame came.
    Sent(Result<SendResponse, tonic::Status>, Instant),
    /// Boxed: an enter is rare, and the rest are small.
    Entered(Result<Box<Entered>, &'static str>),
    Page(Result<Vec<Message>, &'static str>),
    Typed(Result<TypingResponse, tonic::Status>),
    /// A fresh token of this socket's user, or why not.
    Authed(Result<Token, &'static str>),
    Read(Result<(), &'static str>),
}

/// A room the socket may now be in: membership checked, the room's feed
/// subscribed, the socket counted in its presence and who else is there
/// read, and when resuming, the replay's first page read.
struct Entered {
    room_id: i64,
    /// The user's removals, subscribed before membership was checked, if
    /// the socket had none yet.
    removals: Option<Removals>,
    feed: Arc<Feed<Frame>>,
    frames: Receiver<Frame>,
    live: Cursor<Frame>,
    here: Here,
    online: Vec<i64>,
    replay: Option<(Replay, Vec<Message>)>,
    /// NATS's reconnections, from before the room's feed was subscribed.
    reconnects: Reconnects,
}

impl Connection {
    pub fn new(uid: i64, token: Token, sockets: Sockets) -> Self {
        let nats_reconnects = sockets.nats_reconnects.from_now();
        Self {
            uid,
            token,
            renewed: false,
            sockets,
            room: None,
            live: None,
            removals: None,
            removed_meanwhile: Vec::new(),
            nats_reconnects,
        }
    }

    pub async fn run(mut self, mut socket: WebSocket) {
        tracing::debug!(uid = self.uid, "socket open");
        let open = metrics::gauge!(WS_CONNECTIONS);
        open.increment(1);
        let end = match self.serve(&mut socket).await {
            Ok(()) => End::Quietly,
            Err(end) => end,
        };
        open.decrement(1);
        if let End::Close(closing) = end {
            metrics::counter!(WS_CLOSED_BY_SERVER, "reason" => closing.label).increment(1);
            close(&mut socket, closing).await;
        }
        tracing::debug!(uid = self.uid, "socket closed");
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Step {
        self.write(socket, ServerFrame::Enter { room_id: 0, reference: None }).await?;
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut last_heard = Instant::now();
        // Made once: a fresh `cancelled()` per turn of the loop would register
        // with the token (one lock shared by every socket) for each frame.
        let mut shutdown = std::pin::pin!(self.sockets.shutdown.clone().cancelled_owned());
        // A socket lives no longer than its token (the one it was opened
        // with, or the last one an `auth` frame brought).
        let mut lifetime = self.token.lifetime();
        let mut expiry = std::pin::pin!(tokio::time::sleep(lifetime.unwrap_or_default()));
        let mut in_flight: Option<InFlight> = None;
        loop {
            if in_flight.is_none() && self.room.as_mut().is_some_and(|room| std::mem::take(&mut room.refill_due)) {
                in_flight = self.refill();
            }
            // What answers a client frame, a call's end, a removal or
            // shutdown is boxed: their futures are far larger than the
            // waiting, and would otherwise size every socket's task.
            tokio::select! {
                incoming = socket.recv(), if in_flight.is_none() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(message)) if payload_len(&message) > MAX_FRAME => {
                            return Err(End::Close(TOO_BIG));
                        }
                        Some(Err(error)) if too_big(&error) => {
                            return Err(End::Close(TOO_BIG));
                        }
                        Some(Ok(WsMessage::Text(text))) => in_flight = Box::pin(self.on_text(socket, &text)).await?,
                        Some(Ok(WsMessage::Binary(_))) => self.error(socket, "invalid operation", None).await?,
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                        Some(Ok(WsMessage::Close(_))) | None => return Ok(()),
                        Some(Err(_)) => return Err(End::Quietly),
                    }
                }
                done = async { in_flight.as_mut().expect("guarded").step.as_mut().await }, if in_flight.is_some() => {
                    let reference = in_flight.take().expect("guarded").reference;
                    // The client was not read meanwhile: its silence counts from now.
                    last_heard = Instant::now();
                    in_flight = Box::pin(self.on_done(socket, done, reference)).await?;
                    if std::mem::take(&mut self.renewed) {
                        lifetime = self.token.lifetime();
                        expiry.as_mut().reset(Instant::now() + lifetime.unwrap_or_default());
                    }
                }
                frame = next_frame(&mut self.room) => match frame {
                    Ok(frame) => self.send_queued(socket, frame).await?,
                    Err(error) => return Err(feed_error(error)),
                },
                frames = next_live(&mut self.live) => {
                    self.send_all(socket, frames.into_iter().map(|frame| WsMessage::Text(frame.json))).await?;
                }
                () = self.nats_reconnects.announced() => {
                    if let Some(room) = self.room.as_mut() {
                        room.reconnected();
                    }
                }
                removal = next_removal(&mut self.removals) => match removal {
                    Some(Ok(removal)) => Box::pin(self.on_removal(socket, removal, in_flight.is_some())).await?,
                    // Only removals were lost; rare enough to pass over.
                    Some(Err(BroadcastStreamRecvError::Lagged(_))) => {}
                    None => self.removals = None,
                },
                _ = ping.tick() => {
                    if in_flight.is_none() && last_heard.elapsed() > SILENCE_LIMIT {
                        return Err(End::Close(SILENT));
                    }
                    self.send(socket, WsMessage::Ping(Default::default())).await?;
                }
                () = &mut expiry, if lifetime.is_some() => {
                    return Err(End::Close(EXPIRED));
                }
                () = &mut shutdown => return Box::pin(self.shut_down(socket, in_flight)).await,
            }
        }
    }

    /// At shutdown: finishes a send in flight, writes what was queued, and
    /// closes.
    async fn shut_down(&mut self, socket: &mut WebSocket, in_flight: Option<InFlight>) -> Step {
        if let Some(InFlight { step, reference, finish_at_shutdown: true }) = in_flight {
            self.on_done(socket, step.await, reference).await?;
        }
        self.flush(socket).await?;
        Err(End::Close(SHUTDOWN))
    }

    /// Writes what the room had already queued for this socket.
    async fn flush(&mut self, socket: &mut WebSocket) -> Step {
        while let Some(frame) = self.room.as_mut().and_then(InRoom::try_next) {
            self.send_queued(socket, frame).await?;
        }
        let live = self.live.as_mut().map(Cursor::take).unwrap_or_default();
        self.send_all(socket, live.into_iter().map(|frame| WsMessage::Text(frame.json))).await
    }

    /// Writes one of the room's frames and those queued behind it (up to
    /// [`BATCH`]) in one go: a frame per socket per event costs a write
    /// and a flush each, and a busy room queues several between two turns
    /// of the socket's task.
    async fn send_queued(&mut self, socket: &mut WebSocket, first: Frame) -> Step {
        let mut batch = vec![first];
        if let Some(room) = self.room.as_mut() {
            while batch.len() < BATCH
                && let Some(frame) = room.try_next()
            {
                batch.push(frame);
            }
        }
        self.deliver(socket, batch).await
    }

    /// Writes room frames.
    async fn deliver(&mut self, socket: &mut WebSocket, frames: Vec<Frame>) -> Step {
        let count = frames.len() as u64;
        self.send_all(socket, frames.into_iter().map(|frame| WsMessage::Text(frame.json))).await?;
        self.sockets.deliveries.increment(count);
        Ok(())
    }

    /// The refill's first page (see [`InRoom::begin_refill`]).
    fn refill(&mut self) -> Option<InFlight> {
        let room = self.room.as_ref()?;
        let after = room.replay.as_ref()?.read_to;
        let read = self.page_after(room.id, after);
        Some(InFlight {
            step: Box::pin(async move { Done::Page(read.await) }),
            reference: None,
            finish_at_shutdown: false,
        })
    }

    /// Handles a client frame; what it puts in flight, if anything.
    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Result<Option<InFlight>, End> {
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(problem) => return self.error(socket, problem, None).await.map(|()| None),
        };
        let reference = frame.reference.as_deref();
        match frame.kind.as_str() {
            "enter" => self.enter(socket, &frame).await,
            "message" => self.message(socket, &frame, reference).await,
            "read" => self.read(socket, frame.messageid, reference).await,
            "typing" => self.typing(socket, reference).await,
            "auth" => self.auth(socket, frame.token.as_deref(), reference).await,
            _ => self.error(socket, "invalid operation", reference).await.map(|()| None),
        }
    }

    async fn on_done(
        &mut self,
        socket: &mut WebSocket,
        done: Done,
        reference: Option<String>,
    ) -> Result<Option<InFlight>, End> {
        match done {
            Done::Sent(answer, received) => {
                self.on_sent(socket, answer, received, reference.as_deref()).await.map(|()| None)
            }
            Done::Entered(Ok(entered)) => self.on_entered(socket, *entered, reference).await,
            Done::Entered(Err(problem)) => self.error(socket, problem, reference.as_deref()).await.map(|()| None),
            Done::Page(Ok(page)) => self.on_page(socket, page, reference).await,
            Done::Page(Err(problem)) => self.leave(socket, problem, reference).await,
            Done::Typed(Ok(_)) => Ok(None),
            Done::Typed(Err(status)) => self.refused(socket, &status, reference.as_deref()).await.map(|()| None),
            Done::Authed(Ok(token)) => self.on_authed(socket, token, reference.as_deref()).await.map(|()| None),
            Done::Authed(Err(problem)) => self.error(socket, problem, reference.as_deref()).await.map(|()| None),
            Done::Read(Ok(())) => Ok(None),
            Done::Read(Err(problem)) => self.error(socket, problem, reference.as_deref()).await.map(|()| None),
        }
    }

    /// Starts an enter. The socket stays in its room until the enter is
    /// answered: a refused one changes nothing.
    async fn enter(&mut self, socket: &mut WebSocket, frame: &ClientFrame) -> Result<Option<InFlight>, End> {
        let reference = frame.reference.as_deref();
        let room_id = match frame.roomid {
            Some(room_id) if room_id >= 0 && frame.lastid.is_none_or(|id| id >= 0) => room_id,
            _ => return self.error(socket, "invalid room id", reference).await.map(|()| None),
        };
        if room_id == self.room.as_ref().map_or(0, |room| room.id) {
            return self.error(socket, "already in room", reference).await.map(|()| None);
        }
        if room_id == 0 {
            self.leave_room();
            return self.write(socket, ServerFrame::Enter { room_id, reference }).await.map(|()| None);
        }
        let span = tracing::info_span!(parent: None, "enter", otel.kind = "server", user.id = self.uid, chat.room.id = room_id);
        self.removed_meanwhile.clear();
        let entering = self.entering(room_id, frame.lastid);
        let step = Box::pin(async move { Done::Entered(entering.await.map(Box::new)) }.instrument(span));
        Ok(Some(InFlight { step, reference: reference.map(str::to_owned), finish_at_shutdown: false }))
    }

    /// Checks membership, subscribes to the room's feed (before history is
    /// read, so nothing published meanwhile is missed) and, when resuming,
    /// reads the replay's first page.
    fn entering(
        &self,
        room_id: i64,
        last_id: Option<i64>,
    ) -> impl Future<Output = Result<Entered, &'static str>> + Send + use<> {
        let mut rooms = self.sockets.core.rooms.clone();
        let membership = self.token.request(CheckMembershipRequest { room_id });
        let enters = self.sockets.enters.clone();
        let hub = self.sockets.hub.clone();
        let (presence, uid) = (self.sockets.presence.clone(), self.uid);
        let users = self.removals.is_none().then(|| (self.sockets.users.clone(), self.uid));
        let first_page = last_id.map(|after| (after, self.page_after(room_id, after)));
        let reconnects = self.sockets.nats_reconnects.from_now();
        async move {
            // Before membership is checked: a removal after the check is heard.
            let removals = match users {
                Some((users, uid)) => Some(
                    subscribed(users.feed(uid), "a user")
                        .await
                        .map(|feed| Removals { queue: BroadcastStream::new(feed.subscribe()), _feed: feed })?,
                ),
                None => None,
            };
            // The wait for a turn is not the call's: it is as long as the
            // checks of the enters before this one.
            let turn = enters.acquire_owned().await.expect("the turns are never closed");
            let member = call(rooms.check_membership(membership)).await?.member;
            drop(turn);
            if !member {
                return Err("not room member");
            }
            let feed = subscribed(hub.feed(room_id), "a room").await?;
            let mut frames = feed.subscribe();
            let live = feed.live(uid);
            let here = presence.arrive(room_id, uid);
            // The room's list as read for every enter of the last second,
            // with what the feed heard since: one read of Redis per room
            // and second however many enter, not one each. This gateway's
            // own sockets count at once, this one too, even those whose
            // news is still on its way through Redis and NATS.
            let lately = timeout(CALL_TIMEOUT, presence.online_lately(room_id, |at| feed.covers(at))).await;
            let online = match lately.ok().and_then(|lately| feed.online_since(lately.at, lately.online.as_deref()?)) {
                Some(mut online) => {
                    online.extend(presence.online_here(room_id));
                    online.sort_unstable();
                    online.dedup();
                    online
                }
                None => {
                    tracing::warn!(room_id, "presence unknown; the online frame lists this gateway's only");
                    presence.online_here(room_id)
                }
            };
            let Some((last_id, read)) = first_page else {
                return Ok(Entered { room_id, removals, feed, frames, live, here, online, replay: None, reconnects });
            };
            let mut replay = Replay::new(last_id, hub.queue());
            let mut read = std::pin::pin!(read);
            let page = loop {
                tokio::select! {
                    biased;
                    page = &mut read => break page?,
                    frame = frames.recv() => match frame {
                        // One that comes back is at most `LastID`: the client has it.
                        Ok(frame) => drop(replay.live(frame)),
                        Err(RecvError::Lagged(_)) => replay.lost(),
                        Err(RecvError::Closed) => return Err("temporarily unavailable"),
                    },
                }
            };
            let replay = Some((replay, page));
            Ok(Entered { room_id, removals, feed, frames, live, here, online, replay, reconnects })
        }
    }

    /// The socket is in the room from here on; a replay then begins.
    async fn on_entered(
        &mut self,
        socket: &mut WebSocket,
        entered: Entered,
        reference: Option<String>,
    ) -> Result<Option<InFlight>, End> {
        let Entered { room_id, removals, feed, frames, live, here, online, replay, reconnects } = entered;
        if removals.is_some() {
            self.removals = removals;
        }
        let (replay, page) = replay.unzip();
        let last_id = replay.as_ref().map_or(0, |replay: &Replay| replay.read_to);
        self.room = Some(InRoom {
            id: room_id,
            uid: self.uid,
            frames,
            held: VecDeque::new(),
            replay,
            replayed: BTreeSet::new(),
            limit: self.sockets.hub.queue(),
            last_id,
            reconnects,
            refill_due: false,
            _feed: feed,
            _here: here,
        });
        self.live = Some(live);
        self.write(socket, ServerFrame::Enter { room_id, reference: reference.as_deref() }).await?;
        if let Some(&removed) = self.removed_meanwhile.iter().find(|removed| **removed == room_id) {
            tracing::debug!(uid = self.uid, room_id = removed, "removed from the room while entering it");
            return self.leave(socket, "removed from room", None).await;
        }
        self.write(socket, ServerFrame::Online { room_id, online: &online }).await?;
        match page {
            Some(page) => self.on_page(socket, page, reference).await,
            None => Ok(None),
        }
    }

    /// Writes a page of the replay; the next one to read, unless the replay
    /// is done.
    async fn on_page(
        &mut self,
        socket: &mut WebSocket,
        page: Vec<Message>,
        reference: Option<String>,
    ) -> Result<Option<InFlight>, End> {
        // The socket may have left the room meanwhile (removed from it).
        let Some(room) = self.room.as_mut() else {
            return Ok(None);
        };
        let frames = match room.take_page(page) {
            Ok(frames) => frames,
            Err(problem) => {
                tracing::warn!(room_id = room.id, "history lacks a live event; the replay stops");
                return self.leave(socket, problem, reference).await;
            }
        };
        self.deliver(socket, frames).await?;
        let room = self.room.as_mut().expect("a replay is in a room");
        let Some(replay) = room.replay.as_mut() else {
            return Ok(None);
        };
        replay.reading = true;
        let (room_id, after) = (room.id, replay.read_to);
        let read = self.page_after(room_id, after);
        let step = Box::pin(async move { Done::Page(read.await) });
        Ok(Some(InFlight { step, reference, finish_at_shutdown: false }))
    }

    /// A removal of the user from a room: if it is the socket's room, the
    /// socket leaves it, as a failed replay does; if an enter is on its
    /// way, it is remembered for when the enter succeeds.
    async fn on_removal(&mut self, socket: &mut WebSocket, removal: Removal, entering: bool) -> Step {
        if self.room.as_ref().is_some_and(|room| room.id == removal.room_id) {
            tracing::debug!(uid = self.uid, room_id = removal.room_id, "removed from the room");
            let problem = if removal.removed_by == 0 { "not room member" } else { "removed from room" };
            self.leave(socket, problem, None).await?;
        } else if entering {
            self.removed_meanwhile.push(removal.room_id);
        }
        Ok(())
    }

    /// A replay that fails leaves the room, rather than leave the client in
    /// it with a gap: `{"Type":"enter","RoomID":0}`, then the error.
    async fn leave(
        &mut self,
        socket: &mut WebSocket,
        problem: &'static str,
        reference: Option<String>,
    ) -> Result<Option<InFlight>, End> {
        self.leave_room();
        self.write(socket, ServerFrame::Enter { room_id: 0, reference: None }).await?;
        self.error(socket, problem, reference.as_deref()).await.map(|()| None)
    }

    /// Out of the room, and of its presence and typing.
    fn leave_room(&mut self) {
        self.room = None;
        self.live = None;
    }

    /// A page of the room's history after `after`, oldest first.
    fn page_after(
        &self,
        room_id: i64,
        after: i64,
    ) -> impl Future<Output = Result<Vec<Message>, &'static str>> + Send + use<> {
        let mut messages = self.sockets.core.messages.clone();
        let request =
            self.token.request(HistoryRequest { room_id, last_id: 0, limit: REPLAY_PAGE, after_id: Some(after) });
        async move { call(messages.history(request)).await.map(|page| page.messages) }
    }

    async fn message(
        &mut self,
        socket: &mut WebSocket,
        frame: &ClientFrame,
        reference: Option<&str>,
    ) -> Result<Option<InFlight>, End> {
        let Some(room_id) = self.room.as_ref().map(|room| room.id) else {
            return self.error(socket, "not in room", reference).await.map(|()| None);
        };
        // core-svc alone judges the text (empty, too long, control
        // characters), the reply and the key: one set of rules, answered
        // with a reason each.
        let mut messages = self.sockets.core.messages.clone();
        let request = self.token.request(SendRequest {
            room_id,
            text: frame.text.clone().unwrap_or_default(),
            reply_to: frame.replyto.unwrap_or_default(),
            // A send without the client's key gets one of the gateway's, so
            // that the mesh may retry it on another replica without storing
            // it twice.
            key: frame.key.clone().filter(|key| !key.is_empty()).unwrap_or_else(gateway_key),
        });
        self.sockets.messages_received.increment(1);
        // Each message starts a trace of its own, carried to core-svc and on.
        let span = tracing::info_span!(parent: None, "message", otel.kind = "server", user.id = self.uid, chat.room.id = room_id);
        let received = Instant::now();
        let send = async move { Done::Sent(messages.send(request).await.map(|sent| sent.into_inner()), received) };
        let step = Box::pin(send.instrument(span));
        Ok(Some(InFlight { step, reference: reference.map(str::to_owned), finish_at_shutdown: true }))
    }

    /// Marks the current room read up to `message_id`, as `PUT /read` does.
    /// Answered only when refused.
    async fn read(
        &mut self,
        socket: &mut WebSocket,
        message_id: Option<i64>,
        reference: Option<&str>,
    ) -> Result<Option<InFlight>, End> {
        let Some(room_id) = self.room.as_ref().map(|room| room.id) else {
            return self.error(socket, "not in room", reference).await.map(|()| None);
        };
        let Some(message_id) = message_id.filter(|id| *id > 0) else {
            return self.error(socket, "no such message", reference).await.map(|()| None);
        };
        let mut rooms = self.sockets.core.rooms.clone();
        let request = self.token.request(MarkReadRequest { room_id, message_id });
        let step = Box::pin(async move { Done::Read(call(rooms.mark_read(request)).await.map(drop)) });
        Ok(Some(InFlight { step, reference: reference.map(str::to_owned), finish_at_shutdown: false }))
    }

    async fn on_sent(
        &mut self,
        socket: &mut WebSocket,
        answer: Result<SendResponse, tonic::Status>,
        received: Instant,
        reference: Option<&str>,
    ) -> Step {
        match answer {
            Ok(sent) => {
                let timestamp = rfc3339(sent.timestamp);
                self.write(socket, ServerFrame::Sent { message_id: sent.message_id, timestamp, reference }).await?;
                metrics::histogram!(SEND_LATENCY).record(received.elapsed().as_secs_f64());
                Ok(())
            }
            Err(status) => self.refused(socket, &status, reference).await,
        }
    }

    /// Answers a call core-svc refused. Its refusing the token means it has
    /// expired (core-svc accepted it before): the socket ends with it.
    async fn refused(&mut self, socket: &mut WebSocket, status: &tonic::Status, reference: Option<&str>) -> Step {
        if status.code() == Code::Unauthenticated {
            self.error(socket, "token expired", reference).await?;
            return Err(End::Close(EXPIRED));
        }
        self.error(socket, status_text(status), reference).await
    }

    /// Relays "typing" to the room's other members (core-svc drops what
    /// comes too often). Nothing answers it unless it is refused.
    async fn typing(&mut self, socket: &mut WebSocket, reference: Option<&str>) -> Result<Option<InFlight>, End> {
        let Some(room_id) = self.room.as_ref().map(|room| room.id) else {
            return self.error(socket, "not in room", reference).await.map(|()| None);
        };
        let mut messages = self.sockets.core.messages.clone();
        let request = self.token.request(TypingRequest { room_id });
        let span = tracing::info_span!(parent: None, "typing", otel.kind = "server", user.id = self.uid, chat.room.id = room_id);
        let typed = async move { Done::Typed(messages.typing(request).await.map(|typed| typed.into_inner())) };
        let step = Box::pin(typed.instrument(span));
        Ok(Some(InFlight { step, reference: reference.map(str::to_owned), finish_at_shutdown: false }))
    }

    /// Checks a fresh token with core-svc: the socket takes it if it is
    /// valid and of the same user; otherwise the old one stays.
    async fn auth(
        &mut self,
        socket: &mut WebSocket,
        token: Option<&str>,
        reference: Option<&str>,
    ) -> Result<Option<InFlight>, End> {
        let token = token.filter(|token| token.len() <= MAX_TOKEN).and_then(|token| Token::parse(token).ok());
        let Some(token) = token else {
            return self.error(socket, "invalid token", reference).await.map(|()| None);
        };
        let mut users = self.sockets.core.users.clone();
        let request = token.request(GetProfileRequest { uid: 0 });
        let uid = self.uid;
        let authed = async move {
            Done::Authed(match call(users.get_profile(request)).await {
                Ok(profile) if profile.uid == uid => Ok(token),
                Ok(_) => Err("invalid token"),
                Err(problem) => Err(problem),
            })
        };
        let span = tracing::info_span!(parent: None, "auth", otel.kind = "server", user.id = uid);
        let step = Box::pin(authed.instrument(span));
        Ok(Some(InFlight { step, reference: reference.map(str::to_owned), finish_at_shutdown: false }))
    }

    async fn on_authed(&mut self, socket: &mut WebSocket, token: Token, reference: Option<&str>) -> Step {
        let expires_at = rfc3339(token.expires_at().map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }));
        self.token = token;
        self.renewed = true;
        self.write(socket, ServerFrame::Auth { expires_at, reference }).await
    }

    /// Writes to the client.
    async fn send(&mut self, socket: &mut WebSocket, message: WsMessage) -> Step {
        self.send_all(socket, [message]).await
    }

    /// Writes messages to the client, all before one flush (the socket's
    /// write buffer holds them meanwhile). While the write waits, the
    /// room's frames are taken from its queue and held for after it, up to
    /// the queue's limit: a client that stops reading is closed as `too
    /// slow` once its room has run that far ahead, and the write timeout is
    /// left for a connection that hangs.
    async fn send_all(&mut self, socket: &mut WebSocket, messages: impl IntoIterator<Item = WsMessage>) -> Step {
        let written = async move {
            for message in messages {
                socket.feed(message).await?;
            }
            socket.flush().await
        };
        let mut write = std::pin::pin!(timeout(WRITE_TIMEOUT, written));
        loop {
            tokio::select! {
                biased;
                written = &mut write => return match written {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(End::Quietly),
                    Err(_) => Err(End::Close(HUNG)),
                },
                frame = live_frame(&mut self.room) => {
                    let room = self.room.as_mut().expect("the frame came from the room");
                    match frame {
                        Ok(frame) if room.held.len() < room.limit => room.held.push_back(frame),
                        Ok(_) => return Err(End::Close(TOO_SLOW)),
                        Err(error) => return Err(feed_error(error)),
                    }
                }
            }
        }
    }

    async fn write(&mut self, socket: &mut WebSocket, frame: ServerFrame<'_>) -> Step {
        self.send(socket, WsMessage::Text(Utf8Bytes::from(frame.to_json()))).await
    }

    async fn error(&mut self, socket: &mut WebSocket, error: &str, reference: Option<&str>) -> Step {
        self.write(socket, ServerFrame::Error { error, reference }).await
    }
}

impl InRoom {
    /// The next frame to write: the held ones first, then the queue's.
    async fn next(&mut self) -> Result<Frame, RecvError> {
        match self.held.pop_front() {
            Some(frame) => Ok(frame),
            None => self.live().await,
        }
    }

    /// As [`InRoom::next`], without waiting; `None` also once the queue fails.
    fn try_next(&mut self) -> Option<Frame> {
        if let Some(frame) = self.held.pop_front() {
            return Some(frame);
        }
        while let Ok(frame) = self.frames.try_recv() {
            if let Some(frame) = self.admit(frame) {
                return Some(frame);
            }
        }
        None
    }

    /// The queue's next frame that is to be written.
    async fn live(&mut self) -> Result<Frame, RecvError> {
        loop {
            let frame = self.frames.recv().await?;
            if let Some(frame) = self.admit(frame) {
                return Ok(frame);
            }
        }
    }

    /// A live frame, unless the replay gives it (or gave it) from history,
    /// it is the newest written again, or it is the socket's own user's
    /// live-only event. NATS may have come
    /// back while the frame came: it may be the new connection's first,
    /// newer than what was lost meanwhile, so it goes through the refill's
    /// replay (as do the frames after it, in a batch or held).
    fn admit(&mut self, frame: Frame) -> Option<Frame> {
        self.reconnected();
        if frame.hidden_from == Some(self.uid) {
            return None;
        }
        let frame = match &mut self.replay {
            Some(replay) => replay.live(frame)?,
            None => frame,
        };
        // The newest written, again: a replica that died after publishing an
        // event and before marking its key has it published again by the
        // retry that takes the key over (live-only events have no id).
        let again = frame.id != 0 && frame.id == self.last_id;
        if self.replayed.remove(&frame.id) || again {
            return None;
        }
        self.last_id = self.last_id.max(frame.id);
        Some(frame)
    }

    /// Begins the refill if NATS came back since this was last asked.
    fn reconnected(&mut self) {
        if self.reconnects.came_back() {
            self.begin_refill();
        }
    }

    /// NATS is at most once: what was published while this gateway's
    /// connection was down never comes. So the room's history after the
    /// newest id taken to be written is replayed, as for a client's
    /// `LastID`, with the same care for live frames meanwhile (no gap, no
    /// duplicate). The replay begins at once, so that no live frame of the
    /// new connection is written before what history gives: a replica whose
    /// own connection was down publishes what it held back only once it is
    /// back, after newer events from other replicas (the fault suite saw
    /// those come out of order). Its first page is read once nothing else
    /// is in flight; live frames wait for it meanwhile, or are read from
    /// history in their turn. A socket that has taken nothing of its room
    /// yet has no id to start from and is not refilled; one already
    /// replaying reads on through history.
    fn begin_refill(&mut self) {
        if self.replay.is_some() || self.last_id == 0 {
            return;
        }
        tracing::debug!(uid = self.uid, room_id = self.id, after = self.last_id, "refilling after a NATS reconnect");
        self.replay = Some(Replay::new(self.last_id, self.limit));
        self.refill_due = true;
    }

    /// Takes a page of the replay just read; what to write now: the frames
    /// held before it first (taken before the replay began, or older than
    /// what history had given: older than the page either way), then what
    /// of the page is to be written. The live frames that waited for it go
    /// on after it unless it holds them.
    fn take_page(&mut self, mut page: Vec<Message>) -> Result<Vec<Frame>, &'static str> {
        let replay = self.replay.as_mut().expect("a page belongs to a replay");
        let done = replay.take(&mut page)?;
        let waiting = std::mem::take(&mut replay.waiting);
        if done {
            self.replay = None;
        }
        self.replayed.extend(page.iter().map(|message| message.id));
        self.last_id = page.iter().map(|message| message.id).fold(self.last_id, i64::max);
        while self.replayed.len() > REPLAYED_KEPT {
            self.replayed.pop_first();
        }
        let mut frames: Vec<Frame> = self.held.drain(..).collect();
        frames.extend(page.into_iter().filter_map(Frame::of));
        for frame in waiting {
            if let Some(frame) = self.admit(frame) {
                self.held.push_back(frame);
            }
        }
        Ok(frames)
    }
}

impl Replay {
    fn new(last_id: i64, limit: usize) -> Self {
        Self { read_to: last_id, reading: true, waiting: VecDeque::new(), overflow: None, dropped_max: last_id, limit }
    }

    /// A live frame while the replay runs. One newer than what history has
    /// given waits for the page being read, or is dropped (history gives
    /// it); an older one comes back, to be written.
    fn live(&mut self, frame: Frame) -> Option<Frame> {
        if frame.id <= self.read_to {
            return Some(frame);
        }
        if self.reading && self.waiting.len() < self.limit {
            self.waiting.push_back(frame);
            return None;
        }
        if self.reading {
            self.overflow = Some(self.overflow.map_or(frame.id, |oldest| oldest.min(frame.id)));
        }
        self.dropped_max = self.dropped_max.max(frame.id);
        None
    }

    /// Takes a page just read, leaving in it what is to be written; whether
    /// the replay is done (the page is history's end, and nothing was
    /// dropped while it was read). Refused when done yet short of a live
    /// frame it dropped: history lacks that frame.
    fn take(&mut self, page: &mut Vec<Message>) -> Result<bool, &'static str> {
        self.reading = false;
        let full = page.len() == REPLAY_PAGE as usize;
        let overflow = self.overflow.take();
        match (overflow, page.last()) {
            // A live frame dropped while the page was read may be missing
            // from it (published after the read, yet older than the page's
            // newest): the page counts only below it, and the next starts there.
            (Some(oldest), Some(last)) if last.id >= oldest => {
                page.retain(|message| message.id < oldest);
                self.read_to = oldest - 1;
            }
            (_, Some(last)) => self.read_to = last.id,
            (_, None) => {}
        }
        let done = !full && overflow.is_none();
        if done && self.read_to < self.dropped_max {
            return Err("temporarily unavailable");
        }
        Ok(done)
    }

    /// The queue lost frames while the page was read: that page counts for
    /// nothing, and is read again.
    fn lost(&mut self) {
        self.overflow = Some(self.read_to + 1);
    }
}

/// A feed an enter subscribes to (`what`: "a room", "a user"), within
/// [`CALL_TIMEOUT`].
async fn subscribed<E>(
    feed: impl Future<Output = Result<Arc<Feed<E>>, async_nats::Error>>,
    what: &str,
) -> Result<Arc<Feed<E>>, &'static str> {
    match timeout(CALL_TIMEOUT, feed).await {
        Ok(Ok(feed)) => Ok(feed),
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot subscribe to {what} feed");
            Err("temporarily unavailable")
        }
        Err(_) => {
            tracing::warn!("subscribing to {what} feed timed out");
            Err("temporarily unavailable")
        }
    }
}

async fn next_removal(removals: &mut Option<Removals>) -> Option<Result<Removal, BroadcastStreamRecvError>> {
    match removals {
        Some(removals) => removals.queue.next().await,
        None => std::future::pending().await,
    }
}

/// A core-svc call an enter makes, within [`CALL_TIMEOUT`]; the contract's
/// error text if it fails.
/// An idempotency key no client chooses by chance: `gw-` and 32 hex digits.
fn gateway_key() -> String {
    format!("gw-{}", uuid::Uuid::new_v4().simple())
}

async fn call<T>(call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, &'static str> {
    match timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status_text(&status)),
        Err(_) => Err("temporarily unavailable"),
    }
}

async fn next_frame(room: &mut Option<InRoom>) -> Result<Frame, RecvError> {
    match room {
        Some(room) => room.next().await,
        None => std::future::pending().await,
    }
}

/// The other members' presence and typing that changed, once some did.
async fn next_live(live: &mut Option<Cursor<Frame>>) -> Vec<Frame> {
    match live {
        Some(live) => live.next().await,
        None => std::future::pending().await,
    }
}

async fn live_frame(room: &mut Option<InRoom>) -> Result<Frame, RecvError> {
    match room {
        Some(room) => room.live().await,
        None => std::future::pending().await,
    }
}

/// The close for a room queue that failed: the socket fell a whole queue
/// behind its room, or the feed ended.
fn feed_error(error: RecvError) -> End {
    match error {
        RecvError::Lagged(_) => End::Close(TOO_SLOW),
        RecvError::Closed => End::Close(FEED_ENDED),
    }
}

/// The error text of the contract for a failed core-svc call.
fn status_text(status: &tonic::Status) -> &'static str {
    match status.code() {
        Code::PermissionDenied | Code::NotFound => "not room member",
        Code::Unauthenticated => "invalid token",
        Code::ResourceExhausted => "too many messages",
        Code::InvalidArgument => match reason::of(status).as_deref() {
            Some(reason::EMPTY_MESSAGE) => "empty message",
            Some(reason::MESSAGE_TOO_LONG) => "message too long",
            Some(reason::INVALID_CHARACTERS) => "invalid characters",
            Some(reason::INVALID_REPLY) => "invalid reply",
            Some(reason::INVALID_KEY) => "invalid key",
            _ => "invalid room id",
        },
        Code::Unavailable | Code::DeadlineExceeded => "temporarily unavailable",
        _ => {
            tracing::error!(code = ?status.code(), message = status.message(), "core-svc call failed");
            "internal error"
        }
    }
}

fn payload_len(message: &WsMessage) -> usize {
    match message {
        WsMessage::Text(text) => text.len(),
        WsMessage::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

fn too_big(error: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    let source = std::error::Error::source(error);
    matches!(source.and_then(|e| e.downcast_ref::<Error>()), Some(Error::Capacity(_)))
}

/// Sends the close frame, then reads and discards what the client still
/// sends until it answers with its own close (or [`CLOSE_WAIT`] passes).
/// Dropping the connection with the client's bytes unread would make the
/// kernel reset it, and the client would often never see the close frame.
async fn close(socket: &mut WebSocket, closing: Closing) {
    let frame = CloseFrame { code: closing.code, reason: closing.reason.into() };
    if timeout(WRITE_TIMEOUT, socket.send(WsMessage::Close(Some(frame)))).await.is_err() {
        return;
    }
    let drain = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, WsMessage::Close(_)) {
                break;
            }
        }
    };
    let _ = timeout(CLOSE_WAIT, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: i64) -> Frame {
        Frame { id, json: Utf8Bytes::from_static("{}"), hidden_from: None }
    }

    fn page(ids: impl IntoIterator<Item = i64>) -> Vec<Message> {
        ids.into_iter().map(|id| Message { id, ..Message::default() }).collect()
    }

    fn ids(page: &[Message]) -> Vec<i64> {
        page.iter().map(|message| message.id).collect()
    }

    #[test]
    fn live_frames_newer_than_the_replay_wait_for_the_page_being_read_then_are_dropped() {
        let mut replay = Replay::new(10, 2);
        assert!(replay.live(frame(9)).is_some(), "older than what history gave: written");
        assert!(replay.live(frame(11)).is_none());
        assert!(replay.live(frame(12)).is_none());
        assert_eq!(replay.waiting.iter().map(|f| f.id).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(replay.overflow, None);
        assert!(replay.live(frame(14)).is_none());
        assert!(replay.live(frame(13)).is_none());
        assert_eq!((replay.overflow, replay.dropped_max), (Some(13), 14), "the queue's limit reached");
        let mut read = page([11, 12]);
        assert_eq!(replay.take(&mut read), Ok(false), "not done: 13 and 14 are still to read");
        assert_eq!(replay.read_to, 12);
        assert!(replay.live(frame(15)).is_none(), "between reads: dropped");
        assert!(replay.waiting.len() == 2 && replay.dropped_max == 15);
    }

    #[test]
    fn a_page_counts_only_below_a_live_frame_dropped_while_it_was_read() {
        let mut replay = Replay::new(10, 0);
        assert!(replay.live(frame(13)).is_none());
        // 13 was published after the read, 14 before it.
        let mut read = page([11, 12, 14]);
        assert_eq!(replay.take(&mut read), Ok(false));
        assert_eq!((ids(&read), replay.read_to), (vec![11, 12], 12));
        replay.reading = true;
        let mut read = page([13, 14]);
        assert_eq!(replay.take(&mut read), Ok(true));
        assert_eq!((ids(&read), replay.read_to), (vec![13, 14], 14));
    }

    #[test]
    fn a_replay_ends_at_a_page_short_of_full_unless_history_lacks_a_dropped_frame() {
        let mut replay = Replay::new(10, 4);
        let mut read = page(11..11 + i64::from(REPLAY_PAGE));
        assert_eq!(replay.take(&mut read), Ok(false), "a full page: more may follow");
        assert!(replay.live(frame(500)).is_none());
        replay.reading = true;
        let mut read = page([200]);
        assert_eq!(replay.take(&mut read), Err("temporarily unavailable"), "500 is missing from history");
        let mut replay = Replay::new(10, 4);
        let mut read = page([]);
        assert_eq!(replay.take(&mut read), Ok(true));
    }

    #[test]
    fn a_queue_that_lost_frames_while_a_page_was_read_has_it_read_again() {
        let mut replay = Replay::new(10, 4);
        replay.lost();
        let mut read = page([11, 12]);
        assert_eq!(replay.take(&mut read), Ok(false));
        assert_eq!((ids(&read), replay.read_to), (vec![], 10));
    }
}
