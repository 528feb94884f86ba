//! One WebSocket connection: its frames in, its room's frames out, pings,
//! and the limits that keep one client from hurting the others.

use std::{collections::HashSet, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, close_code};
use chat_proto::{
    reason,
    v1::{CheckMembershipRequest, HistoryRequest, SendRequest, SendResponse},
};
use service_kit::feeds::Feed;
use tokio::{
    sync::broadcast::{Receiver, error::RecvError},
    time::{Instant, MissedTickBehavior, interval, timeout},
};
use tonic::Code;
use tracing::Instrument;

use super::{
    MAX_FRAME, Sockets,
    frames::{ClientFrame, Frame, ServerFrame},
};
use crate::{
    core_client::CoreClient,
    extract::Token,
    metrics::{WS_CLOSED_BY_SERVER, WS_CONNECTIONS, WS_MESSAGES_SENT},
    routes::rfc3339,
    ws::frames::MessageText,
};

const PING_EVERY: Duration = Duration::from_secs(30);
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
/// A write that cannot finish in this time means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const REPLAY_PAGE: u32 = 100;
/// How long a closing socket waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub struct Connection {
    uid: i64,
    token: Token,
    core: CoreClient,
    sockets: Sockets,
    room: Option<InRoom>,
}

struct InRoom {
    id: i64,
    frames: Receiver<Frame>,
    /// Ids sent while catching up, so the live copies of them are skipped.
    replayed: HashSet<i64>,
    _feed: Arc<Feed<Frame>>,
}

