//! Errors as the docker CLI reads them: `{"message": "..."}` with `Content-Type` exactly
//! `application/json` (the CLI prints the raw body otherwise) and moby's status codes; the CLI
//! branches on 404 (stack deploy's create-or-update, `service logs` falling back to a task).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tonic::Code;

/// One failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What the user reads after "Error response from daemon: ".
    pub message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 400: a bad parameter or a field Shoal cannot honour.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 for a request body field: "TaskTemplate.ContainerSpec.TTY: ...".
    pub fn field(path: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(format!("{path}: {why}"))
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 501.
    pub fn not_implemented(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// A control API error, with docker's message for a missing object of `kind` ("service",
    /// "node", "network", "secret", "config", "task") named `name`: "no such service: web".
    pub fn from_status_for(kind: &str, name: &str, status: tonic::Status) -> ApiError {
        if status.code() == Code::NotFound {
            return ApiError::not_found(format!("no such {kind}: {name}"));
        }
        status.into()
    }
}

impl From<tonic::Status> for ApiError {
    /// moby's mapping of gRPC codes (`httpstatus/status.go`): the message is the control API's.
    fn from(s: tonic::Status) -> ApiError {
        let status = match s.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, s.message().to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_errors_keep_their_message_and_get_dockers_status() {
        let e: ApiError = tonic::Status::already_exists("service web already exists").into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.message, "service web already exists");
        let e = ApiError::from_status_for("service", "web", tonic::Status::not_found("x"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "no such service: web");
        let e: ApiError = tonic::Status::failed_precondition("in use").into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_body_is_json_with_the_exact_content_type() {
        let resp = ApiError::bad_request("bad").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
    }
}
