//! Reference data for matching: merchants, MIDs and the card registry.
//!
//! | route | success | errors |
//! |---|---|---|
//! | `POST /v1/merchants` `{slug, name, mode?, match_unregistered_cards?, ...matching settings}` | 200 merchant (created or updated) | 400 `bad_request` |
//! | `GET /v1/merchants` | 200 `{items}` | |
//! | `POST /v1/mids` (`text/csv`, `application/json`, or `multipart/form-data` with a `file` part) | 200 `{inserted, duplicates, rejected: [{line, reason}]}` | 415 `unsupported_content_type`, 422 `unreadable_file`, 413 `too_large` |
//! | `DELETE /v1/mids?identifier=&identifier_type=&provider=` or `?merchant=&location_id=` | 200 `{removed}` | 400 `bad_request` |
//! | `PATCH /v1/mids/{id}` `{location_id?, merchant_internal_id?}` (`""` clears) | 200 MID | 404 `not_found`, 400 `bad_request` |
//! | `GET /v1/mids?merchant=&provider=&identifier=&location_id=&limit=&cursor=` | 200 `{items, next_cursor}` (`identifier` is a prefix) | 400 `bad_request` |
//! | `POST /v1/cards` (same formats as MIDs) | 200 `{upserted, rejected}` | as `POST /v1/mids` |
//! | `GET /v1/cards/{token}` | 200 card | 404 `not_found` |
//!
//! Rows naming a merchant that does not exist are rejected by line: create
//! merchants first with `POST /v1/merchants`.

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest as _, Multipart, Request, State};
use axum::http::header;
use axum::routing::{get, patch, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, ApiQuery};
use super::imports::{check_limit, non_empty};
use super::{ApiError, ApiResult, AppState};
use crate::pipeline::reference::{self, CardsReport, Format, MidsReport};
use crate::store::{
    Card, IdentifierType, Merchant, Mid, MidFilter, MidUpdate, NewMerchant, Page, valid_slug,
};

/// Largest reference upload. Files are parsed whole in memory (they are
/// loaded in one transaction anyway); 64 MiB is around 700,000 MID rows,
/// more than any scheme's estate.
pub const MAX_REFERENCE_BODY: usize = 64 << 20;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/merchants", post(add_merchant).get(list_merchants))
        .route(
            "/v1/mids",
            post(import_mids).get(list_mids).delete(offboard),
        )
        .route("/v1/mids/{id}", patch(update_mid))
        .route("/v1/cards", post(import_cards))
        .route("/v1/cards/{token}", get(get_card))
        .layer(DefaultBodyLimit::max(MAX_REFERENCE_BODY))
}

#[derive(Debug, Serialize)]
struct Items<T> {
    items: Vec<T>,
}

async fn body_bytes(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, MAX_REFERENCE_BODY)
        .await
        .map_err(|e| {
            // http-body-util's LengthLimitError is not a type we can name
            // without depending on it; its message is stable.
            if format!("{e:#}").contains("length limit exceeded") {
                ApiError::TooLarge {
                    limit: MAX_REFERENCE_BODY as u64,
                }
            } else {
                ApiError::BadBody(e.to_string())
            }
        })
}

fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

/// `POST /v1/merchants`: create, or update an existing slug.
async fn add_merchant(State(ctx): State<AppState>, body: Body) -> ApiResult<Json<Merchant>> {
    let merchant: NewMerchant = json_body(&body_bytes(body).await?)?;
    if !valid_slug(&merchant.slug) {
        return Err(ApiError::BadRequest(format!(
            "slug `{}` must be lower-case letters, digits, `-` or `_`",
            merchant.slug
        )));
    }
    if merchant.name.trim().is_empty() {
        return Err(ApiError::BadRequest("name must not be empty".to_owned()));
    }
    if let Some((field, reason)) = merchant.settings.invalid() {
        return Err(ApiError::BadRequest(format!("{field}: {reason}")));
    }
    Ok(Json(ctx.store.upsert_merchant(&merchant).await?))
}

/// `GET /v1/merchants`, by slug.
async fn list_merchants(State(ctx): State<AppState>) -> ApiResult<Json<Items<Merchant>>> {
    Ok(Json(Items {
        items: ctx.store.list_merchants().await?,
    }))
}

