//! Load shedding: at most `max_in_flight` calls of this gateway are in
//! flight to core-svc (queued for a replica or on one); past that, and while
//! no replica is in the balancer, a call fails at once with UNAVAILABLE and
//! `retry-after: 1`, which the gateway answers as 503 with `Retry-After`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use futures::future::{BoxFuture, FutureExt};
use tokio::sync::Semaphore;
use tonic::Status;
use tower::{BoxError, Layer, Service};

/// The error of a shed call.
pub fn unavailable(why: &str) -> Status {
    let mut status = chat_proto::reason::status(tonic::Code::Unavailable, why, chat_proto::reason::OVERLOADED);
    status.metadata_mut().insert("retry-after", 1.into());
    status
}

#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    replicas: Arc<AtomicUsize>,
}

impl ShedLayer {
    /// `replicas` counts the replicas in the balancer.
    pub fn new(max_in_flight: usize, replicas: Arc<AtomicUsize>) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_in_flight)), replicas }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed { inner, permits: self.permits.clone(), replicas: self.replicas.clone() }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    replicas: Arc<AtomicUsize>,
}

impl<S, R: Send + 'static> Service<R> for Shed<S>
where
    S: Service<R> + Clone + Send + 'static,
    S::Response: Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    /// Always ready: the inner service (a buffer) is cloned per call and
    /// waited for inside the call, which the permit bounds.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        if self.replicas.load(Ordering::Relaxed) == 0 {
            return futures::future::ready(Err(unavailable("no core-svc replica available").into())).boxed();
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::CORE_CALLS_SHED).increment(1);
            return futures::future::ready(Err(unavailable("temporarily unavailable").into())).boxed();
        };
        let mut inner = self.inner.clone();
        async move {
            let _permit = permit;
            tower::ServiceExt::ready(&mut inner).await.map_err(Into::into)?;
            inner.call(request).await.map_err(Into::into)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{ServiceExt, service_fn};

    use super::*;

    fn code(error: BoxError) -> tonic::Code {
        error.downcast::<Status>().expect("a status").code()
    }

    #[tokio::test]
    async fn past_the_limit_calls_fail_at_once_and_a_freed_slot_is_used_again() {
        let replicas = Arc::new(AtomicUsize::new(1));
        let slow = service_fn(|wait: Duration| async move {
            tokio::time::sleep(wait).await;
            Ok::<_, BoxError>(())
        });
        let shed = ShedLayer::new(2, replicas.clone()).layer(slow);
        let held = [shed.clone().oneshot(Duration::from_millis(300)), shed.clone().oneshot(Duration::from_millis(300))];
        let held = tokio::spawn(futures::future::join_all(held));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = shed.clone().oneshot(Duration::ZERO).await.unwrap_err();
        let status = refused.downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
        assert!(held.await.unwrap().iter().all(Result::is_ok));
        shed.clone().oneshot(Duration::ZERO).await.expect("a slot is free again");

        replicas.store(0, Ordering::Relaxed);
        assert_eq!(code(shed.oneshot(Duration::ZERO).await.unwrap_err()), tonic::Code::Unavailable);
    }
}
