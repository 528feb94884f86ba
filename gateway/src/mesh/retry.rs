//! Retries of calls that are safe to repeat, on another replica (the
//! balancer picks again), when the first try did not reach a working
//! replica: it could not connect, the connection broke before an answer, or
//! the replica answered UNAVAILABLE (it is shedding load or shutting down).
//! Retries draw on a budget that every finished call fills, so that they add
//! at most `retry_percent` to the load core-svc sees.
//!
//! Sends are retried when they carry an idempotency key (the client's, or
//! the one the gateway gives every socket's send): core-svc answers a
//! repeated key with the message the first attempt stored.
//!
//! A request is retried from a copy of its encoded body, which [`collect`]
//! reads whole first; the gateway's calls are unary, so a body is always
//! one message. The answer is read whole too ([`whole_answer`]) before the
//! policy looks at it: a replica killed after its headers went out but
//! before its trailers leaves a broken answer, retried like a connection
//! that failed.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chat_proto::v1::SendRequest;
use http::{Request, Response};
use http_body_util::BodyExt;
use prost::Message as _;
use tonic::{Status, body::Body};
use tower::{
    BoxError, Service, ServiceExt,
    retry::{
        Policy,
        budget::{Budget, TpsBudget},
    },
    service_fn,
    util::BoxCloneSyncService,
};

/// The calls that change nothing, or that carry what makes a repeat change
/// nothing.
const IDEMPOTENT: [&str; 9] = [
    "/chat.v1.UserService/GetProfile",
    "/chat.v1.RoomService/GetRoom",
    "/chat.v1.RoomService/ListMyRooms",
    "/chat.v1.RoomService/CheckMembership",
    "/chat.v1.RoomService/ListOnline",
    "/chat.v1.RoomService/ListUnread",
    "/chat.v1.MessageService/History",
    "/chat.v1.MessageService/Search",
    "/grpc.health.v1.Health/Check",
];

const SEND: &str = "/chat.v1.MessageService/Send";

/// Whether an encoded `SendRequest` (one uncompressed gRPC frame: a flag
/// byte, four of length, the message) carries a key.
fn send_with_key(body: &Bytes) -> bool {
    body.get(5..).is_some_and(|message| {
        body[0] == 0 && SendRequest::decode(message).is_ok_and(|request| !request.key.is_empty())
    })
}

/// The retry policy: idempotent calls only, within a shared budget.
#[derive(Clone)]
pub struct Idempotent {
    budget: Arc<TpsBudget>,
}

impl Idempotent {
    /// `retry_percent` of the calls of the last ten seconds may be retried,
    /// and at least 10 a second in any case (a quiet gateway can still ride
    /// over one replica's death).
    pub fn new(retry_percent: f32) -> Self {
        Self { budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, retry_percent / 100.0)) }
    }
}

/// Whether a call failed without a replica's whole answer: it could not
/// reach one, the answer broke off, or the replica said UNAVAILABLE.
fn unreached<B>(result: &Result<Response<B>, BoxError>) -> bool {
    match result {
        Ok(response) => response.headers().get("grpc-status").is_some_and(|code| code == "14"),
        // The gateway's own refusals (shed, deadline) are statuses; anything
        // else is the connection failing.
        Err(error) => error.downcast_ref::<Status>().is_none(),
    }
}

/// Reads each answer's body and trailers whole, so that a body that breaks
/// off is the call's error (not a status: the connection failed) rather
/// than the caller's.
pub async fn whole_answer(
    call: impl std::future::Future<Output = Result<Response<Body>, BoxError>>,
) -> Result<Response<Body>, BoxError> {
    let (parts, body) = call.await?.into_parts();
    let collected = body.collect().await.map_err(|status| format!("the answer broke off: {status}"))?;
    let trailers = collected.trailers().cloned();
    let whole = http_body_util::Full::new(collected.to_bytes())
        .with_trailers(async move { trailers.map(Ok::<_, std::convert::Infallible>) });
    Ok(Response::from_parts(parts, Body::new(whole)))
}

impl<B> Policy<Request<Bytes>, Response<B>, BoxError> for Idempotent {
    type Future = futures::future::Ready<()>;

    fn retry(&mut self, _: &mut Request<Bytes>, result: &mut Result<Response<B>, BoxError>) -> Option<Self::Future> {
        if !unreached(result) {
            self.budget.deposit();
            return None;
        }
        if !self.budget.withdraw() {
            metrics::counter!(crate::metrics::CORE_RETRIES_REFUSED).increment(1);
            return None;
        }
        metrics::counter!(crate::metrics::CORE_RETRIES).increment(1);
        Some(futures::future::ready(()))
    }

