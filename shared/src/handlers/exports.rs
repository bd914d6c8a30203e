//! The synchronous export routes: `GET /api/training/export` (Tether) and the conversation
//! exports `GET /agents/{agentId}/convos/export` and `.../convos/{convoId}/export` (Convocore).
//! Each runs the export pipeline within the request and answers the file inline, `303` to a
//! download, or, past its time budget, `202` with an export job for the same parameters.

use http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use super::query::{filters, redaction};
use crate::error::{ApiError, Envelope};
use crate::exports::convos::{agent_spec, time_value, ConvoFormat, MAX_EXPORT_LIMIT};
use crate::exports::dedup::Dedup;
use crate::exports::producer::{ExportSpec, Producer};
use crate::exports::scrub::effective;
use crate::exports::sink::{Delivery, ExportSink, Finished, ObjectSpec};
use crate::exports::training::{training_spec, Format};
use crate::exports::Counts;
use crate::http::{handle, path_id, query_param};
use crate::keys::Org;
use crate::snapshots::store::Archived;
use crate::AppState;

/// Reads `delivery=auto|url|inline`.
pub fn delivery_param(req: &Request) -> Result<Delivery, ApiError> {
    match query_param(req, "delivery") {
        None | Some("auto") => Ok(Delivery::Auto),
        Some("url") => Ok(Delivery::Url),
        Some("inline") => Ok(Delivery::Inline),
        Some(_) => Err(ApiError::invalid("delivery", "must be auto, url or inline")),
    }
}

/// Runs an export within the request: answers the file (inline or `303` to a download), or,
/// when it would outlast its time budget (`EXPORT_SYNC_BUDGET_SECONDS`, 20 s by default, under
/// API Gateway's 29 s), drops what it has and answers `202` with an export job for the same
/// parameters instead.
pub async fn run_sync(
    state: &AppState,
    org: &Org,
    spec: ExportSpec,
    delivery: Delivery,
) -> Result<Response<Body>, ApiError> {
    let started = std::time::Instant::now();
    let created = chrono::Utc::now();
    let object = crate::exports::object_spec(state, org, spec.kind(), &spec.file_name(created), spec.content_type());
    let mut sink = sink(state, object.clone(), delivery);
    let mut producer = Producer::new(state, org, spec.clone(), &crate::time::to_rfc3339(created));
    let result = async {
        sink.write(&producer.header()?).await?;
        while let Some(items) = producer.next().await? {
            for item in items {
                if !item.bytes.is_empty() {
                    sink.write(&item.bytes).await?;
                }
            }
            if !producer.done() && started.elapsed() >= state.config.export_sync_budget {
                return Ok(false);
            }
        }
        sink.write(&producer.footer()).await?;
        Ok::<_, ApiError>(true)
    }
    .await;
    match result {
        Ok(true) => {
            let finished = sink.finish().await?;
            let reads = producer.reads();
            let bytes = match &finished {
                Finished::Inline(b) => b.len() as u64,
                Finished::Stored { bytes, .. } | Finished::Discarded { bytes, .. } => *bytes,
            };
            // Cost and size of every export, for operators (and the benchmark, which reads it).
            tracing::info!(
                kind = spec.kind(),
                items = producer.counts().items,
                skipped = producer.counts().skipped,
                bytes,
                items_read = reads.scanned,
                read_capacity = reads.capacity,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "export finished"
            );
            let redacting = effective(spec.redaction(), state.config.export_redaction_required).is_some();
            respond(state, &object, finished, (producer.counts(), redacting)).await
        }
        Ok(false) => {
            sink.abort().await;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "export over its time budget: continuing as a job"
            );
            let job = crate::jobs::start(state, org, spec, crate::jobs::Trigger::Fallback).await?;
            Ok(super::export_jobs::accepted(
                &job,
                "The export is larger than a request allows; it continues as an export job",
            ))
        }
        Err(e) => {
            sink.abort().await;
            Err(e)
        }
    }
}

/// A new sink for `spec` with the deployment's inline limit.
pub fn sink<'a>(state: &'a AppState, spec: ObjectSpec, delivery: Delivery) -> ExportSink<'a> {
    ExportSink::new(&state.s3, spec, delivery, state.config.inline_export_max_bytes)
        .with_uploads_ahead(state.config.export_uploads_ahead)
}

/// The `data` of a `303` export answer: where to download the file, and what it holds.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Download<'a> {
    url: &'a str,
    expires_at: String,
    bytes: u64,
    key: &'a str,
    items: u64,
    skipped: u64,
    skipped_reasons: std::collections::BTreeMap<&'static str, u64>,
    redacted: std::collections::BTreeMap<&'static str, u64>,
}

