//! `POST /api/training/exports`, `GET /api/training/exports` and `GET /api/training/exports/{id}`.

use http::{header, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::job_view::{document, view};
use crate::error::{ApiError, Envelope};
use crate::exports::convos::{agent_spec, time_value, ConvoFormat};
use crate::exports::dedup::Dedup;
use crate::exports::producer::ExportSpec;
use crate::exports::scrub;
use crate::exports::split::SplitSpec;
use crate::exports::training::{training_spec, Format};
use crate::http::{cursor_id, handle, limit_param, next_cursor_id, path_id, read_json, success, with_header, Page};
use crate::ids::is_valid_id;
use crate::jobs::{launch, new_job, revive, Job, JobStore, Trigger};
use crate::keys::Org;
use crate::snapshots::store::{Archived, Filters};
use crate::AppState;

/// Default and largest page of the jobs list.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// The body of `POST /api/training/exports`: the parameters of `GET /api/training/export`
/// (`source: training`, the default) or of the conversation exports (`source: conversations`,
/// with `agentId`, and `convoId` for one conversation).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateExport {
    source: Option<String>,
    format: Option<String>,
    quality: Option<String>,
    category: Option<String>,
    tags: Option<Vec<String>>,
    include_archived: Option<bool>,
    from: Option<String>,
    to: Option<String>,
    contact_id: Option<String>,
    system: Option<String>,
    agent_id: Option<String>,
    convo_id: Option<String>,
    // JSON Schema's integer includes `50.0`; the spec promises an integer.
    #[serde(default, deserialize_with = "crate::validate::optional_count")]
    limit: Option<usize>,
    /// Train / validation / test files (source `training`).
    split: Option<SplitSpec>,
    /// Run every stage, write only the manifest (absent or `null`: no).
    dry_run: Option<bool>,
    /// `none` or `pii`.
    redact: Option<String>,
    /// The types `redact=pii` replaces (default: every type).
    redact_types: Option<Vec<String>>,
    /// `none`, `exact` or `near` (source `training`).
    dedup: Option<String>,
}

/// A 400 naming every field that does not belong with the others.
fn stray_fields(fields: &[String], problem: &str) -> ApiError {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    ApiError::validation_issues(
        format!("{}: {problem}", quoted.join(", ")),
        fields.iter().map(|f| format!("{f}: {problem}")).collect(),
    )
}

fn text(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

fn id_field(name: &str, v: &Option<String>) -> Result<Option<String>, ApiError> {
    match text(v) {
        Some(id) if !is_valid_id(&id) => Err(ApiError::invalid(name, "is not a valid id")),
        other => Ok(other),
    }
}

/// The names of the fields present among `fields`.
fn named(fields: &[(&str, bool)]) -> Vec<String> {
    fields.iter().filter(|(_, present)| *present).map(|(name, _)| name.to_string()).collect()
}

impl CreateExport {
    fn into_spec(mut self, redaction_required: bool) -> Result<ExportSpec, ApiError> {
        let source =
            self.source.as_deref().unwrap_or(if self.agent_id.is_some() { "conversations" } else { "training" });
        let redaction = scrub::redaction(self.redact.as_deref(), self.redact_types.take(), redaction_required)?;
        let spec = match source {
            "training" => {
                let dedup = Dedup::parse(self.dedup.as_deref())?;
                self.into_training_spec()?.with_dedup(dedup)
            }
            "conversations" => self.into_conversations_spec()?,
            _ => return Err(ApiError::invalid("source", "must be training or conversations")),
        };
        Ok(spec.with_redaction(redaction))
    }

    /// The spec of `source: training`.
    fn into_training_spec(self) -> Result<ExportSpec, ApiError> {
        let stray = named(&[
            ("agentId", self.agent_id.is_some()),
            ("convoId", self.convo_id.is_some()),
            ("limit", self.limit.is_some()),
        ]);
        if !stray.is_empty() {
            return Err(stray_fields(&stray, "only for source `conversations`"));
        }
        let format = Format::parse(self.format.as_deref())?;
        // Parsed as the synchronous route parses them (no rounding), so both read the same window.
        let parse_time = |name: &str, v: &Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
            v.as_deref()
                .map(|t| {
                    crate::time::parse_rfc3339(t)
                        .ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 timestamp"))
                })
                .transpose()
        };
        let filters = Filters {
            quality: self.quality,
            category: self.category,
            tags: self.tags.unwrap_or_default(),
            archived: if self.include_archived.unwrap_or(false) { Archived::All } else { Archived::No },
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
            contact_id: self.contact_id,
        }
        .validate("tags")?;
        training_spec(format, filters, self.system, self.split)
    }

    /// The spec of `source: conversations` (one agent, or one conversation with `convoId`).
    fn into_conversations_spec(self) -> Result<ExportSpec, ApiError> {
        let stray = named(&[
            ("quality", self.quality.is_some()),
            ("category", self.category.is_some()),
            ("tags", self.tags.is_some()),
            ("includeArchived", self.include_archived.is_some()),
            ("contactId", self.contact_id.is_some()),
            ("system", self.system.is_some()),
            ("split", self.split.is_some()),
            ("dedup", self.dedup.is_some()),
        ]);
        if !stray.is_empty() {
            return Err(stray_fields(&stray, "only for source `training`"));
        }
        let format = ConvoFormat::parse(self.format.as_deref())?;
        let agent_id = id_field("agentId", &self.agent_id)?
            .ok_or_else(|| ApiError::invalid("agentId", "is required for source `conversations`"))?;
        match id_field("convoId", &self.convo_id)? {
            Some(convo_id) => {
                let stray =
                    named(&[("from", self.from.is_some()), ("to", self.to.is_some()), ("limit", self.limit.is_some())]);
                if !stray.is_empty() {
                    return Err(stray_fields(&stray, "not for one conversation"));
                }
                Ok(ExportSpec::Conversation { agent_id, convo_id, format, redact: None })
            }
            None => {
                let from = time_value("from", self.from.as_deref())?;
                let to = time_value("to", self.to.as_deref())?;
                agent_spec(agent_id, format, from, to, self.limit)
            }
        }
    }
}

