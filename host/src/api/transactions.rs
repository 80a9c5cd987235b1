//! Read-back of stored canonical transactions.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::extract::ApiQuery;
use super::imports::{check_limit, non_empty};
use super::{ApiResult, AppState};
use crate::store::{Page, StoredTransaction, TransactionFilter};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    source: Option<String>,
    import_id: Option<i64>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

/// `GET /v1/transactions?source=&import_id=&limit=&cursor=`, newest first.
pub(super) async fn list(
    State(ctx): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<StoredTransaction>>> {
    let filter = TransactionFilter {
        source: non_empty(q.source),
        import_id: q.import_id,
        limit: check_limit(q.limit)?,
        cursor: q.cursor,
    };
    Ok(Json(ctx.store.list_transactions(&filter).await?))
}
