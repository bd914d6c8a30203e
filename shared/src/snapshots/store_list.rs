//! Snapshot lists and counts over the per-filter indexes, and the changed-since query of
//! scheduled exports.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::query::builders::QueryFluentBuilder,
    types::{AttributeValue, ReturnConsumedCapacity, Select},
};
use chrono::{DateTime, Utc};

use super::model::Snapshot;
use super::store::{partition, s, SnapshotStore, HEADER_ATTRIBUTES, META, TOMBSTONE};
use super::store_filters::{Archived, Filters, ReadStats};
use super::store_filters::{Change, DELETED};
use crate::keys::{self, Org};
use crate::store_error::{SdkResultExt, StoreError};
use crate::table::{IndexDef, GSI2, GSI3, GSI5, PK, SK, TTL};

/// The smallest id made at or after `t` (`high == false`), or the largest made at or before it:
/// ids name their creation instant to the millisecond (see [`crate::ids`]), so a window on
/// `createdAt` is exactly this range of ids.
fn id_bound(t: DateTime<Utc>, high: bool) -> String {
    let t = if high { floor_ms(t) } else { ceil_ms(t) };
    format!("{}{}", crate::ids::time_prefix(t), if high { "ffffffffffff" } else { "000000000000" })
}

/// `t` rounded down to its millisecond (stored timestamps have milliseconds).
fn floor_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `t` rounded up to a whole millisecond: `createdAt >= t` is `createdAt >= ceil_ms(t)`.
fn ceil_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_ms(t);
    if floor < t {
        floor + chrono::Duration::milliseconds(1)
    } else {
        floor
    }
}

/// The id just before `id` (ids are 96-bit hex numbers), for an exclusive upper bound.
fn predecessor(id: &str) -> Option<String> {
    let n = u128::from_str_radix(id, 16).ok()?;
    Some(format!("{:024x}", n.checked_sub(1)?))
}