    fn clone_request(&mut self, request: &Request<Bytes>) -> Option<Request<Bytes>> {
        let path = request.uri().path();
        if !(IDEMPOTENT.contains(&path) || path == SEND && send_with_key(request.body())) {
            return None;
        }
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

type Retried = BoxCloneSyncService<Request<Bytes>, Response<Body>, BoxError>;

/// Reads a request's body whole, so that the retry layer beneath can keep a
/// copy of it.
pub fn collect(
    inner: Retried,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone + Send + Sync {
    service_fn(move |request: Request<Body>| {
        let inner = inner.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            inner.oneshot(Request::from_parts(parts, bytes)).await
        }
    })
}

/// The copy made into a body again, for the layers beneath the retries.
pub fn into_body(request: Request<Bytes>) -> Request<Body> {
    request.map(|bytes| Body::new(http_body_util::Full::new(bytes)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body::Frame;
    use tower::ServiceBuilder;

    use super::*;

    fn answered(code: &str) -> Result<Response<()>, BoxError> {
        Ok(Response::builder().header("grpc-status", code).body(()).unwrap())
    }

    #[test]
    fn only_a_failure_to_reach_a_replica_is_retried() {
        assert!(unreached(&answered("14")));
        assert!(!unreached(&answered("0")));
        assert!(!unreached(&answered("5")));
        assert!(!unreached(&Ok::<_, BoxError>(Response::new(()))));
        assert!(unreached::<()>(&Err("connection refused".into())));
        assert!(!unreached::<()>(&Err(Status::unavailable("shed here").into())));
        assert!(!unreached::<()>(&Err(Status::deadline_exceeded("late").into())));
    }

    fn request(path: &str) -> Request<Bytes> {
        let mut request = Request::new(Bytes::from_static(b"body"));
        *request.uri_mut() = path.parse().unwrap();
        request.headers_mut().insert("authorization", "Bearer x".parse().unwrap());
        request
    }

    fn copy(policy: &mut Idempotent, path: &str) -> Option<Request<Bytes>> {
        Policy::<_, Response<()>, BoxError>::clone_request(policy, &request(path))
    }

    #[test]
    fn reads_are_copied_for_a_retry_and_writes_are_not() {
        let mut policy = Idempotent::new(20.0);
        let read = copy(&mut policy, "/chat.v1.MessageService/History").expect("a read");
        assert_eq!(read.body(), "body");
        assert_eq!(read.headers()["authorization"], "Bearer x");
        assert!(copy(&mut policy, "/chat.v1.MessageService/Send").is_none());
        assert!(copy(&mut policy, "/chat.v1.RoomService/JoinRoom").is_none());
    }

    fn encoded_send(key: &str) -> Bytes {
        let message =
            SendRequest { room_id: 1, text: "hi".into(), key: key.into(), ..SendRequest::default() }.encode_to_vec();
        let mut frame = vec![0];
        frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&message);
        frame.into()
    }

    #[test]
    fn a_send_is_copied_for_a_retry_only_with_a_key() {
        let mut policy = Idempotent::new(20.0);
        let mut send = request(SEND);
        *send.body_mut() = encoded_send("gw-1");
        assert!(Policy::<_, Response<()>, BoxError>::clone_request(&mut policy, &send).is_some());
        *send.body_mut() = encoded_send("");
        assert!(Policy::<_, Response<()>, BoxError>::clone_request(&mut policy, &send).is_none());
        *send.body_mut() = Bytes::from_static(b"\x00");
        assert!(Policy::<_, Response<()>, BoxError>::clone_request(&mut policy, &send).is_none());
    }

    #[test]
    fn the_budget_runs_out() {
        let mut policy = Idempotent::new(20.0);
        let mut history = request("/chat.v1.MessageService/History");
        // The reserve (10 a second over 10 seconds) first, then nothing
        // while no call succeeds.
        let retried = (0..500).filter(|_| policy.retry(&mut history, &mut answered("14")).is_some()).count();
        assert!((100..500).contains(&retried), "{retried} of 500 retried");
    }

    /// A replica that dies after its headers on the first call, and answers
    /// whole on the second.
    fn dying_once(calls: Arc<AtomicUsize>) -> BoxCloneSyncService<Request<Body>, Response<Body>, BoxError> {
        BoxCloneSyncService::new(service_fn(move |_: Request<Body>| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let frames: Vec<Result<Frame<Bytes>, Status>> = if first {
                    vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0"))), Err(Status::internal("connection reset"))]
                } else {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    vec![Ok(Frame::data(Bytes::from_static(b"answer"))), Ok(Frame::trailers(trailers))]
                };
                let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)));
                Ok::<_, BoxError>(Response::new(body))
            }
        }))
    }

    /// Calls `path` through the retries and `whole_answer` over a replica
    /// that dies once: the answer, and how many calls the replica took.
    async fn through_a_replica_dying_once(path: &str) -> (Result<Response<Body>, BoxError>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let mesh = ServiceBuilder::new()
            .retry(Idempotent::new(20.0))
            .map_future(whole_answer)
            .map_request(into_body)
            .service(dying_once(calls.clone()));
        let answer = mesh.oneshot(request(path)).await;
        (answer, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn an_answer_that_breaks_off_is_retried_and_the_retry_arrives_whole() {
        let (answer, calls) = through_a_replica_dying_once("/chat.v1.MessageService/History").await;
        assert_eq!(calls, 2);
        let whole = answer.expect("the retry's answer").into_body().collect().await.unwrap();
        assert_eq!(whole.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(whole.to_bytes(), "answer");
    }

    #[tokio::test]
    async fn a_broken_answer_to_a_write_is_an_error_not_a_retry() {
        let (answer, calls) = through_a_replica_dying_once("/chat.v1.RoomService/JoinRoom").await;
        let error = answer.expect_err("no retry");
        assert!(error.downcast_ref::<Status>().is_none(), "a connection failure, UNAVAILABLE to the caller: {error}");
        assert_eq!(calls, 1);
    }
}
