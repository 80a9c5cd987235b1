//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState};

/// The process is up and serving: always 200, never touches the store (a
/// database outage must not get the daemon restarted).
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to take work: the store answers a round trip. Any store failure is
/// "not ready" (503 `store_unavailable`).
pub(super) async fn readyz(State(ctx): State<AppState>) -> ApiResult<Json<Value>> {
    match ctx.store.ping().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => Err(ApiError::StoreUnavailable(e.to_string())),
    }
}