/// The uploaded file and its format, from a raw CSV / JSON body or the
/// `file` part of a multipart form.
async fn upload(request: Request) -> ApiResult<(Format, Bytes)> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    if let Some(format) = Format::from_content_type(&content_type) {
        return Ok((format, body_bytes(request.into_body()).await?));
    }
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Err(ApiError::UnsupportedFormat(if content_type.is_empty() {
            "(none)".to_owned()
        } else {
            content_type
        }));
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e.status(), e.body_text()))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let format = field
            .content_type()
            .and_then(Format::from_content_type)
            .or_else(|| field.file_name().and_then(Format::from_file_name))
            .unwrap_or(Format::Csv);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text()))?;
        return Ok((format, bytes));
    }
    Err(ApiError::BadRequest(
        "multipart form has no `file` part".to_owned(),
    ))
}

fn multipart_error(status: axum::http::StatusCode, text: String) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge {
            limit: MAX_REFERENCE_BODY as u64,
        }
    } else {
        ApiError::BadBody(text)
    }
}

/// `POST /v1/mids`: onboard a MID file.
async fn import_mids(State(ctx): State<AppState>, request: Request) -> ApiResult<Json<MidsReport>> {
    let (format, bytes) = upload(request).await?;
    Ok(Json(
        reference::onboard_mids(&ctx.store, format, &bytes).await?,
    ))
}

/// `POST /v1/cards`: load card-registry entries.
async fn import_cards(
    State(ctx): State<AppState>,
    request: Request,
) -> ApiResult<Json<CardsReport>> {
    let (format, bytes) = upload(request).await?;
    Ok(Json(
        reference::onboard_cards(&ctx.store, format, &bytes).await?,
    ))
}

#[derive(Debug, Deserialize)]
struct OffboardQuery {
    identifier: Option<String>,
    identifier_type: Option<String>,
    provider: Option<String>,
    merchant: Option<String>,
    location_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct Removed {
    removed: u64,
}

/// `DELETE /v1/mids?identifier=&identifier_type=&provider=` (one MID) or
/// `?merchant=&location_id=` (a whole location).
async fn offboard(
    State(ctx): State<AppState>,
    ApiQuery(q): ApiQuery<OffboardQuery>,
) -> ApiResult<Json<Removed>> {
    let by_identifier = (
        non_empty(q.identifier),
        non_empty(q.identifier_type),
        non_empty(q.provider),
    );
    let by_location = (non_empty(q.merchant), non_empty(q.location_id));
    let removed = match (by_identifier, by_location) {
        ((Some(identifier), Some(kind), Some(provider)), (None, None)) => {
            let kind: IdentifierType = kind.parse().map_err(ApiError::BadRequest)?;
            ctx.store
                .offboard_mid(&identifier, kind, &provider.to_ascii_lowercase())
                .await?
        }
        ((None, None, None), (Some(merchant), Some(location))) => {
            ctx.store.offboard_location(&merchant, &location).await?
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give either identifier, identifier_type and provider, or merchant and location_id"
                    .to_owned(),
            ));
        }
    };
    Ok(Json(Removed { removed }))
}

/// `PATCH /v1/mids/{id}`.
async fn update_mid(
    State(ctx): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    body: Body,
) -> ApiResult<Json<Mid>> {
    let update: MidUpdate = json_body(&body_bytes(body).await?)?;
    if update.location_id.is_none() && update.merchant_internal_id.is_none() {
        return Err(ApiError::BadRequest(
            "give location_id and/or merchant_internal_id".to_owned(),
        ));
    }
    Ok(Json(ctx.store.update_mid(id, &update).await?))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    merchant: Option<String>,
    provider: Option<String>,
    identifier: Option<String>,
    location_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

/// `GET /v1/mids`, newest first; `identifier` matches as a prefix.
async fn list_mids(
    State(ctx): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Mid>>> {
    let filter = MidFilter {
        merchant: non_empty(q.merchant),
        provider: non_empty(q.provider).map(|p| p.to_ascii_lowercase()),
        identifier_prefix: non_empty(q.identifier),
        location_id: non_empty(q.location_id),
        limit: check_limit(q.limit)?,
        cursor: q.cursor,
    };
    Ok(Json(ctx.store.list_mids(&filter).await?))
}

/// `GET /v1/cards/{token}`.
async fn get_card(
    State(ctx): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<Card>> {
    ctx.store
        .get_card(&token)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no card `{token}` in the registry")))
}
