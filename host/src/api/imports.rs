//! Imports: the HTTP channel (`POST /v1/sources/{source}/imports`) and
//! read-back of imports, their rejected rows and their event log.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, ApiQuery};
use super::{ApiError, ApiResult, AppState};
use crate::domain::Reject;
use crate::pipeline::{self, ImportOutcome};
use crate::store::{Channel, ImportFilter, ImportRow, ImportStatus, Page, ParseCounts};

/// Most rejected rows `GET /v1/imports/{id}/rejects` returns by default
/// (the store caps any request at its page maximum).
const DEFAULT_REJECTS: u32 = 1000;

#[derive(Debug, Deserialize)]
pub(super) struct CreateQuery {
    /// The payload's original file name, recorded with the import.
    name: Option<String>,
}

/// What a successful POST answers.
#[derive(Debug, Serialize)]
struct Created {
    import_id: i64,
    source: String,
    status: ImportStatus,
    duplicate_of: Option<i64>,
    counts: ParseCounts,
    rejects: Vec<Reject>,
}

/// `POST /v1/sources/{source}/imports`: the raw body, any content type,
/// streamed into the pipeline (never buffered whole).
///
/// Checks that need no body come first, so a refused upload costs nothing:
/// the source exists and takes HTTP, its content type is accepted and a
/// declared `Content-Length` is within `max_body_bytes`. A body without a
/// length (chunked) that runs over the limit is stopped by the pipeline.
pub(super) async fn create(
    State(ctx): State<AppState>,
    ApiPath(source_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<CreateQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let source = ctx
        .config
        .source(&source_name)
        .ok_or_else(|| ApiError::UnknownSource(source_name.clone()))?;
    if !source.http {
        return Err(ApiError::HttpDisabled(source_name));
    }
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Content-Type is not valid ASCII".to_owned()))?,
        ),
        None => None,
    };
    if !source.accepts_content_type(content_type) {
        return Err(ApiError::UnsupportedContentType {
            source_name,
            content_type: content_type.unwrap_or("(none)").to_owned(),
        });
    }
    let limit = ctx.config.max_body_bytes;
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        // hyper has already refused a malformed Content-Length.
        let length = length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if length.is_some_and(|l| l > limit) {
            return Err(ApiError::TooLarge { limit });
        }
    }
    let original_name = non_empty(query.name)
        .or_else(|| {
            headers
                .get(header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(disposition_filename)
        })
        .map(|n| base_name(&n).to_owned())
        .filter(|n| !n.is_empty());

    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let outcome = pipeline::import_stream(
        &ctx,
        &source_name,
        Channel::Http,
        original_name,
        content_type,
        limit,
        stream,
    )
    .await?;
    outcome_response(outcome)
}

fn outcome_response(outcome: ImportOutcome) -> ApiResult<Response> {
    let status = match outcome.status {
        ImportStatus::Parsed => StatusCode::CREATED,
        ImportStatus::Duplicate => StatusCode::OK,
        // Taken in and retained, parse still to come (the pipeline deferred it).
        ImportStatus::Received => StatusCode::ACCEPTED,
        ImportStatus::Failed => {
            return Err(ApiError::Unparseable {
                import_id: outcome.import_id,
                reason: outcome
                    .error
                    .unwrap_or_else(|| "the parser could not read the payload".to_owned()),
            });
        }
    };
    let location = format!("/v1/imports/{}", outcome.import_id);
    let body = Created {
        import_id: outcome.import_id,
        source: outcome.source,
        status: outcome.status,
        duplicate_of: outcome.duplicate_of,
        counts: outcome.counts.unwrap_or_default(),
        rejects: outcome.rejects.into_iter().map(|r| r.reject).collect(),
    };
    Ok((status, [(header::LOCATION, location)], Json(body)).into_response())
}

/// `GET /v1/imports/{id}`.
pub(super) async fn get(
    State(ctx): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ImportRow>> {
    Ok(Json(find(&ctx, id).await?))
}

async fn find(ctx: &AppState, id: i64) -> ApiResult<ImportRow> {
    ctx.store
        .get_import(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no import {id}")))
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    source: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

/// `GET /v1/imports?source=&status=&limit=&cursor=`, newest first.
pub(super) async fn list(
    State(ctx): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<ImportRow>>> {
    let status = non_empty(q.status)
        .map(|s| s.parse::<ImportStatus>())
        .transpose()
        .map_err(|_| {
            ApiError::BadRequest(
                "status must be one of received, parsed, failed, duplicate".to_owned(),
            )
        })?;
    let filter = ImportFilter {
        source: non_empty(q.source),
        status,
        limit: check_limit(q.limit)?,
        cursor: q.cursor,
    };
    Ok(Json(ctx.store.list_imports(&filter).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct RejectsQuery {
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(super) struct Items<T> {
    items: Vec<T>,
}

/// `GET /v1/imports/{id}/rejects?limit=`: rejected rows in input order.
pub(super) async fn rejects(
    State(ctx): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<RejectsQuery>,
) -> ApiResult<Json<Items<crate::store::StoredReject>>> {
    find(&ctx, id).await?;
    let limit = check_limit(q.limit)?.unwrap_or(DEFAULT_REJECTS);
    let items = ctx.store.rejects_for_import(id, limit).await?;
    Ok(Json(Items { items }))
}

/// `GET /v1/imports/{id}/events`: the import's event log, oldest first.
pub(super) async fn events(
    State(ctx): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    find(&ctx, id).await?;
    let items = ctx.store.events_for_import(id).await?;
    Ok(Json(Items { items }).into_response())
}

/// `?source=` means no filter, not "the source named ''".
pub(super) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// `limit=0` is a client mistake; larger values are clamped by the store.
pub(super) fn check_limit(limit: Option<u32>) -> ApiResult<Option<u32>> {
    match limit {
        Some(0) => Err(ApiError::BadRequest("limit must be at least 1".to_owned())),
        other => Ok(other),
    }
}

/// The file name of a `Content-Disposition` header: RFC 6266 `filename*`
/// (RFC 8187 `charset'lang'percent-encoded`) wins over plain `filename`.
fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    for param in value.split(';').skip(1) {
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        let val = val.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                if let Some(decoded) = val.splitn(3, '\'').nth(2).and_then(percent_decode) {
                    return Some(decoded);
                }
            }
            "filename" => {
                let unquoted = val
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| val.to_owned());
                plain = Some(unquoted);
            }
            _ => {}
        }
    }
    plain
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Clients send paths (`C:\exports\day.csv`); only the last part is a name.
fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_names() {
        let f = disposition_filename;
        assert_eq!(
            f("attachment; filename=\"day 1.csv\"").as_deref(),
            Some("day 1.csv")
        );
        assert_eq!(
            f("attachment; filename=day.csv").as_deref(),
            Some("day.csv")
        );
        assert_eq!(
            f("attachment; filename=\"x.csv\"; filename*=UTF-8''%C3%BEj%C3%B3n.csv").as_deref(),
            Some("þjón.csv")
        );
        assert_eq!(f("inline"), None);
        assert_eq!(base_name("C:\\exports\\day.csv"), "day.csv");
        assert_eq!(base_name("../../etc/passwd"), "passwd");
    }

    #[test]
    fn limits() {
        assert!(check_limit(Some(0)).is_err());
        assert_eq!(check_limit(Some(5)).unwrap(), Some(5));
        assert_eq!(check_limit(None).unwrap(), None);
    }
}
