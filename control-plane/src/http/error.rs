//! Every error answer, in one place: a status and the stable JSON body
//! ([`oca_protocol::playback::ApiError`]). Domain errors become answers here and nowhere else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oca_protocol::playback::{ApiError, ErrorCode};

use crate::planning::manifest::NoManifest;
use crate::play::PlayError;
use crate::storage::StorageError;

/// An error answer: status plus the stable JSON error body.
pub struct Failure(StatusCode, ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// A failure with its status, code and message.
pub fn err(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure(
        status,
        ApiError {
            code,
            message: message.into(),
        },
    )
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        match e {
            StorageError::Exists(what) => err(
                StatusCode::CONFLICT,
                ErrorCode::BadRequest,
                format!("{what} already exists"),
            ),
            StorageError::Missing(what) => err(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("{what} does not exist"),
            ),
            StorageError::Engine(e) => {
                tracing::error!(error = %e, "database error");
                internal()
            }
        }
    }
}

impl From<PlayError> for Failure {
    fn from(e: PlayError) -> Failure {
        let e = match e {
            PlayError::Storage(e) => return e.into(),
            e => e,
        };
        let status = match e {
            PlayError::Unauthorized => StatusCode::UNAUTHORIZED,
            PlayError::Inactive | PlayError::NotLicensed(_) | PlayError::PlanLimit(_) => {
                StatusCode::FORBIDDEN
            }
            PlayError::UnknownTitle(_) => StatusCode::NOT_FOUND,
            PlayError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            // Both are worth a retry: the fleet changes, the lease writer recovers.
            PlayError::NoAppliance | PlayError::NotRecorded => StatusCode::SERVICE_UNAVAILABLE,
            // Answered above, as any storage failure.
            PlayError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        err(status, e.code(), e.to_string())
    }
}

impl From<NoManifest> for Failure {
    fn from(e: NoManifest) -> Failure {
        match e {
            NoManifest::Unknown => err(StatusCode::NOT_FOUND, ErrorCode::NotFound, e.to_string()),
            NoManifest::NoStorage => {
                err(StatusCode::CONFLICT, ErrorCode::BadRequest, e.to_string())
            }
            NoManifest::Storage(e) => e.into(),
        }
    }
}

/// 413: a body over `limit` bytes.
pub fn too_large(limit: usize) -> Failure {
    err(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("body over {limit} bytes"),
    )
}

/// 408: the body deadline passed.
pub fn body_timeout() -> Failure {
    err(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time",
    )
}

/// 500, saying nothing of why.
pub fn internal() -> Failure {
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error",
    )
}

/// 401, one answer for missing, malformed and wrong credentials.
pub fn unauthorized() -> Failure {
    err(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "unauthorized",
    )
}

/// 400 naming the field and what is wrong with it.
pub fn bad_request(message: impl Into<String>) -> Failure {
    err(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}
