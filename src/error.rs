//! The one error type of the HTTP surface: a stable `code()`, a client-safe
//! message, and the contract's JSON shape `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Seconds a client is asked to wait before retrying after a 503.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// The outcome of a request as logged and counted: a stored delivery
/// (`received`, `duplicate`), any other success (`ok`), or the error code
/// it was refused with. Attached to every response as an extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Received,
    Duplicate,
    Ok,
    Refused(ErrorCode),
}

/// The stable error codes of the HTTP surface (CONTRACT §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Forbidden,
    RateLimited,
    PayloadTooLarge,
    MissingSignature,
    InvalidSignature,
    InvalidJson,
    InvalidPayload,
    StaleTimestamp,
    BadRequest,
    RequestTimeout,
    NotFound,
    MethodNotAllowed,
    Unavailable,
    Internal,
    Unauthorized,
    InvalidCursor,
    InvalidParameter,
}

impl ErrorCode {
    /// Every code, for metrics registered before their first use.
    pub const ALL: [ErrorCode; 17] = [
        Self::Forbidden,
        Self::RateLimited,
        Self::PayloadTooLarge,
        Self::MissingSignature,
        Self::InvalidSignature,
        Self::InvalidJson,
        Self::InvalidPayload,
        Self::StaleTimestamp,
        Self::BadRequest,
        Self::RequestTimeout,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Unavailable,
        Self::Internal,
        Self::Unauthorized,
        Self::InvalidCursor,
        Self::InvalidParameter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MissingSignature => "missing_signature",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidJson => "invalid_json",
            Self::InvalidPayload => "invalid_payload",
            Self::StaleTimestamp => "stale_timestamp",
            Self::BadRequest => "bad_request",
            Self::RequestTimeout => "request_timeout",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal_error",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCursor => "invalid_cursor",
            Self::InvalidParameter => "invalid_parameter",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Duplicate => "duplicate",
            Self::Ok => "ok",
            Self::Refused(code) => code.as_str(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("client IP is not allowed")]
    Forbidden,
    #[error("rate limit exceeded")]
    RateLimited {
        retry_after_secs: u64,
        /// The client's bucket size, for `x-ratelimit-limit`.
        limit: u32,
    },
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the X-ImgGo-Signature header is missing")]
    MissingSignature,
    #[error("the X-ImgGo-Signature header does not match the body")]
    InvalidSignature,
    #[error("{0}")]
    InvalidJson(&'static str),
    #[error("{0}")]
    InvalidPayload(String),
    #[error("the signed timestamp is outside the accepted window")]
    StaleTimestamp,
    #[error("the request body could not be read")]
    BadBody,
    #[error("the request took too long")]
    Timeout,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the service cannot store events right now; retry later")]
    Unavailable,
    /// Results API: no usable bearer token (missing, malformed, unknown or
    /// revoked; the message never says which, nor echoes it).
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Results API: the token lacks the scope this route needs.
    #[error("the token lacks the {0} scope")]
    MissingScope(&'static str),
    #[error("the cursor is not one this service issued")]
    InvalidCursor,
    /// Results API: a parameter out of range or malformed; names it.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("no stored event for this job")]
    JobNotFound,
    /// A fault of ours, neither the caller's nor transient (a payload that
    /// cannot be sealed, a row no configured key opens). The detail is
    /// logged where it happened, never sent.
    #[error("internal error (logged with this request's id)")]
    Internal,
    /// Results API: the database cannot answer right now.
    #[error("the service cannot read events right now; retry later")]
    StoreUnavailable,
}

impl AppError {
    /// Stable, documented error code (CONTRACT §2).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Forbidden => ErrorCode::Forbidden,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::MissingSignature => ErrorCode::MissingSignature,
            Self::InvalidSignature => ErrorCode::InvalidSignature,
            Self::InvalidJson(_) => ErrorCode::InvalidJson,
            Self::InvalidPayload(_) => ErrorCode::InvalidPayload,
            Self::StaleTimestamp => ErrorCode::StaleTimestamp,
            Self::BadBody => ErrorCode::BadRequest,
            Self::Timeout => ErrorCode::RequestTimeout,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Unavailable | Self::StoreUnavailable => ErrorCode::Unavailable,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::MissingScope(_) => ErrorCode::Forbidden,
            Self::InvalidCursor => ErrorCode::InvalidCursor,
            Self::InvalidParameter(_) => ErrorCode::InvalidParameter,
            Self::JobNotFound => ErrorCode::NotFound,
            Self::Internal => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingSignature | Self::InvalidSignature => StatusCode::UNAUTHORIZED,
            Self::InvalidJson(_) | Self::StaleTimestamp | Self::BadBody => StatusCode::BAD_REQUEST,
            Self::InvalidPayload(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::MissingScope(_) => StatusCode::FORBIDDEN,
            Self::InvalidCursor | Self::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            Self::JobNotFound => StatusCode::NOT_FOUND,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Unavailable | Self::StoreUnavailable => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // Messages are fixed strings or name a field: never payload content,
        // signatures, secrets or database detail.
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut res = (self.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, Self::Unauthorized) {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::RateLimited {
            retry_after_secs,
            limit,
        } = self
        {
            let headers = res.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
            headers.insert("x-ratelimit-after", HeaderValue::from(retry_after_secs));
        }
        res.extensions_mut()
            .insert(Outcome::Refused(self.error_code()));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_the_contract_shape_with_retry_after() {
        let res = AppError::Unavailable.into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "5");
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }

    #[test]
    fn codes_are_the_contract_codes() {
        let cases = [
            (AppError::Forbidden, 403, "forbidden"),
            (
                AppError::RateLimited {
                    retry_after_secs: 1,
                    limit: 1,
                },
                429,
                "rate_limited",
            ),
            (
                AppError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (AppError::MissingSignature, 401, "missing_signature"),
            (AppError::InvalidSignature, 401, "invalid_signature"),
            (AppError::InvalidJson("x"), 400, "invalid_json"),
            (
                AppError::InvalidPayload("job_id".into()),
                422,
                "invalid_payload",
            ),
            (AppError::StaleTimestamp, 400, "stale_timestamp"),
            (AppError::Unavailable, 503, "unavailable"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(err.code(), code);
        }
    }
}
