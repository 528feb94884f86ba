use std::time::Duration;

use chat_proto::v1::{
    message_service_client::MessageServiceClient, room_service_client::RoomServiceClient,
    user_service_client::UserServiceClient,
};
use service_kit::telemetry;
use tonic::{
    Request, Status,
    metadata::{MetadataKey, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::health_client::HealthClient;

/// Every call carries the trace context of the span it is made in.
#[derive(Clone, Copy)]
pub struct PropagateTrace;

impl Interceptor for PropagateTrace {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        for (field, value) in telemetry::context_of(&tracing::Span::current()) {
            if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(field.as_bytes()), MetadataValue::try_from(value)) {
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}

type Traced = InterceptedService<Channel, PropagateTrace>;

/// One HTTP/2 channel to core-svc and a client per service over it. Cheap
/// to clone: the clones share the channel.
#[derive(Clone)]
pub struct CoreClient {
    pub users: UserServiceClient<Traced>,
    pub rooms: RoomServiceClient<Traced>,
    pub messages: MessageServiceClient<Traced>,
    pub health: HealthClient<Channel>,
}

impl CoreClient {
    /// Connects lazily: the gateway starts (and reports itself not ready)
    /// while core-svc is still starting.
    pub fn connect_lazy(addr: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(addr.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        Ok(Self {
            users: UserServiceClient::with_interceptor(channel.clone(), PropagateTrace),
            rooms: RoomServiceClient::with_interceptor(channel.clone(), PropagateTrace),
            messages: MessageServiceClient::with_interceptor(channel.clone(), PropagateTrace),
            health: HealthClient::new(channel),
        })
    }
}
