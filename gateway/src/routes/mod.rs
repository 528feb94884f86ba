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
    metrics,
    ws::{self, Sockets},
};

mod fields;
mod messages;
mod ops;
mod presence;
mod rooms;
mod users;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub core: CoreClient,
    pub sockets: Sockets,
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
        .merge(presence::routes())
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

/// A timestamp as the API writes it: RFC 3339, UTC, microseconds. core-svc
/// always sends one; a missing or impossible one is a bug, logged and
/// written as `null`, never as a made-up date (1970).
pub(crate) fn rfc3339(at: Option<prost_types::Timestamp>) -> Option<String> {
    let time = at.and_then(|at| chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?));
    if time.is_none() {
        tracing::error!(?at, "core-svc sent no valid timestamp");
    }
    Some(time?.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc_to_the_microsecond() {
        let at = prost_types::Timestamp { seconds: 1_800_000_000, nanos: 123_456_789 };
        assert_eq!(rfc3339(Some(at)).as_deref(), Some("2027-01-15T08:00:00.123456Z"));
    }

    #[test]
    fn a_missing_or_impossible_timestamp_is_null_not_1970() {
        assert_eq!(rfc3339(None), None);
        assert_eq!(rfc3339(Some(prost_types::Timestamp { seconds: 0, nanos: -1 })), None);
        let body = crate::wire::MessageBody::from(chat_proto::v1::Message { id: 1, ..Default::default() });
        assert_eq!(serde_json::to_value(body).unwrap()["Timestamp"], serde_json::Value::Null);
    }
}
