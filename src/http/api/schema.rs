//! The shapes the Results API's handlers answer with that are not an
//! event: the error body (CONTRACT §2) and a delete's count. Handlers and
//! the OpenAPI document both name them from here, so neither imports the
//! other.

use utoipa::ToSchema;

/// The error shape of every 4xx/5xx (CONTRACT §2).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable code: `unauthorized`, `forbidden`, `invalid_cursor`,
    /// `invalid_parameter`, `not_found`, ...
    pub code: String,
    /// Human-readable; never echoes tokens or erased values.
    pub message: String,
}

/// How many events a delete removed.
#[derive(serde::Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}
