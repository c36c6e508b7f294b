//! Every error answer, in one place: a status and the stable JSON body
//! ([`oca_protocol::playback::ApiError`]). Domain errors become answers here and nowhere else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oca_protocol::playback::{ApiError, ErrorCode};

use crate::domain::history::HistoryError;
use crate::domain::intake::ReportError;
use crate::domain::maintenance::MaintenanceError;
use crate::planning::manifest::NoManifest;
use crate::play::PlayError;
use crate::services::maintenance::MaintenanceFailure;
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

impl From<ReportError> for Failure {
    fn from(e: ReportError) -> Failure {
        match e {
            ReportError::Storage(e) => e.into(),
        }
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

impl From<MaintenanceFailure> for Failure {
    fn from(e: MaintenanceFailure) -> Failure {
        match e {
            MaintenanceFailure::Refused(e @ MaintenanceError::Over(_)) => {
                err(StatusCode::CONFLICT, ErrorCode::BadRequest, e.to_string())
            }
            MaintenanceFailure::Refused(e) => bad_request(e.to_string()),
            MaintenanceFailure::Storage(e) => e.into(),
        }
    }
}

impl From<HistoryError> for Failure {
    fn from(e: HistoryError) -> Failure {
        match e {
            HistoryError::Range(_) | HistoryError::Config(_) => err(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                e.to_string(),
            ),
            HistoryError::Storage(e) => e.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(f: Failure) -> (u16, String) {
        (f.0.as_u16(), serde_json::to_string(&f.1).unwrap())
    }

    #[test]
    fn each_play_refusal_keeps_its_status_code_and_message() {
        let cases = [
            (PlayError::Unauthorized, 401, "unauthorized", "unauthorized"),
            (
                PlayError::Inactive,
                403,
                "inactive_subscriber",
                "subscriber is not active",
            ),
            (
                PlayError::UnknownTitle("t".into()),
                404,
                "not_found",
                "title t is unknown",
            ),
            (
                PlayError::NotLicensed("NL".into()),
                403,
                "not_licensed",
                "title not licensed in NL",
            ),
            (
                PlayError::PlanLimit(720),
                403,
                "plan_limit",
                "no rendition at or below 720 lines",
            ),
            (
                PlayError::NoAppliance,
                503,
                "no_appliance",
                "no appliance can serve this title now",
            ),
            (
                PlayError::TooManyStreams(2),
                429,
                "too_many_streams",
                "the plan allows 2 streams at once",
            ),
            (
                PlayError::NotRecorded,
                503,
                "internal",
                "the stream could not be recorded; retry",
            ),
            (
                PlayError::Storage(StorageError::Missing("URL-signing keys of site s".into())),
                404,
                "not_found",
                "URL-signing keys of site s does not exist",
            ),
        ];
        for (e, status, code, message) in cases {
            let body = format!(r#"{{"code":"{code}","message":"{message}"}}"#);
            assert_eq!(answer(e.into()), (status, body));
        }
    }

    #[test]
    fn a_missing_manifest_is_404_or_409() {
        assert_eq!(answer(NoManifest::Unknown.into()).0, 404);
        let (status, body) = answer(NoManifest::NoStorage.into());
        assert_eq!(status, 409);
        assert!(body.contains(r#""code":"bad_request""#), "{body}");
    }
}