/// Answers a finished export: the file itself, or `303 See Other` to a presigned URL with a
/// JSON body (in the `{success, message, data}` envelope) describing the download. Its counts
/// go to `X-Export-*` headers, what redaction replaced (when `redacting`) to `X-Export-Redacted`.
pub async fn respond(
    state: &AppState,
    spec: &ObjectSpec,
    finished: Finished,
    (counts, redacting): (Counts, bool),
) -> Result<Response<Body>, ApiError> {
    let mut response = match finished {
        // The synchronous route never discards (only a job's dry run does).
        Finished::Discarded { .. } => return Err(ApiError::internal("export", "a synchronous export was discarded")),
        Finished::Inline(bytes) => {
            let mut r = Response::new(Body::Binary(bytes));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(header::CONTENT_TYPE, header_value(&spec.content_type)?);
            r.headers_mut().insert(header::CONTENT_DISPOSITION, header_value(&spec.content_disposition)?);
            r
        }
        Finished::Stored { key, bytes, .. } => {
            let ttl = std::time::Duration::from_secs(state.config.export_url_ttl_seconds);
            let url = crate::exports::objects::presign(&state.s3, &state.config.bucket_name, &key, ttl).await?;
            let expires_at =
                crate::time::to_rfc3339(chrono::Utc::now() + chrono::Duration::seconds(ttl.as_secs() as i64));
            let data = Download {
                url: &url,
                expires_at,
                bytes,
                key: &key,
                items: counts.items,
                skipped: counts.skipped,
                skipped_reasons: counts.reasons.by_code(),
                redacted: counts.redacted.by_code(),
            };
            let mut r = crate::http::success(StatusCode::SEE_OTHER, "Export is ready for download", &data);
            r.headers_mut().insert(header::LOCATION, header_value(&url)?);
            r
        }
    };
    response.headers_mut().insert("x-export-items", HeaderValue::from(counts.items));
    response.headers_mut().insert("x-export-skipped", HeaderValue::from(counts.skipped));
    if counts.skipped > 0 {
        response.headers_mut().insert("x-export-skipped-reasons", header_value(&counts.reasons.header())?);
    }
    if redacting {
        response.headers_mut().insert("x-export-redacted", header_value(&counts.redacted.header())?);
    }
    Ok(response)
}

fn header_value(v: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(v).map_err(|e| ApiError::internal("export header", e))
}

/// `GET /api/training/export`.
pub async fn export_training(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let archived = match query_param(&req, "includeArchived") {
            None | Some("false") => Archived::No,
            Some("true") => Archived::All,
            Some(_) => return Err(ApiError::invalid("includeArchived", "must be true or false")),
        };
        let f = filters(&req, archived)?;
        let format = Format::parse(query_param(&req, "format"))?;
        let system = query_param(&req, "system").map(str::to_string);
        let is_split = |k: &str| k == "split" || k.starts_with("split[") || k.starts_with("split.");
        if req.query_string_parameters_ref().is_some_and(|q| q.iter().any(|(k, _)| is_split(k))) {
            // Splits write several files, which only a job can hand out.
            return Err(ApiError::invalid(
                "split",
                "is only for export jobs: POST /api/training/exports with {\"split\": {...}}",
            ));
        }
        let redaction = redaction(&req, state.config.export_redaction_required)?;
        let dedup = Dedup::parse(query_param(&req, "dedup"))?;
        let spec = training_spec(format, f, system, None)?.with_redaction(redaction).with_dedup(dedup);
        let delivery = delivery_param(&req)?;
        run_sync(state, &Org::verified(&principal), spec, delivery).await
    })
    .await
}

/// `GET /agents/{agentId}/convos/export?format=json|csv&from=&to=&limit=&delivery=`.
pub async fn export_agent_convos(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Convocore, |principal, req| async move {
        let agent = path_id(&req, "agentId")?;
        let format = ConvoFormat::parse(query_param(&req, "format"))?;
        let from = time_value("from", query_param(&req, "from"))?;
        let to = time_value("to", query_param(&req, "to"))?;
        let limit = query_param(&req, "limit")
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_EXPORT_LIMIT}")))
            })
            .transpose()?;
        let redaction = redaction(&req, state.config.export_redaction_required)?;
        let spec = agent_spec(agent, format, from, to, limit)?.with_redaction(redaction);
        let delivery = delivery_param(&req)?;
        run_sync(state, &Org::verified(&principal), spec, delivery).await
    })
    .await
}

/// `GET /agents/{agentId}/convos/{convoId}/export?format=json|csv&delivery=`.
pub async fn export_convo(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Convocore, |principal, req| async move {
        let agent_id = path_id(&req, "agentId")?;
        let convo_id = path_id(&req, "convoId")?;
        let format = ConvoFormat::parse(query_param(&req, "format"))?;
        let delivery = delivery_param(&req)?;
        let redact = redaction(&req, state.config.export_redaction_required)?;
        let spec = ExportSpec::Conversation { agent_id, convo_id, format, redact };
        run_sync(state, &Org::verified(&principal), spec, delivery).await
    })
    .await
}
