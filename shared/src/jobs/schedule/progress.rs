//! A scheduled run's item (`SCHEDULED#RUNS` / `RUN#<scheduled time>`): where the coordinator is
//! in the registry (`cursor`, `batches` handed out, `organizations` seen, `paged` once at its
//! end), which batches have reported (`reported`, a number set) and the counts they reported.
//! Every change is one conditional update, so a redelivered event or batch changes nothing a
//! first delivery did; the update that completes the run, and only that one, marks it
//! `finished` and puts the run's event. An event not delivered then is sent again by a later
//! delivery, or by the next run's coordinator ([`sweep`]), which also ends a run that a lost
//! batch left unfinished.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::Serialize;

use super::{BatchOutcome, RunSummary};
use crate::store_error::{from_sdk, SdkResultExt, StoreError};
use crate::table::{PK, SK, TTL};
use crate::AppState;

/// How long a run's item is kept (it is read only while the run lasts, to answer a redelivered
/// event, and by the next runs' sweep).
const KEEP_DAYS: i64 = 14;
/// A finished run's event still pending after this long is sent again (sooner, it is most
/// likely being sent by the update that finished the run).
const RESEND_AFTER: chrono::Duration = chrono::Duration::seconds(30);
/// A run unfinished this long after its last hand-out or report lost a batch for good: Lambda
/// keeps an asynchronous invocation (a batch, or the coordinator's retry) 6 hours at most (the
/// worker's `MaximumEventAgeInSeconds`, Lambda's default for the coordinator), and a batch
/// runs 15 minutes at most.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(7);
/// How far back each coordinator looks for runs still unfinished or owing their event.
const SWEEP_DAYS: i64 = KEEP_DAYS;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The item's attributes by placeholder (several are DynamoDB reserved words).
const ATTRIBUTES: &[(&str, &str)] = &[
    ("#pk", PK),
    ("#ttl", TTL),
    ("#time", "scheduledTime"),
    ("#upTo", "upTo"),
    ("#cursor", "cursor"),
    ("#batches", "batches"),
    ("#orgs", "organizations"),
    ("#paged", "paged"),
    ("#reported", "reported"),
    ("#created", "jobsCreated"),
    ("#resumed", "jobsResumed"),
    ("#unchanged", "unchanged"),
    ("#deferred", "deferred"),
    ("#failed", "failed"),
    ("#finished", "finished"),
    ("#finishedAt", "finishedAt"),
    ("#pending", "eventPending"),
    ("#touched", "touchedAt"),
];

fn names(used: &[&str]) -> HashMap<String, String> {
    ATTRIBUTES.iter().filter(|(p, _)| used.contains(p)).map(|(p, a)| (p.to_string(), a.to_string())).collect()
}

fn key(scheduled_time: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_string(), s(crate::keys::SCHEDULED_RUNS)),
        (SK.to_string(), s(crate::keys::scheduled_run(scheduled_time))),
    ])
}

/// A run's item, as read back.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    /// The run's summary so far.
    pub summary: RunSummary,
    /// The last organization handed out (the registry goes on after it).
    pub cursor: Option<String>,
    /// Whether the coordinator has paged the whole registry.
    pub paged: bool,
    /// The run has finished and its event is not known to be delivered yet.
    pub event_pending: bool,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Its last delivery, hand-out or report.
    pub touched_at: Option<String>,
}

impl Progress {
    fn from_item(item: &HashMap<String, AttributeValue>) -> Self {
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let count = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        let flag = |k: &str| item.get(k).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
        let reported = item.get("reported").and_then(|v| v.as_ns().ok()).map_or(0, |set| set.len() as u64);
        let paged = flag("paged");
        let summary = RunSummary {
            scheduled_time: text("scheduledTime").unwrap_or_default(),
            up_to: text("upTo").unwrap_or_default(),
            organizations: count("organizations"),
            batches: count("batches"),
            batches_finished: reported,
            finished: flag("finished"),
            jobs_created: count("jobsCreated"),
            jobs_resumed: count("jobsResumed"),
            unchanged: count("unchanged"),
            deferred: count("deferred"),
            failed: count("failed"),
        };
        Self {
            summary,
            cursor: text("cursor"),
            paged,
            event_pending: flag("eventPending"),
            finished_at: text("finishedAt"),
            touched_at: text("touchedAt"),
        }
    }

