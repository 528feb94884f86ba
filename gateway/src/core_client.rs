use chat_proto::v1::{
    message_service_client::MessageServiceClient, room_service_client::RoomServiceClient,
    user_service_client::UserServiceClient,
};
use service_kit::grpc::{CLIENT, Calls};
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;

use crate::mesh::{self, Mesh};

/// A call through it is a client span, whose trace context it carries.
type Traced = Calls<Mesh>;

/// A client per service of core-svc, all over the one [`mesh`] of
/// connections to its replicas. Cheap to clone: the clones share it.
#[derive(Clone)]
pub struct CoreClient {
    pub users: UserServiceClient<Traced>,
    pub rooms: RoomServiceClient<Traced>,
    pub messages: MessageServiceClient<Traced>,
    pub health: HealthClient<Mesh>,
}

impl CoreClient {
    /// Finds the replicas that answer; the gateway starts (and reports
    /// itself not ready) while none does.
    pub async fn new(settings: mesh::Settings) -> Self {
        let mesh = mesh::build(settings).await;
        let traced = CLIENT.layer(mesh.clone());
        Self {
            users: UserServiceClient::new(traced.clone()),
            rooms: RoomServiceClient::new(traced.clone()),
            messages: MessageServiceClient::new(traced),
            health: HealthClient::new(mesh),
        }
    }
}
