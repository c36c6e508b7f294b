//! Playback: what a player asks the control plane and what it gets back (docs/architecture.md, "Playback").

use serde::{Deserialize, Serialize};

/// `POST /v1/play` body, sent with the subscriber's token (`Authorization: Bearer`). The client's
/// address comes from the connection (or a trusted proxy).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PlayRequest {
    /// Subscriber id: optional, the token names it; when given it must be the token's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<String>,
    /// Title id.
    pub title: String,
    /// The playing device.
    #[serde(default)]
    pub device: Device,
}

/// What the device can play.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Device {
    /// Tallest picture the device shows, in lines (e.g. 1080); none means no device limit.
    pub max_resolution: Option<u32>,
    /// Free-form model name, for logs.
    pub model: Option<String>,
}

/// The answer: each rendition the subscriber may play, with ranked signed URLs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PlayAnswer {
    /// Title id.
    pub title: String,
    /// When the URLs stop working, unix seconds.
    pub expires: u64,
    /// Renditions, highest quality first.
    pub renditions: Vec<Rendition>,
}

/// One encoded file of the title.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendition {
    /// Content id.
    pub content_id: String,
    /// Picture height in lines.
    pub resolution: u32,
    /// Average bitrate, kilobits per second.
    pub bitrate_kbps: u32,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Media type.
    pub content_type: String,
    /// Up to 10 signed URLs on distinct appliances, best first.
    pub urls: Vec<String>,
}

/// A JSON error from the control plane.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail (a malformed field, for example).
    pub message: String,
}

/// Stable error codes; clients switch on these, so they never change meaning.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed request (the message names the field).
    BadRequest,
    /// Missing or wrong credentials.
    Unauthorized,
    /// No such resource.
    NotFound,
    /// Body over the size limit.
    PayloadTooLarge,
    /// The request body did not arrive in time.
    RequestTimeout,
    /// The subscriber does not exist.
    UnknownSubscriber,
    /// The subscriber exists but is not active.
    InactiveSubscriber,
    /// The title is not licensed in the client's country.
    NotLicensed,
    /// Every rendition is above the subscriber's plan or the device.
    PlanLimit,
    /// The subscriber is already at the plan's concurrent-stream limit.
    TooManyStreams,
    /// No healthy appliance holds the content.
    NoAppliance,
    /// Something failed on the server.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_strings() {
        let e = ApiError {
            code: ErrorCode::TooManyStreams,
            message: "3 of 3 streams in use".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"too_many_streams","message":"3 of 3 streams in use"}"#
        );
        for (code, s) in [
            (ErrorCode::NotLicensed, "not_licensed"),
            (ErrorCode::PlanLimit, "plan_limit"),
            (ErrorCode::UnknownSubscriber, "unknown_subscriber"),
            (ErrorCode::InactiveSubscriber, "inactive_subscriber"),
            (ErrorCode::NoAppliance, "no_appliance"),
        ] {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{s}\""));
        }
    }

    #[test]
    fn device_is_optional() {
        let r: PlayRequest =
            serde_json::from_str(r#"{"subscriber":"s1","title":"80100172"}"#).unwrap();
        assert_eq!(r.device, Device::default());
        let r: PlayRequest = serde_json::from_str(r#"{"title":"80100172"}"#).unwrap();
        assert_eq!(r.subscriber, None, "the token names the subscriber");
    }
}