/// Why the loop ended, and what close frame (if any) to send.
enum End {
    Quietly,
    Close(u16, &'static str),
}

type Step = Result<(), End>;

impl Connection {
    pub fn new(uid: i64, token: Token, core: CoreClient, sockets: Sockets) -> Self {
        Self { uid, token, core, sockets, room: None }
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
        if let End::Close(code, reason) = end {
            metrics::counter!(WS_CLOSED_BY_SERVER, "reason" => reason).increment(1);
            close(&mut socket, code, reason).await;
        }
        tracing::debug!(uid = self.uid, "socket closed");
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Step {
        write(socket, ServerFrame::Enter { room_id: 0, reference: None }.to_json()).await?;
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut last_heard = Instant::now();
        // Made once: a fresh `cancelled()` per turn of the loop would register
        // with the token (one lock shared by every socket) for each frame.
        let mut shutdown = std::pin::pin!(self.sockets.shutdown.clone().cancelled_owned());
        // A socket lives no longer than the token it was opened with.
        let lifetime = self.token.lifetime();
        let mut expiry = std::pin::pin!(tokio::time::sleep(lifetime.unwrap_or_default()));
        // At most one send is in flight. Meanwhile the room's frames keep
        // flowing to the client, and its next frame waits in the socket.
        let mut sending: Option<Sending> = None;
        loop {
            tokio::select! {
                incoming = socket.recv(), if sending.is_none() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(message)) if payload_len(&message) > MAX_FRAME => {
                            return Err(End::Close(close_code::SIZE, "frame larger than 16 KiB"));
                        }
                        Some(Err(error)) if too_big(&error) => {
                            return Err(End::Close(close_code::SIZE, "frame larger than 16 KiB"));
                        }
                        Some(Ok(WsMessage::Text(text))) => sending = self.on_text(socket, &text).await?,
                        Some(Ok(WsMessage::Binary(_))) => error(socket, "invalid operation", None).await?,
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                        Some(Ok(WsMessage::Close(_))) | None => return Ok(()),
                        Some(Err(_)) => return Err(End::Quietly),
                    }
                }
                answer = async { sending.as_mut().expect("guarded").future.as_mut().await }, if sending.is_some() => {
                    let reference = sending.take().expect("guarded").reference;
                    self.on_sent(socket, answer, reference.as_deref()).await?;
                }
                frame = next_frame(&mut self.room) => match frame {
                    Ok(frame) => self.forward(socket, frame).await?,
                    Err(RecvError::Lagged(_)) => return Err(End::Close(close_code::POLICY, "too slow")),
                    Err(RecvError::Closed) => return Err(End::Close(close_code::ERROR, "room feed ended")),
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        return Err(End::Close(close_code::AWAY, "no answer to pings"));
                    }
                    send(socket, WsMessage::Ping(Default::default())).await?;
                }
                () = &mut expiry, if lifetime.is_some() => {
                    return Err(End::Close(close_code::POLICY, "token expired"));
                }
                () = &mut shutdown => {
                    if let Some(Sending { future, reference }) = sending.take() {
                        self.on_sent(socket, future.await, reference.as_deref()).await?;
                    }
                    self.flush(socket).await?;
                    return Err(End::Close(close_code::AWAY, "server shutting down"));
                }
            }
        }
    }

    async fn forward(&mut self, socket: &mut WebSocket, frame: Frame) -> Step {
        match &self.room {
            Some(room) if room.replayed.contains(&frame.id) => Ok(()),
            _ => send(socket, WsMessage::Text(frame.json)).await,
        }
    }

    /// Writes what the room had already queued for this socket.
    async fn flush(&mut self, socket: &mut WebSocket) -> Step {
        while let Some(Ok(frame)) = self.room.as_mut().map(|room| room.frames.try_recv()) {
            self.forward(socket, frame).await?;
        }
        Ok(())
    }

    /// Handles a client frame; a message to send comes back as the send
    /// to put in flight.
    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Result<Option<Sending>, End> {
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(problem) => return error(socket, problem, None).await.map(|()| None),
        };
        let reference = frame.reference.as_deref();
        match frame.kind.as_str() {
            "enter" => self.enter(socket, &frame).await.map(|()| None),
            "message" => self.message(socket, frame.text.as_deref(), reference).await,
            _ => error(socket, "invalid operation", reference).await.map(|()| None),
        }
    }

    async fn enter(&mut self, socket: &mut WebSocket, frame: &ClientFrame) -> Step {
        let reference = frame.reference.as_deref();
        let room_id = match frame.roomid {
            Some(room_id) if room_id >= 0 && frame.lastid.is_none_or(|id| id >= 0) => room_id,
            _ => return error(socket, "invalid room id", reference).await,
        };
        if room_id == self.room.as_ref().map_or(0, |room| room.id) {
            return error(socket, "already in room", reference).await;
        }
        if room_id == 0 {
            self.room = None;
            return write(socket, ServerFrame::Enter { room_id, reference }.to_json()).await;
        }
        let membership = self.core.rooms.check_membership(self.token.request(CheckMembershipRequest { room_id })).await;
        match membership {
            Ok(answer) if answer.get_ref().member => {}
            Ok(_) => return error(socket, "not room member", reference).await,
            Err(status) => return error(socket, status_text(&status), reference).await,
        }
        // Subscribe before reading history, so nothing published meanwhile is missed.
        let Ok(feed) = self.sockets.hub.feed(room_id).await else {
            return error(socket, "temporarily unavailable", reference).await;
        };
        let frames = feed.subscribe();
        self.room = None;
        write(socket, ServerFrame::Enter { room_id, reference }.to_json()).await?;
        let mut room = InRoom { id: room_id, frames, replayed: HashSet::new(), _feed: feed };
        if let Some(last_id) = frame.lastid
            && let Err(status) = self.replay(socket, &mut room, last_id).await?
        {
            return error(socket, status_text(&status), reference).await;
        }
        self.room = Some(room);
        Ok(())
    }

    /// Sends every message after `last_id`, oldest first.
    async fn replay(
        &mut self,
        socket: &mut WebSocket,
        room: &mut InRoom,
        mut after: i64,
    ) -> Result<Result<(), tonic::Status>, End> {
        loop {
            let request = HistoryRequest { room_id: room.id, last_id: 0, limit: REPLAY_PAGE, after_id: Some(after) };
            let page = match self.core.messages.history(self.token.request(request)).await {
                Ok(page) => page.into_inner().messages,
                Err(status) => return Ok(Err(status)),
            };
            let full = page.len() == REPLAY_PAGE as usize;
            for message in page {
                after = after.max(message.id);
                room.replayed.insert(message.id);
                send(socket, WsMessage::Text(Frame::from(message).json)).await?;
            }
            if !full {
                return Ok(Ok(()));
            }
        }
    }

    async fn message(
        &mut self,
        socket: &mut WebSocket,
        text: Option<&str>,
        reference: Option<&str>,
    ) -> Result<Option<Sending>, End> {
        let Some(room_id) = self.room.as_ref().map(|room| room.id) else {
            return error(socket, "not in room", reference).await.map(|()| None);
        };
        let text = text.unwrap_or_default();
        if let Err(problem) = MessageText::check(text) {
            return error(socket, problem, reference).await.map(|()| None);
        }
        let mut messages = self.core.messages.clone();
        let request = self.token.request(SendRequest { room_id, text: text.to_owned() });
        // Each message starts a trace of its own, carried to core-svc and on.
        let span = tracing::info_span!(parent: None, "ws.message", uid = self.uid, room_id);
        let send = async move { messages.send(request).await.map(|sent| sent.into_inner()) };
        let future = Box::pin(send.instrument(span));
        Ok(Some(Sending { future, reference: reference.map(str::to_owned) }))
    }

    async fn on_sent(&mut self, socket: &mut WebSocket, answer: SendAnswer, reference: Option<&str>) -> Step {
        match answer {
            Ok(sent) => {
                metrics::counter!(WS_MESSAGES_SENT).increment(1);
                let timestamp = rfc3339(sent.timestamp);
                write(socket, ServerFrame::Sent { message_id: sent.message_id, timestamp, reference }.to_json()).await
            }
            Err(status) if status.code() == Code::Unauthenticated => {
                error(socket, "token expired", reference).await?;
                Err(End::Close(close_code::POLICY, "token expired"))
            }
            Err(status) => error(socket, status_text(&status), reference).await,
        }
    }
}

type SendAnswer = Result<SendResponse, tonic::Status>;

/// A message on its way to core-svc.
struct Sending {
    future: Pin<Box<dyn Future<Output = SendAnswer> + Send>>,
    reference: Option<String>,
}

async fn next_frame(room: &mut Option<InRoom>) -> Result<Frame, RecvError> {
    match room {
        Some(room) => room.frames.recv().await,
        None => std::future::pending().await,
    }
}

/// The error text of the contract for a failed core-svc call.
fn status_text(status: &tonic::Status) -> &'static str {
    match status.code() {
        Code::PermissionDenied | Code::NotFound => "not room member",
        Code::ResourceExhausted => "too many messages",
        Code::InvalidArgument => match reason::of(status).as_deref() {
            Some(reason::EMPTY_MESSAGE) => "empty message",
            Some(reason::MESSAGE_TOO_LONG) => "message too long",
            Some(reason::INVALID_CHARACTERS) => "invalid characters",
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
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
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

async fn send(socket: &mut WebSocket, message: WsMessage) -> Step {
    match timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Quietly),
        Err(_) => Err(End::Close(close_code::POLICY, "too slow")),
    }
}

async fn write(socket: &mut WebSocket, json: String) -> Step {
    send(socket, WsMessage::Text(Utf8Bytes::from(json))).await
}

async fn error(socket: &mut WebSocket, error: &str, reference: Option<&str>) -> Step {
    write(socket, ServerFrame::Error { error, reference }.to_json()).await
}
