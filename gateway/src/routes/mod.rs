//! The HTTP API. Each resource's module lists its routes; each handler
//! carries its OpenAPI description, so `/openapi.json` is built from the
//! same code that answers.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, Path, rejection::PathRejection},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    core_client::CoreClient,
    error::ApiError,
    extract::TrustForwardedFor,
    login_limit::LoginLimit,
    metrics,
    ws::{self, Sockets},
};

mod fields;
mod messages;
mod ops;
mod rooms;
mod users;

pub use messages::MessageBody;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub core: CoreClient,
    pub sockets: Sockets,
    pub login_limit: LoginLimit,
    pub trust_forwarded_for: TrustForwardedFor,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Messenger REST API", description = "The gateway's REST API. Request field names match case-insensitively; every error is `{\"Error\": \"...\"}`."),
    modifiers(&TokenAuth),
    tags(
        (name = "users", description = "Accounts and sessions"),
        (name = "rooms", description = "Rooms and members"),
        (name = "messages", description = "History (live messages travel over the WebSocket at `/ws`)"),
        (name = "operations", description = "Health and API description"),
    )
)]
struct ApiDoc;

/// The `Authorization` header: a JWT from `PUT /login`, bare or after `Bearer `.
struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("token", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Authorization"))));
    }
}

pub fn router(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::routes())
        .merge(rooms::routes())
        .merge(messages::routes())
        .merge(ops::routes())
        .split_for_parts();
    let api = Arc::new(api);
    router
        .route("/openapi.json", get(move || async move { Json(api.as_ref().clone()) }))
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(metrics::render))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response()
        })
        .with_state(state)
}

/// A timestamp as the API writes it: RFC 3339, UTC, microseconds.
pub(crate) fn rfc3339(at: Option<prost_types::Timestamp>) -> String {
    let at = at.unwrap_or_default();
    chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A path parameter as it came, so that one that is not UTF-8 gets the
/// API's JSON error rather than axum's plain-text rejection.
type PathParam = Result<Path<String>, PathRejection>;

/// A positive id from the path; anything else is 400.
fn parse_path_id(raw: PathParam, what: &str) -> Result<i64, ApiError> {
    raw.ok()
        .and_then(|Path(raw)| raw.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid {what} id")))
}
