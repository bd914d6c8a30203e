//! The registry of organizations with snapshots (a sparse GSI1 partition) and each one's
//! watermark, on its schedule state item.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::keys::Org;
use crate::store_error::{from_sdk, SdkResultExt, StoreError};
use crate::table::{GSI1, PK, SK};
use crate::AppState;

/// The GSI1 partition listing every organization with snapshots.
pub(super) const REGISTRY: &str = "SCHEDULED#ORGS";
/// The watermark before any export.
pub(super) const EPOCH: &str = "1970-01-01T00:00:00.000Z";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn state_key(org: &Org) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(crate::keys::schedule(org))), (SK.to_string(), s("SCHEDULE"))])
}

/// Makes sure `org` is in the scheduled export's registry (once per organization per process).
pub async fn register(state: &AppState, org: &Org) -> Result<(), StoreError> {
    if state.registered.lock().map(|set| set.contains(org.as_str())).unwrap_or(false) {
        return Ok(());
    }
    state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(state_key(org)))
        .update_expression("SET #gpk = :registry, #gsk = :org, organizationId = :org")
        .expression_attribute_names("#gpk", GSI1.pk)
        .expression_attribute_names("#gsk", GSI1.sk)
        .expression_attribute_values(":registry", s(REGISTRY))
        .expression_attribute_values(":org", s(org.as_str()))
        .send()
        .await
        .ctx("register organization for scheduled exports")?;
    if let Ok(mut set) = state.registered.lock() {
        set.insert(org.as_str().to_string());
    }
    Ok(())
}

/// Moves `org`'s watermark forward to `up_to` (never back).
pub async fn advance_watermark(state: &AppState, org: &Org, up_to: &str) -> Result<(), StoreError> {
    let result = state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(state_key(org)))
        .update_expression("SET watermark = :w")
        .condition_expression("attribute_not_exists(watermark) OR watermark < :w")
        .expression_attribute_values(":w", s(up_to))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
        Err(e) => Err(from_sdk("advance scheduled export watermark", e)),
    }
}

/// `org`'s watermark: everything changed up to it has been exported.
pub async fn watermark(state: &AppState, org: &Org) -> Result<Option<String>, StoreError> {
    Ok(schedule_state(state, org).await?.watermark)
}

/// An organization's schedule state, as read (strongly consistent).
#[derive(Debug, Default)]
pub(super) struct ScheduleState {
    /// Everything changed up to it has been exported.
    pub watermark: Option<String>,
    /// The scheduled job that last claimed the organization's next window.
    pub active_job: Option<String>,
    /// When it claimed it.
    pub claimed_at: Option<String>,
}

impl ScheduleState {
    fn of(item: Option<&HashMap<String, AttributeValue>>) -> Self {
        let text = |k: &str| item.and_then(|i| i.get(k)).and_then(|v| v.as_s().ok()).cloned();
        Self { watermark: text("watermark"), active_job: text("activeJob"), claimed_at: text("claimedAt") }
    }
}

/// `org`'s schedule state (the index may lag the table: this reads the item itself).
pub(super) async fn schedule_state(state: &AppState, org: &Org) -> Result<ScheduleState, StoreError> {
    let out = state
        .dynamo
        .get_item()
        .table_name(&state.config.table_name)
        .set_key(Some(state_key(org)))
        .consistent_read(true)
        .send()
        .await
        .ctx("read scheduled export state")?;
    Ok(ScheduleState::of(out.item.as_ref()))
}

/// Claims `org`'s next window for `job`, if the active job is still `seen` (the one read
/// before): two runs' batches at once claim it one at a time. Answers the state as of the
/// claim (its watermark is the window's start), or `None` when another claim came first.
pub(super) async fn claim(
    state: &AppState,
    org: &Org,
    job: &str,
    seen: Option<&str>,
) -> Result<Option<ScheduleState>, StoreError> {
    let request = state
        .dynamo
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(state_key(org)))
        .update_expression("SET activeJob = :job, claimedAt = :now")
        .expression_attribute_values(":job", s(job))
        .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
    let request = match seen {
        Some(seen) => request.condition_expression("activeJob = :seen").expression_attribute_values(":seen", s(seen)),
        None => request.condition_expression("attribute_exists(PK) AND attribute_not_exists(activeJob)"),
    };
    match request.send().await {
        Ok(out) => Ok(Some(ScheduleState::of(out.attributes.as_ref()))),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
        Err(e) => Err(from_sdk("claim scheduled export window", e)),
    }
}

/// One page of the registry after `after` (an organization id; `None` from the start): the
/// organizations, in id order, and whether the registry goes on.
pub(super) async fn page(state: &AppState, after: Option<&str>, limit: i32) -> Result<(Vec<String>, bool), StoreError> {
    let mut query = state
        .dynamo
        .query()
        .table_name(&state.config.table_name)
        .index_name(GSI1.name)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", GSI1.pk)
        .expression_attribute_values(":pk", s(REGISTRY))
        .limit(limit);
    if let Some(org) = after {
        // An index's start key holds the index's keys and the table's.
        let org = Org::stored(org);
        let mut start = state_key(&org);
        start.insert(GSI1.pk.to_string(), s(REGISTRY));
        start.insert(GSI1.sk.to_string(), s(org.as_str()));
        query = query.set_exclusive_start_key(Some(start));
    }
    let out = query.send().await.ctx("list organizations")?;
    let orgs =
        out.items().iter().filter_map(|item| item.get("organizationId").and_then(|v| v.as_s().ok()).cloned()).collect();
    Ok((orgs, out.last_evaluated_key().is_some_and(|k| !k.is_empty())))
}
