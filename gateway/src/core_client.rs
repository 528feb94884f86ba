use std::time::Duration;

use chat_proto::v1::{
    message_service_client::MessageServiceClient, room_service_client::RoomServiceClient,
    user_service_client::UserServiceClient,
};
use service_kit::grpc::{CLIENT, Calls};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;

/// A call through it is a client span, whose trace context it carries.
type Traced = Calls<Channel>;

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
        let traced = CLIENT.layer(channel.clone());
        Ok(Self {
            users: UserServiceClient::new(traced.clone()),
            rooms: RoomServiceClient::new(traced.clone()),
            messages: MessageServiceClient::new(traced),
            health: HealthClient::new(channel),
        })
    }
}