/// `202 Accepted` with the job and `Location` of it.
pub fn accepted(job: &Job, message: &str) -> Response<Body> {
    let response = success(StatusCode::ACCEPTED, message, &document(job, None));
    with_header(response, header::LOCATION, &format!("/api/training/exports/{}", job.id))
}

/// `POST /api/training/exports`: starts an export job.
pub async fn create_export(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let body: CreateExport = read_json(&req, state.config.max_body_bytes)?;
        let dry_run = body.dry_run.unwrap_or(false);
        let spec = body.into_spec(state.config.export_redaction_required)?;
        let org = Org::verified(&principal);
        if let ExportSpec::Conversation { agent_id, convo_id, .. } = &spec {
            // Answer now, as the synchronous route does, rather than with a failed job later.
            let store = crate::convos::store::ConvoStore::new(&state.dynamo, &state.config.table_name);
            if store.get_header(&org, agent_id, convo_id).await?.is_none() {
                return Err(ApiError::not_found("Conversation not found"));
            }
        }
        let mut job = new_job(&org, spec, Trigger::Request, crate::ids::object_id());
        job.dry_run = dry_run;
        let job = launch(state, job).await?;
        Ok(accepted(&job, "Export job created"))
    })
    .await
}

/// `GET /api/training/exports/{id}`: the job, with a fresh download URL once it succeeded.
pub async fn get_export(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let id = path_id(&req, "id")?;
        let not_found = || ApiError::not_found("Export job not found");
        if !crate::ids::is_object_id(&id) {
            return Err(not_found());
        }
        let job = JobStore::new(state).get(&Org::verified(&principal), &id).await?.ok_or_else(not_found)?;
        crate::jobs::settle_event(state, &job).await;
        let job = revive(state, job).await?;
        Ok(success(StatusCode::OK, "Export job retrieved successfully", &view(state, &job).await?))
    })
    .await
}

/// `GET /api/training/exports`: the organization's jobs, newest first, cursor-paginated.
pub async fn list_exports(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let org = &Org::verified(&principal);
        let limit = limit_param(&req, DEFAULT_LIMIT, MAX_LIMIT)?;
        const SCOPE: &str = "export-jobs";
        let before = cursor_id(state, &req, org, SCOPE)?;
        let (page, next) = JobStore::new(state).list(org, limit, before.as_deref()).await?;
        let mut jobs = Vec::with_capacity(page.len());
        for job in page {
            jobs.push(revive(state, job).await?);
        }
        let mut data = Vec::with_capacity(jobs.len());
        for job in &jobs {
            data.push(view(state, job).await?);
        }
        let next_cursor = next_cursor_id(state, org, SCOPE, next)?;
        Ok(Page::new("Export jobs retrieved successfully", data, next_cursor).into_response())
    })
    .await
}
