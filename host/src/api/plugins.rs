//! The plugins loaded in this daemon (what `accord plugin list` shows).

use axum::Json;
use axum::extract::State;

use super::AppState;
use crate::plugins::PluginInfo;

pub(super) async fn list(State(ctx): State<AppState>) -> Json<Vec<PluginInfo>> {
    Json(ctx.runtime.list())
}