    /// Every batch handed out has reported, and there are no more.
    fn complete(&self) -> bool {
        self.paged && self.summary.batches_finished == self.summary.batches
    }
}

fn update(state: &AppState, scheduled_time: &str) -> UpdateItemFluentBuilder {
    state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(key(scheduled_time)))
        .return_values(ReturnValue::AllNew)
}

/// The run's item, made on the first delivery of its event: its `up_to` stays the first
/// delivery's.
pub(super) async fn open(state: &AppState, scheduled_time: &str, up_to: &str) -> Result<Progress, StoreError> {
    let expires = chrono::Utc::now().timestamp() + KEEP_DAYS * 86_400;
    let out = update(state, scheduled_time)
        .update_expression(
            "SET #time = :t, #upTo = if_not_exists(#upTo, :u), #batches = if_not_exists(#batches, :zero), \
             #orgs = if_not_exists(#orgs, :zero), #paged = if_not_exists(#paged, :no), \
             #finished = if_not_exists(#finished, :no), #touched = :now, #ttl = :ttl",
        )
        .set_expression_attribute_names(Some(names(&[
            "#time",
            "#upTo",
            "#batches",
            "#orgs",
            "#paged",
            "#finished",
            "#touched",
            "#ttl",
        ])))
        .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
        .expression_attribute_values(":t", s(scheduled_time))
        .expression_attribute_values(":u", s(up_to))
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":no", AttributeValue::Bool(false))
        .expression_attribute_values(":ttl", AttributeValue::N(expires.to_string()))
        .send()
        .await
        .ctx("open scheduled run")?;
    Ok(Progress::from_item(out.attributes().unwrap_or(&HashMap::new())))
}

/// Records a page handed out: `handed` more organizations (in one batch when there were any),
/// the registry going on after `next` (or ended). `None` when another delivery of the event
/// moved first (the caller reads the item again).
pub(super) async fn advance(
    state: &AppState,
    at: &Progress,
    next: Option<&str>,
    handed: u64,
) -> Result<Option<Progress>, StoreError> {
    let mut request = update(state, &at.summary.scheduled_time)
        .expression_attribute_values(":b", n(at.summary.batches))
        .expression_attribute_values(":more", n(u64::from(handed > 0)))
        .expression_attribute_values(":handed", n(handed))
        .expression_attribute_values(":paged", AttributeValue::Bool(next.is_none()))
        .expression_attribute_values(":no", AttributeValue::Bool(false))
        .expression_attribute_values(":now", s(crate::time::now_rfc3339()));
    request = match &at.cursor {
        Some(cursor) => request
            .condition_expression("#batches = :b AND #cursor = :c AND #paged = :no")
            .expression_attribute_values(":c", s(cursor)),
        None => request.condition_expression("#batches = :b AND attribute_not_exists(#cursor) AND #paged = :no"),
    };
    request =
        request.set_expression_attribute_names(Some(names(&["#batches", "#cursor", "#orgs", "#paged", "#touched"])));
    let set = "SET #batches = #batches + :more, #orgs = #orgs + :handed, #paged = :paged, #touched = :now";
    request = match next {
        Some(next) => {
            request.update_expression(format!("{set}, #cursor = :next")).expression_attribute_values(":next", s(next))
        }
        None => request.update_expression(set),
    };
    match request.send().await {
        Ok(out) => Ok(Some(Progress::from_item(out.attributes().unwrap_or(&HashMap::new())))),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
        Err(e) => Err(from_sdk("checkpoint scheduled run", e)),
    }
}

