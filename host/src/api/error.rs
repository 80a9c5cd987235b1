//! The one error type of the HTTP API.
//!
//! Every failure a client can see is an [`ApiError`] variant with a stable
//! `code` (clients match on it; the message is for humans and may change).
//! The body is always JSON:
//!
//! ```json
//! {"error": {"code": "unknown_source", "message": "unknown source `nope`"}}
//! ```
//!
//! 4xx say precisely what was wrong with the request. 5xx say only what kind
//! of failure it was; the cause goes into the response's extensions as
//! [`ErrorDetail`], where the request middleware logs it, once, inside the
//! request's span (see `api::trace`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::pipeline::IngestError;
use crate::store::StoreError;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed path or query parameters (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// The request body could not be read to the end (400 `bad_body`).
    #[error("reading the request body: {0}")]
    BadBody(String),
    /// A resource (import, route) that does not exist (404 `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// No source of that name is configured (404 `unknown_source`).
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    /// The source exists but has `http = false` (404 `http_disabled`): as far
    /// as this endpoint is concerned it does not exist, but operators get a
    /// distinct code telling them why.
    #[error("source `{0}` does not take imports over HTTP")]
    HttpDisabled(String),
    /// No or an unknown bearer token on a redress endpoint (401 `unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// The request contradicts the current state (409 `conflict`), e.g.
    /// force-matching a payment that is already matched.
    #[error("{0}")]
    Conflict(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Declared or streamed body over `max_body_bytes` (413 `too_large`).
    #[error("payload exceeds the {limit} byte limit")]
    TooLarge { limit: u64 },
    /// 415 `unsupported_content_type`.
    #[error("source `{source_name}` does not accept content type `{content_type}`")]
    UnsupportedContentType {
        source_name: String,
        content_type: String,
    },
    /// The parser could not read the payload as a whole; the import is
    /// recorded as failed (422 `unparseable`, with its `import_id`).
    #[error("import {import_id} failed: {reason}")]
    Unparseable { import_id: i64, reason: String },
    /// A reference-data file that cannot be read as a whole: no header, a
    /// required column missing, not a JSON array (422 `unreadable_file`).
    #[error("{0}")]
    UnreadableFile(String),
    /// A body format an endpoint does not take (415 `unsupported_content_type`).
    #[error("unsupported content type `{0}`")]
    UnsupportedFormat(String),
    /// The database cannot be reached or is overloaded (503
    /// `store_unavailable`); retrying later may succeed.
    #[error("the store is unavailable")]
    StoreUnavailable(String),
    /// Anything else (500 `internal`): a bug or an unexpected database error.
    #[error("internal error")]
    Internal(String),
}

/// The cause of a 5xx, carried from [`ApiError::into_response`] to the
/// logging middleware in the response's extensions (never sent to clients).
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub Arc<str>);

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    import_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::UnknownSource(_) | Self::HttpDisabled(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unparseable { .. } | Self::UnreadableFile(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedFormat(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::BadBody(_) => "bad_body",
            Self::NotFound(_) => "not_found",
            Self::UnknownSource(_) => "unknown_source",
            Self::HttpDisabled(_) => "http_disabled",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized(_) => "unauthorized",
            Self::Conflict(_) => "conflict",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedContentType { .. } => "unsupported_content_type",
            Self::Unparseable { .. } => "unparseable",
            Self::UnreadableFile(_) => "unreadable_file",
            Self::UnsupportedFormat(_) => "unsupported_content_type",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// What the logs get for a 5xx (the client gets only the generic message).
    fn detail(&self) -> Option<String> {
        match self {
            Self::StoreUnavailable(cause) => Some(cause.clone()),
            Self::Internal(cause) => Some(cause.clone()),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (import_id, source) = match &self {
            Self::Unparseable { import_id, .. } => (Some(*import_id), None),
            Self::UnknownSource(s) | Self::HttpDisabled(s) => (None, Some(s.as_str())),
            Self::UnsupportedContentType { source_name, .. } => (None, Some(source_name.as_str())),
            _ => (None, None),
        };
        let body = Body {
            error: ErrorBody {
                code: self.code(),
                message: self.to_string(),
                import_id,
                source,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(detail) = self.detail() {
            response
                .extensions_mut()
                .insert(ErrorDetail(Arc::from(detail)));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            e if e.is_unavailable() => Self::StoreUnavailable(e.to_string()),
            StoreError::NotFound(what) => Self::NotFound(what),
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::UnknownSource(s) => Self::UnknownSource(s),
            IngestError::TooLarge { limit } => Self::TooLarge { limit },
            IngestError::UnsupportedContentType {
                source_name,
                content_type,
            } => Self::UnsupportedContentType {
                source_name,
                content_type,
            },
            IngestError::Unparseable { import_id, reason } => {
                Self::Unparseable { import_id, reason }
            }
            IngestError::Store(e) => e.into(),
            // The only reader the pipeline has here is the request body: a
            // client that aborts or sends a malformed chunked body.
            IngestError::Io(e) => Self::BadBody(e.to_string()),
        }
    }
}

impl From<crate::pipeline::reference::ReferenceError> for ApiError {
    fn from(e: crate::pipeline::reference::ReferenceError) -> Self {
        use crate::pipeline::reference::ReferenceError;
        match e {
            ReferenceError::Unreadable(reason) => Self::UnreadableFile(reason),
            ReferenceError::Store(e) => e.into(),
        }
    }
}

impl From<crate::store::RedressError> for ApiError {
    fn from(e: crate::store::RedressError) -> Self {
        match e {
            crate::store::RedressError::NotFound(m) => Self::NotFound(m),
            crate::store::RedressError::Conflict(m) => Self::Conflict(m),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}
