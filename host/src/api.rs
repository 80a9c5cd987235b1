//! The HTTP API: the HTTP import channel and read-back of what was stored.
//!
//! [`router`] builds the whole API over a shared [`Context`]; the daemon
//! serves it, tests drive it with `tower::ServiceExt::oneshot`. One module per
//! resource, one error type ([`ApiError`]): every error body is JSON with a
//! stable `code`, including axum's own rejections (bad path or query →
//! 400 `bad_request`), unknown routes (404 `not_found`) and wrong methods
//! (405 `method_not_allowed`).
//!
//! | route | success | errors |
//! |---|---|---|
//! | `POST /v1/sources/{source}/imports[?name=]` | 201 new import, 200 duplicate | 404 `unknown_source` / `http_disabled`, 413 `too_large`, 415 `unsupported_content_type`, 422 `unparseable`, 400 `bad_body`, 503 `store_unavailable` |
//! | `GET /v1/imports/{id}` | 200 import | 404 `not_found` |
//! | `GET /v1/imports?source=&status=&limit=&cursor=` | 200 `{items, next_cursor}` | 400 `bad_request` |
//! | `GET /v1/imports/{id}/rejects?limit=` | 200 `{items}` | 404 `not_found` |
//! | `GET /v1/imports/{id}/events` | 200 `{items}` | 404 `not_found` |
//! | `GET /v1/transactions?source=&import_id=&limit=&cursor=` | 200 `{items, next_cursor}` | 400 `bad_request` |
//! | merchants, MIDs, card registry | see [`reference`] | |
//! | explain, matches, payments, force match, reviews, merchant settings | see [`matching`] | |
//! | `GET /v1/plugins` | 200 `[PluginInfo]` (what `accord plugin list` reads) | |
//! | `GET /healthz` | 200 `{"status":"ok"}` while the process is up | |
//! | `GET /readyz` | 200 `{"status":"ready"}` | 503 `store_unavailable` |
//!
//! Any endpoint may also answer 503 `store_unavailable` or 500 `internal`.
//! Lists are keyset-paged, newest first: pass `next_cursor` back as `cursor`;
//! `null` means the last page. `limit` defaults to 100 and is capped by the
//! store (1000).
//!
//! This module must not touch SQL or plugins directly: it speaks to
//! [`crate::pipeline`] for imports and to [`crate::store`]'s read API.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tracing::Instrument as _;

use crate::pipeline::Context;

mod error;
mod extract;
mod health;
mod imports;
mod matching;
mod plugins;
mod reference;
mod transactions;

pub use error::{ApiError, ApiResult, ErrorDetail};

/// Shared state of every handler.
pub type AppState = Arc<Context>;

/// The whole API.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/sources/{source}/imports", post(imports::create))
        .route("/v1/imports", get(imports::list))
        .route("/v1/imports/{id}", get(imports::get))
        .route("/v1/imports/{id}/rejects", get(imports::rejects))
        .route("/v1/imports/{id}/events", get(imports::events))
        .route("/v1/transactions", get(transactions::list))
        .merge(reference::routes())
        .merge(matching::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(trace))
        .with_state(ctx)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no route for {}", request.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Runs each request inside an `http{method, path}` span (so the pipeline's
/// and plugins' own spans nest under it) and logs every 5xx exactly once,
/// with the cause [`ApiError`] left in the response's extensions. Payloads
/// and query strings are never logged.
async fn trace(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
    );
    async move {
        let started = Instant::now();
        let response = next.run(request).await;
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let detail = response
            .extensions()
            .get::<ErrorDetail>()
            .map(|d| d.0.clone());
        let error = detail.as_deref().unwrap_or("(no detail)");
        match status {
            // Unavailability is an operational condition, not a bug.
            503 => tracing::warn!(status, elapsed_ms, error, "request failed"),
            500..=599 => tracing::error!(status, elapsed_ms, error, "request failed"),
            _ => tracing::debug!(status, elapsed_ms, "request"),
        }
        response
    }
    .instrument(span)
    .await
}