/// Adds a batch's counts to its run, once: `None` when that batch had reported already (a
/// redelivery) or its run has no item.
pub(super) async fn report(
    state: &AppState,
    scheduled_time: &str,
    outcome: &BatchOutcome,
) -> Result<Option<Progress>, StoreError> {
    let result = update(state, scheduled_time)
        .update_expression(
            "SET #touched = :now ADD #reported :number, #created :created, #resumed :resumed, \
             #unchanged :unchanged, #deferred :deferred, #failed :failed",
        )
        .condition_expression("attribute_exists(#pk) AND NOT contains(#reported, :n)")
        .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
        .set_expression_attribute_names(Some(names(&[
            "#pk",
            "#touched",
            "#reported",
            "#created",
            "#resumed",
            "#unchanged",
            "#deferred",
            "#failed",
        ])))
        .expression_attribute_values(":number", AttributeValue::Ns(vec![outcome.number.to_string()]))
        .expression_attribute_values(":n", n(outcome.number))
        .expression_attribute_values(":created", n(outcome.jobs_created))
        .expression_attribute_values(":resumed", n(outcome.jobs_resumed))
        .expression_attribute_values(":unchanged", n(outcome.unchanged))
        .expression_attribute_values(":deferred", n(outcome.deferred))
        .expression_attribute_values(":failed", n(outcome.failed))
        .send()
        .await;
    match result {
        Ok(out) => Ok(Some(Progress::from_item(out.attributes().unwrap_or(&HashMap::new())))),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
        Err(e) => Err(from_sdk("report scheduled batch", e)),
    }
}

/// Ends the run when `at` shows it complete: of all the updates that see it complete, only
/// the first marks it finished (and its event pending), and puts its event; it answers the run
/// as finished. A run finished earlier whose event is still pending puts it again (at least
/// once; its id is stable).
pub(super) async fn conclude(state: &AppState, at: &Progress) -> Result<Option<Progress>, StoreError> {
    if at.summary.finished {
        let since = at.finished_at.as_deref().and_then(crate::time::parse_rfc3339);
        if at.event_pending && since.is_none_or(|t| chrono::Utc::now() - t > RESEND_AFTER) {
            send_event(state, at).await;
        }
        return Ok(None);
    }
    if !at.complete() {
        return Ok(None);
    }
    let done = finish(state, &at.summary.scheduled_time, 0).await?;
    if let Some(done) = &done {
        tracing::info!(summary = ?done.summary, "scheduled export run finished");
    }
    Ok(done)
}

