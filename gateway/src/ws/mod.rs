//! The WebSocket protocol at `/ws`: authentication before the upgrade, then
//! one task per connection ([`connection`]) fed by this gateway's room feeds
//! ([`Hub`]).

pub mod connection;
pub mod frames;

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Query, State, WebSocketUpgrade},
    response::Response,
};
use chat_proto::v1::GetProfileRequest;
use metrics::Counter;
use service_kit::presence::Presence;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{core_client::CoreClient, error::ApiError, extract::Token};

/// The largest frame or message a client may send; a larger one closes the
/// connection with 1009.
pub const MAX_FRAME: usize = 16 * 1024;
/// What the WebSocket layer reads whole before the connection decides. A
/// frame between [`MAX_FRAME`] and this is read to its end, so that the
/// 1009 close that answers it is the last word on a clean connection; only
/// a larger one is cut off mid-frame.
const READ_LIMIT: usize = 64 * 1024;
/// Client frames are small; the default (128 KiB per socket) would dominate
/// the memory of an idle connection. A larger frame grows the buffer while
/// it is read. (4 KiB gave 11.1 KiB of RSS per idle socket, 1 KiB 8.1.)
const READ_BUFFER: usize = 1024;

/// What a socket's writes gather before they go out; a flush sends the
/// rest. The frames queued for a socket are fed into it and flushed once,
/// so they leave in one write (and one TCP segment) rather than one each.
/// Between writes it is empty (keeping the capacity of the largest batch).
const WRITE_BUFFER: usize = 64 * 1024;

/// This gateway's room feeds: one NATS subscription per room with sockets
/// in it, each event serialised once.
pub type Hub = service_kit::feeds::Hub<frames::Frame>;

/// This gateway's user feeds: one NATS subscription per user with a socket
/// that has entered a room, for their removals from rooms.
pub type UserHub = service_kit::feeds::Hub<service_kit::feeds::Removal>;

/// How many removals a user's feed may fall behind: they are rare.
pub const USER_FEED_QUEUE: usize = 16;

/// Enters whose membership check may be in flight to core-svc at once.
/// When a big room comes online thousands of its members enter together;
/// past the mesh's limit of calls in flight their checks would be refused
/// at once. The others wait for a turn instead: each socket has at most one
/// enter in flight, so the waiting are bounded by the sockets.
pub const ENTERS_AT_ONCE: usize = 256;

/// What every connection shares: the room and user feeds, presence, the
/// signal and the tracker that let shutdown close every socket and wait for
/// it, and the counters of every frame (made once, not looked up per frame).
#[derive(Clone)]
pub struct Sockets {
    /// The clients of core-svc, one set for every socket: a set per socket
    /// would hold its own boxed copy of the mesh's layers for each client.
    pub core: Arc<CoreClient>,
    pub hub: Arc<Hub>,
    pub users: Arc<UserHub>,
    pub presence: Presence,
    /// The turns of [`ENTERS_AT_ONCE`].
    pub enters: Arc<Semaphore>,
    /// This gateway's NATS connection coming back.
    pub nats_reconnects: service_kit::feeds::Reconnects,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub deliveries: Counter,
    pub messages_received: Counter,
}

/// `GET /ws?token=<jwt>` (or with an `Authorization` header). A missing or
/// bad token is refused with 401 before the upgrade.
pub async fn upgrade(
    State(mut core): State<CoreClient>,
    State(sockets): State<Sockets>,
    header_token: Option<Token>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = match (header_token, query.get("token")) {
        (Some(token), _) => token,
        (None, Some(value)) => Token::parse(value)?,
        (None, None) => return Err(ApiError::unauthorized("missing token")),
    };
    let uid = core.users.get_profile(token.request(GetProfileRequest { uid: 0 })).await?.into_inner().uid;
    let tracker = sockets.tracker.clone();
    Ok(upgrade
        .max_message_size(READ_LIMIT)
        .max_frame_size(READ_LIMIT)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| tracker.track_future(connection::Connection::new(uid, token, sockets).run(socket))))
}
