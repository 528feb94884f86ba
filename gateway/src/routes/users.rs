//! Accounts and sessions: register, login, profiles, change name.

use std::net::IpAddr;

use axum::{Json, extract::State, http::StatusCode};
use chat_proto::v1::{ChangeNameRequest, GetProfileRequest, LoginRequest, RegisterRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, PathParam, fields, rfc3339};
use crate::{
    core_client::CoreClient,
    error::{ApiError, ErrorBody},
    extract::{ClientIp, JsonBody, Token, grpc_request},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(own_profile))
        .routes(routes!(profile))
        .routes(routes!(change_name))
}

// Every field is required; a missing one reads as empty, so that the reply
// names every problem at once.
#[derive(Deserialize, ToSchema)]
struct RegisterBody {
    #[serde(default)]
    #[schema(rename = "Username", required, schema_with = fields::username)]
    username: String,
    #[serde(default)]
    #[schema(rename = "Email", required, schema_with = fields::email)]
    email: String,
    #[serde(default)]
    #[schema(rename = "Password", required, schema_with = fields::password)]
    password: String,
}

#[derive(Serialize, ToSchema)]
struct UidBody {
    #[serde(rename = "UID")]
    uid: i64,
}

/// Create an account.
#[utoipa::path(post, path = "/register", tag = "users", request_body = RegisterBody, responses(
    (status = 201, body = UidBody),
    (status = 400, description = "invalid JSON or fields; every problem, joined by `; `", body = ErrorBody),
    (status = 409, description = "username or e-mail taken", body = ErrorBody),
    (status = 413, body = ErrorBody),
    (status = 429, description = "too many registrations from this address", body = ErrorBody,
        headers(("Retry-After" = u64, description = "seconds until a registration may succeed"))),
))]
async fn register(
    State(mut core): State<CoreClient>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<(StatusCode, Json<UidBody>), ApiError> {
    let request = RegisterRequest { username: body.username, email: body.email, password: body.password };
    let reply = core.users.register(from_client(ip, request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(UidBody { uid: reply.uid })))
}

// Not validated beyond being strings, so as not to tell which half of the
// credentials is wrong; a missing one reads as empty, and so as wrong.
#[derive(Deserialize, ToSchema)]
struct LoginBody {
    #[serde(default)]
    #[schema(rename = "Email", required)]
    email: String,
    #[serde(default)]
    #[schema(rename = "Password", required)]
    password: String,
}

#[derive(Serialize, ToSchema)]
struct LoginReply {
    token: String,
    #[serde(rename = "UID")]
    uid: i64,
    #[serde(rename = "ExpiresAt")]
    #[schema(required = true)]
    expires_at: Option<String>,
}

/// Exchange an e-mail and password for an access token.
#[utoipa::path(put, path = "/login", tag = "users", request_body = LoginBody, responses(
    (status = 200, body = LoginReply),
    (status = 400, body = ErrorBody),
    (status = 401, description = "wrong e-mail or password", body = ErrorBody),
    (status = 413, body = ErrorBody),
    (status = 429, description = "too many attempts from this address or for this account", body = ErrorBody,
        headers(("Retry-After" = u64, description = "seconds until an attempt may succeed"))),
))]
async fn login(
    State(mut core): State<CoreClient>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<LoginReply>, ApiError> {
    let request = LoginRequest { email: body.email, password: body.password };
    let reply = core.users.login(from_client(ip, request)).await?.into_inner();
    Ok(Json(LoginReply { token: reply.token, uid: reply.uid, expires_at: rfc3339(reply.expires_at) }))
}

/// A call for the client at `ip`: core-svc limits registrations and logins
/// per client address across every gateway; to it, this gateway is a
/// trusted proxy naming the client.
fn from_client<T>(ip: IpAddr, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-forwarded-for", ip.to_string().parse().expect("an address is ASCII"));
    request
}

#[derive(Serialize, ToSchema)]
struct ProfileBody {
    #[serde(rename = "UID")]
    uid: i64,
    #[serde(rename = "Username")]
    username: String,
    /// Only in the caller's own profile.
    #[serde(rename = "Email", skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(rename = "CreatedAt")]
    #[schema(required = true)]
    created_at: Option<String>,
}

async fn fetch_profile(core: &mut CoreClient, token: Option<&Token>, uid: i64) -> Result<Json<ProfileBody>, ApiError> {
    let profile = core.users.get_profile(grpc_request(token, GetProfileRequest { uid })).await?.into_inner();
    Ok(Json(ProfileBody {
        uid: profile.uid,
        username: profile.username,
        email: profile.email,
        created_at: rfc3339(profile.created_at),
    }))
}

/// The caller's own profile, e-mail included.
#[utoipa::path(get, path = "/profile", tag = "users", security(("token" = [])), responses(
    (status = 200, body = ProfileBody),
    (status = 401, body = ErrorBody),
    (status = 404, description = "the token's user no longer exists", body = ErrorBody),
))]
async fn own_profile(State(mut core): State<CoreClient>, token: Token) -> Result<Json<ProfileBody>, ApiError> {
    fetch_profile(&mut core, Some(&token), 0).await
}

/// A user's public profile; the e-mail only when the caller is that user.
#[utoipa::path(get, path = "/profile/{UID}", tag = "users", security((), ("token" = [])),
    params(("UID" = i64, Path, minimum = 1, description = "the user's id")),
    responses(
        (status = 200, body = ProfileBody),
        (status = 400, description = "not a valid user id", body = ErrorBody),
        (status = 401, description = "a token was sent and is invalid", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn profile(
    State(mut core): State<CoreClient>,
    token: Option<Token>,
    uid: PathParam,
) -> Result<Json<ProfileBody>, ApiError> {
    let uid = super::parse_path_id(uid, "user")?;
    fetch_profile(&mut core, token.as_ref(), uid).await
}

#[derive(Deserialize, ToSchema)]
struct ChangeNameBody {
    // Missing reads as empty, which is refused as any invalid name is.
    #[serde(default)]
    #[schema(rename = "NewName", required, schema_with = fields::username)]
    newname: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct StatusBody {
    pub(super) status: &'static str,
}

/// Change the caller's username.
#[utoipa::path(put, path = "/change-name", tag = "users", security(("token" = [])), request_body = ChangeNameBody, responses(
    (status = 200, body = StatusBody, example = json!({"status": "name changed"})),
    (status = 400, description = "invalid name, or the same as the current one", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody),
    (status = 413, body = ErrorBody),
))]
async fn change_name(
    State(mut core): State<CoreClient>,
    token: Token,
    JsonBody(body): JsonBody<ChangeNameBody>,
) -> Result<Json<StatusBody>, ApiError> {
    core.users.change_name(token.request(ChangeNameRequest { new_name: body.newname })).await?;
    Ok(Json(StatusBody { status: "name changed" }))
}
