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
use client_input::path::positive_id;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    core_client::CoreClient,
    error::ApiError,
    extract::TrustForwardedFor,
    metrics, web,
    ws::{self, Sockets},
};

mod fields;
mod links;
mod messages;
mod ops;
mod presence;
mod read;
mod rooms;
mod search;
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
        (name = "messages", description = "History and search (live messages travel over the WebSocket at `/ws`)"),
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

/// Every documented route, with its part of the OpenAPI document.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::routes())
        .merge(rooms::routes())
        .merge(presence::routes())
        .merge(messages::routes())
        .merge(read::routes())
        .merge(search::routes())
        .merge(ops::routes())
}

pub fn router(state: AppState, web_dir: &std::path::Path) -> Router {
    let (router, api) = documented_routes().split_for_parts();
    let mut document = serde_json::to_value(api).expect("the OpenAPI document serialises");
    links::add(&mut document);
    let document = Arc::new(document);
    router
        .route("/openapi.json", get(move || async move { Json(document.as_ref().clone()) }))
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(metrics::render))
        .route_layer(axum::middleware::from_fn(metrics::track))
        // Everything else: the web client's files, or the API's 404.
        .fallback_service(web::files(web_dir))
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
    // Not `format` with a pattern: that parses the pattern on every call,
    // and a history page writes a hundred timestamps or more.
    Some(time?.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// A path parameter as it came, so that one that is not UTF-8 gets the
/// API's JSON error rather than axum's plain-text rejection.
type PathParam = Result<Path<String>, PathRejection>;

/// Two path parameters (a room's id and an entry's), as they came.
type EntryPath = Result<Path<(String, String)>, PathRejection>;

/// A positive id from the path; anything else is 400.
fn parse_path_id(raw: PathParam, what: &str) -> Result<i64, ApiError> {
    Ok(positive_id(raw.as_ref().ok().map(|Path(raw)| raw.as_str()), what)?)
}

/// A room's id and one of its entries' from the path.
fn parse_entry_path(raw: EntryPath) -> Result<(i64, i64), ApiError> {
    let (room, entry) = raw.as_ref().ok().map(|Path((room, entry))| (room.as_str(), entry.as_str())).unzip();
    Ok((positive_id(room, "room")?, positive_id(entry, "message")?))
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
