//! Exports: training data (Tether's JSON, JSONL, fine-tune JSONL, CSV) and conversations
//! (Convocore's JSON and CSV), produced as a stream into an [`sink::ExportSink`] that answers
//! small files inline and streams large ones to S3 behind a presigned download URL.

pub mod convos;
pub mod producer;
pub mod sink;
pub mod training;

use http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::http::query_param;
use crate::AppState;
use producer::{ExportSpec, Producer};
use sink::{Delivery, ExportSink, Finished, ObjectSpec};

/// UTF-8 byte order mark: Excel reads accents and emoji in a CSV that starts with it.
pub const BOM: &[u8] = "\u{feff}".as_bytes();

/// Neutralises a CSV cell that a spreadsheet would run as a formula (`= + - @`, tab, CR)
/// by prefixing a single quote (OWASP's CSV injection advice).
pub fn safe_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// One RFC 4180 CSV record (CRLF, quotes doubled, line breaks kept inside quoted cells).
pub fn csv_record<'a>(cells: impl IntoIterator<Item = &'a str>) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    w.write_record(cells.into_iter().map(|c| safe_cell(c).into_owned())).map_err(|e| ApiError::internal("csv", e))?;
    w.into_inner().map_err(|e| ApiError::internal("csv", e))
}

/// Reads `delivery=auto|url|inline`.
pub fn delivery_param(req: &Request) -> Result<Delivery, ApiError> {
    match query_param(req, "delivery") {
        None | Some("auto") => Ok(Delivery::Auto),
        Some("url") => Ok(Delivery::Url),
        Some("inline") => Ok(Delivery::Inline),
        Some(_) => Err(ApiError::invalid("delivery", "must be auto, url or inline")),
    }
}

/// A new export object key: namespaced by organization and kind, unguessable (128 random bits).
pub fn object_key(org: &str, kind: &str, filename: &str) -> String {
    let random: u128 = rand::random();
    let date = chrono::Utc::now().format("%Y-%m-%d");
    format!("exports/{org}/{kind}/{date}/{random:032x}/{filename}")
}

/// A new export object: namespaced by organization, unguessable (128 random bits).
pub fn object_spec(state: &AppState, org: &str, kind: &str, filename: &str, content_type: &str) -> ObjectSpec {
    ObjectSpec {
        bucket: state.config.bucket_name.clone(),
        key: object_key(org, kind, filename),
        content_type: content_type.to_string(),
        content_disposition: attachment(filename),
    }
}

/// Runs an export within the request: answers the file (inline or `303` to a download), or,
/// when it would outlast its time budget (`EXPORT_SYNC_BUDGET_SECONDS`, 20 s by default, under
/// API Gateway's 29 s), drops what it has and answers `202` with an export job for the same
/// parameters instead.
pub async fn run_sync(
    state: &AppState,
    org: &str,
    spec: ExportSpec,
    delivery: Delivery,
) -> Result<Response<Body>, ApiError> {
    let started = std::time::Instant::now();
    let created = chrono::Utc::now();
    let object = object_spec(state, org, spec.kind(), &spec.file_name(created), spec.content_type());
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
                Finished::Stored { bytes, .. } => *bytes,
            };
            // Cost and size of every export, for operators (and the benchmark, which reads it).
            tracing::info!(
                kind = spec.kind(),
                items = producer.counts().items,
                bytes,
                items_read = reads.scanned,
                read_capacity = reads.capacity,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "export finished"
            );
            respond(state, &object, finished, producer.counts()).await
        }
        Ok(false) => {
            sink.abort().await;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "export over its time budget: continuing as a job"
            );
            let job = crate::jobs::start(state, org, spec, crate::jobs::Trigger::Fallback).await?;
            Ok(crate::jobs::handlers::accepted(
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

/// `attachment; filename="<name>"`; names are built here from safe characters only.
pub fn attachment(filename: &str) -> String {
    let safe: String = filename.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    format!("attachment; filename=\"{safe}\"")
}

/// A new sink for `spec` with the deployment's inline limit.
pub fn sink<'a>(state: &'a AppState, spec: ObjectSpec, delivery: Delivery) -> ExportSink<'a> {
    ExportSink::new(&state.s3, spec, delivery, state.config.inline_export_max_bytes)
}

/// What an export counted, for headers and the download body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Items written (snapshots or conversations).
    pub items: u64,
    /// Items left out (fine-tune examples without an assistant message).
    pub skipped: u64,
}

/// Answers a finished export: the file itself, or `303 See Other` to a presigned URL with a
/// JSON body (in the `{success, message, data}` envelope) describing the download.
pub async fn respond(
    state: &AppState,
    spec: &ObjectSpec,
    finished: Finished,
    counts: Counts,
) -> Result<Response<Body>, ApiError> {
    let mut response = match finished {
        Finished::Inline(bytes) => {
            let mut r = Response::new(Body::Binary(bytes));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(header::CONTENT_TYPE, header_value(&spec.content_type)?);
            r.headers_mut().insert(header::CONTENT_DISPOSITION, header_value(&spec.content_disposition)?);
            r
        }
        Finished::Stored { key, bytes, .. } => {
            let ttl = std::time::Duration::from_secs(state.config.export_url_ttl_seconds);
            let url = presign(state, &key, ttl).await?;
            let expires_at =
                crate::time::to_rfc3339(chrono::Utc::now() + chrono::Duration::seconds(ttl.as_secs() as i64));
            let body = json!({
                "success": true,
                "message": "Export is ready for download",
                "data": { "url": url, "expiresAt": expires_at, "bytes": bytes, "key": key, "items": counts.items, "skipped": counts.skipped },
            });
            let mut r = crate::http::json_response(StatusCode::SEE_OTHER, &body);
            r.headers_mut().insert(header::LOCATION, header_value(&url)?);
            r
        }
    };
    response.headers_mut().insert("x-export-items", HeaderValue::from(counts.items));
    response.headers_mut().insert("x-export-skipped", HeaderValue::from(counts.skipped));
    Ok(response)
}

fn header_value(v: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(v).map_err(|e| ApiError::internal("export header", e))
}

/// A presigned GET URL for an export object.
pub async fn presign(state: &AppState, key: &str, ttl: std::time::Duration) -> Result<String, ApiError> {
    let config =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl).map_err(|e| ApiError::internal("presign", e))?;
    let request = state
        .s3
        .get_object()
        .bucket(&state.config.bucket_name)
        .key(key)
        .presigned(config)
        .await
        .map_err(|e| ApiError::internal("presign", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(request.uri().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_names_cannot_inject_headers() {
        assert_eq!(safe_cell("=cmd()"), "'=cmd()");
        assert_eq!(safe_cell("-1"), "'-1");
        assert_eq!(safe_cell("\tx"), "'\tx");
        assert_eq!(safe_cell("plain"), "plain");
        assert_eq!(attachment("a\"b\r\nSet-Cookie: x.csv"), "attachment; filename=\"abSet-Cookiex.csv\"");
        let row = csv_record(["a,b", "say \"hi\"", "line\nbreak", "@x"]).unwrap();
        assert_eq!(String::from_utf8(row).unwrap(), "\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",'@x\r\n");
    }
}
