//! Every call has a deadline: sent to core-svc as `grpc-timeout` (which
//! stops the work there once it passes) and enforced here, so that a replica
//! that stopped answering fails the call with DEADLINE_EXCEEDED instead of
//! holding it.
//!
//! Being the outermost layer, it also turns every error of the layers
//! beneath into the status the gRPC clients see: a failure to reach any
//! replica is UNAVAILABLE.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt};
use http::{HeaderValue, Request};
use tonic::Status;
use tower::{BoxError, Layer, Service};

#[derive(Clone, Copy)]
pub struct DeadlineLayer(pub Duration);

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner, limit: self.0 }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

/// `grpc-timeout` in milliseconds (at most 8 digits).
fn grpc_timeout(limit: Duration) -> HeaderValue {
    let millis = limit.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{millis}m")).expect("digits and a unit are a valid header")
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Status;
    type Future = BoxFuture<'static, Result<S::Response, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx).map_err(into_status)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let limit = self.limit;
        request.headers_mut().insert("grpc-timeout", grpc_timeout(limit));
        let call = self.inner.call(request);
        async move {
            match tokio::time::timeout(limit, call).await {
                Ok(answer) => answer.map_err(into_status),
                Err(_) => Err(Status::deadline_exceeded("core-svc did not answer in time")),
            }
        }
        .boxed()
    }
}

/// A status as it is, anything else (a connection that failed) as UNAVAILABLE.
fn into_status(error: impl Into<BoxError>) -> Status {
    match error.into().downcast::<Status>() {
        Ok(status) => *status,
        Err(error) => {
            tracing::debug!(%error, "core-svc unreachable");
            Status::unavailable("core-svc unreachable")
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{ServiceExt, service_fn};

    use super::*;

    #[test]
    fn a_failed_connection_is_unavailable_and_a_status_stays_itself() {
        assert_eq!(into_status(BoxError::from("connection refused")).code(), tonic::Code::Unavailable);
        assert_eq!(into_status(Status::not_found("gone")).code(), tonic::Code::NotFound);
    }

    #[test]
    fn the_header_is_in_milliseconds() {
        assert_eq!(grpc_timeout(Duration::from_secs(10)), "10000m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
    }

    #[tokio::test]
    async fn the_header_is_sent_and_a_late_answer_fails_with_deadline_exceeded() {
        let echo = service_fn(|request: Request<Duration>| async move {
            let sent = request.headers()["grpc-timeout"].clone();
            tokio::time::sleep(*request.body()).await;
            Ok::<_, BoxError>(sent)
        });
        let deadline = DeadlineLayer(Duration::from_millis(200)).layer(echo);
        let sent = deadline.clone().oneshot(Request::new(Duration::ZERO)).await.unwrap();
        assert_eq!(sent, "200m");
        let late = deadline.oneshot(Request::new(Duration::from_secs(5))).await.unwrap_err();
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
    }
}