impl SnapshotStore<'_> {
    /// One page of snapshots, newest first: `limit` items and the id to continue after.
    /// Each archive partition is one Query on the most selective index; other filters narrow it.
    pub async fn list(
        &self,
        org: &Org,
        filters: &Filters,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Snapshot>, Option<String>, ReadStats), StoreError> {
        let archived: &[bool] = match filters.archived {
            Archived::No => &[false],
            Archived::Yes => &[true],
            Archived::All => &[false, true],
        };
        let mut stats = ReadStats::default();
        let mut all = Vec::new();
        for &a in archived {
            let (mut items, part) = self.query_partition(org, filters, a, limit + 1, after).await?;
            stats.scanned += part.scanned;
            stats.capacity += part.capacity;
            all.append(&mut items);
        }
        // Both partitions are sorted by id descending; merged, the first `limit` are the page.
        all.sort_by(|a, b| b.id.cmp(&a.id));
        let next = if all.len() > limit { all.get(limit - 1).map(|s| s.id.clone()) } else { None };
        all.truncate(limit);
        Ok((all, next, stats))
    }

    /// The Query of one archive partition on the most selective index, newest first, with the
    /// other filters as a filter expression; `after` (exclusive) continues a listing.
    fn partition_query(&self, org: &Org, f: &Filters, archived: bool, after: Option<&str>) -> QueryFluentBuilder {
        let (index, value) = f.index();
        let lo = f.from.map(|t| id_bound(t, false)).unwrap_or_else(|| "0".repeat(24));
        let mut hi = f.to.map(|t| id_bound(t, true)).unwrap_or_else(|| "f".repeat(24));
        if let Some(after) = after.and_then(predecessor) {
            hi = hi.min(after);
        }
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":pk".into(), s(partition(org, archived, index, &value))),
            (":lo".into(), s(lo)),
            (":hi".into(), s(hi)),
        ]);
        let filter = filter_expression(f, index, &mut values);
        self.client
            .query()
            .table_name(self.table)
            .index_name(index.name)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", index.pk)
            .expression_attribute_names("#sk", index.sk)
            .set_expression_attribute_values(Some(values))
            .set_filter_expression((!filter.is_empty()).then_some(filter))
            .scan_index_forward(false)
    }

    async fn query_partition(
        &self,
        org: &Org,
        f: &Filters,
        archived: bool,
        want: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Snapshot>, ReadStats), StoreError> {
        let mut query = self.partition_query(org, f, archived, after);
        let mut projection = Vec::with_capacity(HEADER_ATTRIBUTES.len());
        for (i, name) in HEADER_ATTRIBUTES.iter().enumerate() {
            query = query.expression_attribute_names(format!("#h{i}"), *name);
            projection.push(format!("#h{i}"));
        }
        let query = query.projection_expression(projection.join(","));
        let mut out = Vec::new();
        let mut stats = ReadStats::default();
        let mut start = None;
        loop {
            let page = query
                .clone()
                .limit((want - out.len()).max(1) as i32)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .ctx("list snapshots")?;
            stats.scanned += i64::from(page.scanned_count);
            stats.capacity += page.consumed_capacity.as_ref().and_then(|c| c.capacity_units).unwrap_or(0.0);
            let items: Vec<Snapshot> = serde_dynamo::from_items(page.items.unwrap_or_default())
                .map_err(|e| StoreError::fault("decode snapshots", e))?;
            out.extend(items);
            start = page.last_evaluated_key;
            if out.len() >= want || start.is_none() {
                break;
            }
        }
        out.truncate(want);
        Ok((out, stats))
    }

    /// One page of an organization's changes in `(after, up_to]`, oldest first: snapshots
    /// created or changed (archived ones included) and deletion records (unexpired), continuing
    /// after the position `start` (a [`Change::position`], exclusive). Answers the page and
    /// whether more may follow.
    pub async fn changed(
        &self,
        org: &Org,
        after: &str,
        up_to: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Change>, bool), StoreError> {
        // `<ts>#~` sorts after every `<ts>#<id>`, so the bounds are exclusive / inclusive.
        let (key, sk) = match start.map(|p| p.strip_suffix(DELETED).map_or((p, META), |k| (k, TOMBSTONE))) {
            Some((key, sk)) => (Some(key), sk),
            None => (None, META),
        };
        let lo = key.map_or_else(|| format!("{after}#~"), str::to_string);
        let exclusive_start = key.and_then(|key| {
            let id = key.split_once('#')?.1;
            Some(HashMap::from([
                (PK.to_string(), s(keys::snapshot(org, id))),
                (SK.to_string(), s(sk)),
                (GSI5.pk.to_string(), s(keys::changed(org))),
                (GSI5.sk.to_string(), s(key)),
            ]))
        });
        let out = self
            .client
            .query()
            .table_name(self.table)
            .index_name(GSI5.name)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", GSI5.pk)
            .expression_attribute_names("#sk", GSI5.sk)
            .expression_attribute_values(":pk", s(keys::changed(org)))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(format!("{up_to}#~")))
            .set_exclusive_start_key(exclusive_start)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .ctx("list changed snapshots")?;
        let now = crate::auth::now_epoch();
        let mut changes = Vec::new();
        for item in out.items.unwrap_or_default() {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            if item.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str) != Some(TOMBSTONE) {
                let snapshot = serde_dynamo::from_item(item).map_err(|e| StoreError::fault("decode snapshots", e))?;
                changes.push(Change::Snapshot(Box::new(snapshot)));
                continue;
            }
            // DynamoDB removes expired items within days: an expired record is gone already.
            let expires = item.get(TTL).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok());
            if expires.is_none_or(|t| t > now) {
                changes.push(Change::Deleted { id: text("_id"), at: text("deletedAt"), created: text("createdAt") });
            }
        }
        Ok((changes, out.last_evaluated_key.is_some()))
    }

    /// How many snapshots `filters` match (a `COUNT` query per archive partition).
    pub async fn count(&self, org: &Org, filters: &Filters) -> Result<u64, StoreError> {
        let archived: &[bool] = match filters.archived {
            Archived::No => &[false],
            Archived::Yes => &[true],
            Archived::All => &[false, true],
        };
        let mut total = 0u64;
        for &a in archived {
            let q = self.partition_query(org, filters, a, None);
            let mut start = None;
            loop {
                let page = q
                    .clone()
                    .select(Select::Count)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .ctx("count snapshots")?;
                total += page.count.max(0) as u64;
                start = page.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(total)
    }
}

/// The filter expression for what `index` does not select (the filters narrowing its Query),
/// its values added to `values`.
fn filter_expression(f: &Filters, index: &IndexDef, values: &mut HashMap<String, AttributeValue>) -> String {
    let mut filters = Vec::new();
    if let (Some(q), false) = (&f.quality, index.name == GSI2.name) {
        filters.push("quality = :q");
        values.insert(":q".into(), s(q));
    }
    if let (Some(c), false) = (&f.category, index.name == GSI3.name) {
        filters.push("category = :c");
        values.insert(":c".into(), s(c));
    }
    let tag_filters: Vec<String> = (0..f.tags.len()).map(|i| format!("contains(tags, :t{i})")).collect();
    for (i, t) in f.tags.iter().enumerate() {
        values.insert(format!(":t{i}"), s(t));
    }
    // The id range is exact for ids that name their instant; `createdAt` is what `from` /
    // `to` mean, so it is checked too (it costs no read: a filter on items already read).
    if let Some(from) = f.from {
        filters.push("createdAt >= :from");
        values.insert(":from".into(), s(crate::time::to_rfc3339(ceil_ms(from))));
    }
    if let Some(to) = f.to {
        filters.push("createdAt <= :to");
        values.insert(":to".into(), s(crate::time::to_rfc3339(floor_ms(to))));
    }
    filters.into_iter().map(str::to_string).chain(tag_filters).collect::<Vec<_>>().join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predecessor_is_the_id_just_before() {
        assert_eq!(predecessor("000000000000000000000010").as_deref(), Some("00000000000000000000000f"));
        assert_eq!(predecessor("000000000000000000000000"), None);
    }

    #[test]
    fn id_bounds_are_exactly_the_created_at_window() {
        let t = |s: &str| crate::time::parse_rfc3339(s).unwrap();
        let id = crate::ids::object_id_at(t("2026-11-20T10:00:37.279Z"));
        let inside = |from: &str, to: &str| id_bound(t(from), false) <= id && id <= id_bound(t(to), true);
        assert!(inside("2026-11-20T10:00:37.000Z", "2026-11-20T10:00:38Z"), "from at the start of its second");
        assert!(inside("2026-11-20T10:00:37.279Z", "2026-11-20T10:00:37.279Z"), "both bounds inclusive");
        assert!(!inside("2026-11-20T10:00:37.280Z", "2026-11-20T10:01:00Z"));
        assert!(!inside("2026-11-20T10:00:00Z", "2026-11-20T10:00:36.999Z"), "to before it");
        assert!(!inside("2026-11-20T10:00:37.2791Z", "2026-11-20T10:01:00Z"), "from after it by less than 1 ms");
        assert!(inside("2026-11-20T10:00:00Z", "2026-11-20T10:00:37.2799Z"), "to after it by less than 1 ms");
    }
}
