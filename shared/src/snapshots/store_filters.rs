//! The filters of a snapshot list, count or export, and the read statistics of a read.

use chrono::{DateTime, Utc};

use super::model::{Snapshot, MAX_LABEL_CHARS};
use crate::error::ApiError;
use crate::table::{IndexDef, GSI1, GSI2, GSI3, GSI4};
use crate::validate::{Issues, MAX_TAGS, MAX_TAG_CHARS};

/// Which snapshots a list or an export wants.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    /// Exact quality.
    pub quality: Option<String>,
    /// Exact category.
    pub category: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Archive state.
    pub archived: Archived,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created at or before.
    pub to: Option<DateTime<Utc>>,
    /// Exact contact.
    pub contact_id: Option<String>,
}

/// The `archived` filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Archived {
    /// Only snapshots not archived (the default).
    #[default]
    No,
    /// Only archived snapshots.
    Yes,
    /// Both.
    All,
}

impl Filters {
    /// Checks a request's filters as sent and normalises them (trimmed, empty values and
    /// repeated tags dropped), naming each problem in one 400; `tag_field` is how the request
    /// names the tags. A snapshot holds at most [`MAX_TAGS`] tags of [`MAX_TAG_CHARS`]
    /// characters and labels of [`MAX_LABEL_CHARS`]: past those nothing can match, and every tag
    /// is a clause of the storage filter expression, which DynamoDB caps at 4 KB, so they are
    /// refused here rather than failing in storage.
    pub fn validate(mut self, tag_field: &str) -> Result<Self, ApiError> {
        let mut issues = Issues::default();
        if self.tags.len() > MAX_TAGS {
            issues.push(
                tag_field,
                format!(
                    "at most {MAX_TAGS} values (a snapshot holds at most {MAX_TAGS} tags); {} given",
                    self.tags.len()
                ),
            );
        }
        if self.tags.iter().any(|t| t.chars().count() > MAX_TAG_CHARS) {
            issues.push(tag_field, format!("each tag must be at most {MAX_TAG_CHARS} characters"));
        }
        issues.text("quality", self.quality.as_deref(), MAX_LABEL_CHARS);
        issues.text("category", self.category.as_deref(), MAX_LABEL_CHARS);
        let trimmed = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut seen = std::collections::HashSet::new();
        self.tags = self
            .tags
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty() && seen.insert(*t))
            .map(str::to_string)
            .collect();
        self.quality = trimmed(self.quality);
        self.category = trimmed(self.category);
        self.contact_id = trimmed(self.contact_id);
        if self.contact_id.as_deref().is_some_and(|c| !crate::ids::is_valid_id(c)) {
            issues.push("contactId", "is not a valid id");
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                issues.push("from", "must not be after `to`");
            }
        }
        issues.finish("Invalid filters")?;
        Ok(self)
    }

    /// A stable description of the filters, so a cursor only continues the same query.
    pub fn scope(&self) -> String {
        format!(
            "snapshots:{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.quality, self.category, self.tags, self.archived, self.from, self.to, self.contact_id
        )
    }

    /// The most selective index the filters allow, and its key value.
    pub(super) fn index(&self) -> (&'static IndexDef, String) {
        if let Some(c) = &self.contact_id {
            (&GSI4, c.clone())
        } else if let Some(c) = &self.category {
            (&GSI3, c.clone())
        } else if let Some(q) = &self.quality {
            (&GSI2, q.clone())
        } else {
            (&GSI1, String::new())
        }
    }
}

/// Read statistics of one read (a list page, a batch of messages), for logs, tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadStats {
    /// Items read: by the key conditions before any filter (`ScannedCount`), or by key.
    pub scanned: i64,
    /// Read capacity reported by DynamoDB (`ReturnConsumedCapacity`).
    pub capacity: f64,
}

/// GSI5's sort key: `<updatedAt>#<id>` (timestamps are fixed-width RFC 3339, so they sort).
pub fn changed_key(updated_at: &str, id: &str) -> String {
    format!("{updated_at}#{id}")
}

/// The suffix of a deletion record's position (a snapshot's is its GSI5 sort key).
pub(super) const DELETED: &str = "#deleted";

/// One change of an organization's snapshots, as the scheduled export reads them.
#[derive(Debug, Clone)]
pub enum Change {
    /// A snapshot created or changed (possibly archived).
    Snapshot(Box<Snapshot>),
    /// A snapshot deleted at `at`.
    Deleted {
        /// Its id.
        id: String,
        /// When (RFC 3339).
        at: String,
        /// When it was created (RFC 3339).
        created: String,
    },
}

impl Change {
    /// Where a read continues after this change.
    pub fn position(&self) -> String {
        match self {
            Self::Snapshot(s) => changed_key(&s.updated_at, &s.id),
            Self::Deleted { id, at, .. } => format!("{}{DELETED}", changed_key(at, id)),
        }
    }
}
