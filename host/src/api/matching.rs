//! Matching: explain, matches, payments, force match, the review queue and
//! merchant settings.
//!
//! | route | success | errors |
//! |---|---|---|
//! | `GET /v1/transactions/{id}` | 200 explanation: the transaction, its stage, payment / merchant record, legs, match (plugin build, reason, confidence), reviews, history | 404 `not_found` |
//! | `GET /v1/matches?merchant=&kind=&limit=&cursor=` | 200 `{items, next_cursor}` | 400 `bad_request` |
//! | `GET /v1/payments?merchant=&status=&limit=&cursor=` | 200 `{items, next_cursor}` (e.g. `status=unidentified`) | 400 `bad_request` |
//! | `POST /v1/matches` `{payment_transaction_id, merchant_transaction_id, reason}` + bearer token | 201 match (`forced`, actor `api:<token name>`) | 401 `unauthorized`, 404 `not_found`, 409 `conflict`, 400 `bad_request` |
//! | `GET /v1/reviews?status=&limit=&cursor=` | 200 `{items, next_cursor}` | 400 `bad_request` |
//! | `POST /v1/reviews/{id}/confirm` / `.../reject` `{note?}` + bearer token | 200 review | 401, 404, 409 |
//! | `PATCH /v1/merchants/{slug}` settings (mode, lookback_days, unmatched_after_days, tolerance_minor, tolerance_bp, auto_confirm_confidence, matcher, matcher_config, match_unregistered_cards) | 200 merchant | 404, 400 |
//!
//! Redress (force, review decisions) changes money-relevant records, so it
//! needs `Authorization: Bearer <token>` with a token from `[api_tokens]`;
//! the token's name is recorded as the actor.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde::Deserialize;

use super::extract::{ApiPath, ApiQuery};
use super::imports::{check_limit, non_empty};
use super::{ApiError, ApiResult, AppState};
use crate::store::{
    Explanation, MatchFilter, MatchRow, Merchant, Page, PaymentFilter, PaymentRow, ReviewRow,
    SettingsPatch,
};

const MATCH_KINDS: [&str; 5] = ["matched", "forced", "spotted", "streamed", "unmatched"];
const PAYMENT_STATUSES: [&str; 10] = [
    "unidentified",
    "unregistered",
    "pending",
    "review",
    "matched",
    "forced",
    "spotted",
    "streamed",
    "unmatched",
    "dropped",
];
const REVIEW_STATUSES: [&str; 4] = ["open", "confirmed", "rejected", "superseded"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/transactions/{id}", get(explain))
        .route("/v1/matches", get(list_matches).post(force))
        .route("/v1/payments", get(list_payments))
        .route("/v1/reviews", get(list_reviews))
        .route("/v1/reviews/{id}/confirm", post(confirm))
        .route("/v1/reviews/{id}/reject", post(reject))
        .route(
            "/v1/merchants/{slug}",
            axum::routing::patch(update_merchant),
        )
}

fn one_of(field: &str, value: Option<String>, allowed: &[&str]) -> ApiResult<Option<String>> {
    match non_empty(value) {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::BadRequest(format!(
            "{field} `{v}` is not one of {}",
            allowed.join(", ")
        ))),
        other => Ok(other),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

/// The name of the bearer token, or 401.
fn actor(ctx: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthorized("this endpoint needs Authorization: Bearer <token>".into())
        })?;
    ctx.config
        .token_name(token)
        .map(|name| format!("api:{name}"))
        .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))
}

/// `GET /v1/transactions/{id}`: the transaction and what matching did with it.
async fn explain(
    State(ctx): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Explanation>> {
    ctx.store
        .explain_transaction(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("transaction {id}")))
}

#[derive(Debug, Deserialize)]
struct MatchQuery {
    merchant: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

async fn list_matches(
    State(ctx): State<AppState>,
    ApiQuery(q): ApiQuery<MatchQuery>,
) -> ApiResult<Json<Page<MatchRow>>> {
    let filter = MatchFilter {
        merchant: non_empty(q.merchant),
        kind: one_of("kind", q.kind, &MATCH_KINDS)?,
        limit: check_limit(q.limit)?,
        cursor: q.cursor,
    };
    Ok(Json(ctx.store.list_matches(&filter).await?))
}

#[derive(Debug, Deserialize)]
struct PaymentQuery {
    merchant: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

async fn list_payments(
    State(ctx): State<AppState>,
    ApiQuery(q): ApiQuery<PaymentQuery>,
) -> ApiResult<Json<Page<PaymentRow>>> {
    let filter = PaymentFilter {
        merchant: non_empty(q.merchant),
        status: one_of("status", q.status, &PAYMENT_STATUSES)?,
        limit: check_limit(q.limit)?,
        cursor: q.cursor,
    };
    Ok(Json(ctx.store.list_payments(&filter).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceBody {
    payment_transaction_id: i64,
    merchant_transaction_id: i64,
    reason: String,
}

/// `POST /v1/matches`: force match (matching-rules.md §10).
async fn force(
    State(ctx): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<MatchRow>)> {
    let actor = actor(&ctx, &headers)?;
    let body: ForceBody = json_body(&body)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason must not be empty".into()));
    }
    let row = ctx
        .store
        .force_match(
            body.payment_transaction_id,
            body.merchant_transaction_id,
            body.reason.trim(),
            &actor,
        )
        .await??;
    Ok((StatusCode::CREATED, Json(row)))
}

#[derive(Debug, Deserialize)]
struct ReviewQuery {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

async fn list_reviews(
    State(ctx): State<AppState>,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> ApiResult<Json<Page<ReviewRow>>> {
    let status = one_of("status", q.status, &REVIEW_STATUSES)?;
    Ok(Json(
        ctx.store
            .list_reviews(status.as_deref(), check_limit(q.limit)?, q.cursor)
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    note: Option<String>,
}

async fn decide(
    ctx: AppState,
    headers: HeaderMap,
    id: i64,
    body: Bytes,
    confirm: bool,
) -> ApiResult<Json<ReviewRow>> {
    let actor = actor(&ctx, &headers)?;
    let body: DecisionBody = if body.is_empty() {
        DecisionBody::default()
    } else {
        json_body(&body)?
    };
    Ok(Json(
        ctx.store
            .decide_review(id, confirm, &actor, body.note.as_deref())
            .await??,
    ))
}

async fn confirm(
    State(ctx): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<ReviewRow>> {
    decide(ctx, headers, id, body, true).await
}

async fn reject(
    State(ctx): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<ReviewRow>> {
    decide(ctx, headers, id, body, false).await
}

/// `PATCH /v1/merchants/{slug}`: change matching settings.
async fn update_merchant(
    State(ctx): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<Merchant>> {
    let value: serde_json::Value = json_body(&body)?;
    const FIELDS: [&str; 9] = [
        "mode",
        "match_unregistered_cards",
        "lookback_days",
        "unmatched_after_days",
        "tolerance_minor",
        "tolerance_bp",
        "auto_confirm_confidence",
        "matcher",
        "matcher_config",
    ];
    if let Some(obj) = value.as_object()
        && let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "body: unknown field `{k}`, expected one of {}",
            FIELDS.join(", ")
        )));
    }
    let patch: SettingsPatch =
        serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    if let Some((field, reason)) = patch.invalid() {
        return Err(ApiError::BadRequest(format!("{field}: {reason}")));
    }
    ctx.store
        .update_merchant(&slug, &patch)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("merchant `{slug}`")))
}
