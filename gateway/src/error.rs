use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;
use utoipa::ToSchema;

/// Every failed request answers with this body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A message for a human.
    #[serde(rename = "Error")]
    pub error: String,
}

/// An HTTP error: a status, a message for a human, and for 429 how long to wait.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_secs: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

/// A client's input refused before any call: 400, or 401 for its token.
impl From<client_input::Error> for ApiError {
    fn from(error: client_input::Error) -> Self {
        let status = match error {
            client_input::Error::Malformed(_) => StatusCode::BAD_REQUEST,
            client_input::Error::MissingToken
            | client_input::Error::ExpiredToken
            | client_input::Error::InvalidToken => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, error.to_string())
    }
}

/// core-svc's answer, in HTTP terms. Client errors keep core-svc's message;
/// server errors never carry details.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            // Not in the state the call needs: not a member, too many reactions.
            Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match http {
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(code = ?status.code(), message = status.message(), "core-svc unavailable");
                "service temporarily unavailable, retry later".to_owned()
            }
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(code = ?status.code(), message = status.message(), "core-svc call failed");
                "internal error".to_owned()
            }
            _ => status.message().to_owned(),
        };
        let retry_after_secs = status.metadata().get("retry-after").and_then(|value| value.to_str().ok()?.parse().ok());
        Self { status: http, message, retry_after_secs }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: self.message })).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_the_contracts_statuses() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 503),
            (Code::Internal, 500),
            (Code::Unknown, 500),
        ];
        for (code, http) in cases {
            assert_eq!(ApiError::from(tonic::Status::new(code, "m")).status.as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn server_errors_hide_the_details() {
        let error = ApiError::from(tonic::Status::unavailable("tcp connect error: 10.0.0.7:50051"));
        assert!(!error.message.contains("10.0.0.7"));
        let error = ApiError::from(tonic::Status::internal("relation \"users\" does not exist"));
        assert_eq!(error.message, "internal error");
    }

    #[test]
    fn retry_after_travels_from_metadata_to_the_header() {
        let mut status = tonic::Status::resource_exhausted("slow down");
        status.metadata_mut().insert("retry-after", 17.into());
        let response = ApiError::from(status).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "17");
    }
}
