//! Load shedding: at most `GRPC_MAX_IN_FLIGHT` calls run at once on this
//! replica; one more is refused at once with UNAVAILABLE (reason
//! `OVERLOADED`, `retry-after: 1`), which a gateway retries on another
//! replica when the call is safe to repeat. Health checks are never refused:
//! a busy replica is still alive.
//!
//! Calls taken are counted (`chat_grpc_calls_admitted_total`), refused ones too
//! (`chat_grpc_calls_shed_total`): how a balancer spreads the load shows there.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use chat_proto::reason;
use futures::future::{BoxFuture, FutureExt};
use tokio::sync::Semaphore;
use tonic::{Code, body::Body};
use tower::{Layer, Service};

use crate::metrics::{GRPC_CALLS_ADMITTED, GRPC_CALLS_SHED};

const HEALTH: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct ShedLayer(Arc<Semaphore>);

impl ShedLayer {
    pub fn new(max_in_flight: usize) -> Self {
        Self(Arc::new(Semaphore::new(max_in_flight)))
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed { inner, permits: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH) {
            return self.inner.call(request).boxed();
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!(GRPC_CALLS_SHED).increment(1);
            let mut status = reason::status(Code::Unavailable, "temporarily unavailable", reason::OVERLOADED);
            status.metadata_mut().insert("retry-after", 1.into());
            return futures::future::ready(Ok(status.into_http())).boxed();
        };
        metrics::counter!(GRPC_CALLS_ADMITTED).increment(1);
        let call = self.inner.call(request);
        async move {
            let answer = call.await;
            drop(permit);
            answer
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use tower::{ServiceExt, service_fn};

    use super::*;

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn one_call_past_the_limit_is_refused_at_once_and_health_never() {
        let slow = service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let shed = ShedLayer::new(1).layer(slow);
        let held = tokio::spawn(shed.clone().oneshot(request("/chat.v1.MessageService/History")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = shed.clone().oneshot(request("/chat.v1.MessageService/History")).await.unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).expect("a status");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason::of(&status).as_deref(), Some(reason::OVERLOADED));
        assert_eq!(refused.headers()["retry-after"], "1");
        let health = shed.clone().oneshot(request("/grpc.health.v1.Health/Check")).await.unwrap();
        assert!(tonic::Status::from_header_map(health.headers()).is_none(), "health is answered");
        held.await.unwrap().unwrap();
        let freed = shed.oneshot(request("/chat.v1.MessageService/History")).await.unwrap();
        assert!(tonic::Status::from_header_map(freed.headers()).is_none(), "the slot is free again");
    }
}
