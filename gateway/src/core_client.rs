use chat_proto::v1::{
    message_service_client::MessageServiceClient, room_service_client::RoomServiceClient,
    user_service_client::UserServiceClient,
};
use service_kit::telemetry;
use tonic::{
    Request, Status,
    metadata::{MetadataKey, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
};
use tonic_health::pb::health_client::HealthClient;

use crate::mesh::{self, Mesh};

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

type Traced = InterceptedService<Mesh, PropagateTrace>;

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
        Self {
            users: UserServiceClient::with_interceptor(mesh.clone(), PropagateTrace),
            rooms: RoomServiceClient::with_interceptor(mesh.clone(), PropagateTrace),
            messages: MessageServiceClient::with_interceptor(mesh.clone(), PropagateTrace),
            health: HealthClient::new(mesh),
        }
    }
}