/// Marks the run finished, `missing` more organizations `failed`, and puts its event; `None`
/// when another update finished it first.
async fn finish(state: &AppState, scheduled_time: &str, missing: u64) -> Result<Option<Progress>, StoreError> {
    let result = update(state, scheduled_time)
        .update_expression("SET #finished = :yes, #finishedAt = :now, #pending = :yes ADD #failed :missing")
        .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#finished) OR #finished = :no)")
        .set_expression_attribute_names(Some(names(&["#pk", "#finished", "#finishedAt", "#pending", "#failed"])))
        .expression_attribute_values(":yes", AttributeValue::Bool(true))
        .expression_attribute_values(":no", AttributeValue::Bool(false))
        .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
        .expression_attribute_values(":missing", n(missing))
        .send()
        .await;
    match result {
        Ok(out) => {
            let done = Progress::from_item(out.attributes().unwrap_or(&HashMap::new()));
            send_event(state, &done).await;
            Ok(Some(done))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
        Err(e) => Err(from_sdk("finish scheduled run", e)),
    }
}

/// Puts the run's event; once EventBridge took it, the run no longer owes it.
async fn send_event(state: &AppState, done: &Progress) {
    if !publish_run(state, &done.summary).await {
        return; // Logged; the next delivery of the event or of a batch sends it again.
    }
    let cleared = update(state, &done.summary.scheduled_time)
        .update_expression("REMOVE #pending")
        .set_expression_attribute_names(Some(names(&["#pending"])))
        .send()
        .await;
    if let Err(e) = cleared {
        tracing::warn!(error = %from_sdk("clear scheduled run event", e), "a run's event may be sent again");
    }
}

/// The run's item (strongly consistent), `None` before its first delivery.
pub(super) async fn read(state: &AppState, scheduled_time: &str) -> Result<Option<Progress>, StoreError> {
    let out = state
        .dynamo
        .get_item()
        .table_name(&state.config.table_name)
        .set_key(Some(key(scheduled_time)))
        .consistent_read(true)
        .send()
        .await
        .ctx("read scheduled run")?;
    Ok(out.item.map(|item| Progress::from_item(&item)))
}

/// Looks at the runs of the last [`SWEEP_DAYS`] before `scheduled_time` that are unfinished or
/// owe their event: sends the event a finished one owes, and ends one that lost a batch for
/// good (its missing organizations counted `failed`).
pub(super) async fn sweep(state: &AppState, scheduled_time: &str) -> Result<(), StoreError> {
    let since = crate::time::to_rfc3339(chrono::Utc::now() - chrono::Duration::days(SWEEP_DAYS));
    let mut pages = state
        .dynamo
        .query()
        .table_name(&state.config.table_name)
        .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :before")
        .filter_expression("#finished = :no OR attribute_exists(#pending)")
        .set_expression_attribute_names(Some(HashMap::from([
            ("#pk".into(), PK.into()),
            ("#sk".into(), SK.into()),
            ("#finished".into(), "finished".into()),
            ("#pending".into(), "eventPending".into()),
        ])))
        .expression_attribute_values(":pk", s(crate::keys::SCHEDULED_RUNS))
        .expression_attribute_values(":from", s(crate::keys::scheduled_run(&since)))
        .expression_attribute_values(":before", s(crate::keys::scheduled_run(scheduled_time)))
        .expression_attribute_values(":no", AttributeValue::Bool(false))
        .consistent_read(true)
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let run = Progress::from_item(&item.ctx("list earlier scheduled runs")?);
        if run.summary.scheduled_time.as_str() >= scheduled_time {
            continue; // This run itself (BETWEEN includes it).
        }
        let touched = run.touched_at.as_deref().and_then(crate::time::parse_rfc3339);
        if !run.summary.finished && touched.is_none_or(|t| chrono::Utc::now() - t > GIVE_UP_AFTER) {
            give_up(state, &run).await?;
        } else {
            conclude(state, &run).await?;
        }
    }
    Ok(())
}

/// Ends a run whose batches will not all report: what they did not report counts `failed`.
async fn give_up(state: &AppState, run: &Progress) -> Result<(), StoreError> {
    let sum = &run.summary;
    let reported = sum.jobs_created + sum.jobs_resumed + sum.unchanged + sum.deferred + sum.failed;
    let missing = sum.organizations.saturating_sub(reported);
    tracing::error!(scheduled = %sum.scheduled_time, missing, "a scheduled run lost batches; ending it incomplete");
    finish(state, &sum.scheduled_time, missing.max(1)).await.map(|_| ())
}

/// Where the run of `scheduled_time` stands (`None` before its first delivery).
pub async fn summary(state: &AppState, scheduled_time: &str) -> Result<Option<RunSummary>, StoreError> {
    Ok(read(state, scheduled_time).await?.map(|p| p.summary))
}

/// A scheduled run's `detail`: its summary and a stable id (the scheduled time).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetail<'a> {
    event_id: String,
    #[serde(flatten)]
    summary: &'a RunSummary,
}

/// Puts a finished run's event; `true` once EventBridge took it.
pub async fn publish_run(state: &AppState, summary: &RunSummary) -> bool {
    // Organizations that failed are covered by the next run; the id says this one missed them.
    let outcome = if summary.failed == 0 { "complete" } else { "incomplete" };
    let detail = RunDetail { event_id: format!("run:{}:{outcome}", summary.scheduled_time), summary };
    crate::jobs::events::put(state, crate::jobs::events::RUN_FINISHED, &detail, "scheduled run").await
}
