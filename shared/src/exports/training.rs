//! `GET /api/training/export`: every matching snapshot, in Tether's JSON payload, JSONL,
//! fine-tune-ready chat JSONL (`openai`) or CSV.

use serde_json::{json, Value};

use super::spec::ExportSpec;
pub use super::spec::Format;
use super::{csv_record, Counts, BOM};
use crate::error::ApiError;
use crate::snapshots::store::Filters;
use crate::snapshots::{Snapshot, SnapshotMessage};

/// CSV columns of the training export, in order (one row per message).
pub const CSV_COLUMNS: &[&str] = &[
    "snapshotId",
    "contactId",
    "customerName",
    "customerPhone",
    "customerEmail",
    "quality",
    "category",
    "tags",
    "notes",
    "isArchived",
    "createdAt",
    "messageIndex",
    "messageId",
    "role",
    "senderType",
    "timestamp",
    "content",
];

fn role(m: &SnapshotMessage) -> &'static str {
    // Tether: the business side is `assistant`, the customer is `user`.
    if m.sender == "contact" {
        "user"
    } else {
        "assistant"
    }
}

/// Tether's `TrainingExportItem`. Its schema makes `customer.email` and `metadata.category`
/// nullable and the other optional fields plain strings, so those are left out when absent.
pub fn export_item(s: &Snapshot, messages: &[SnapshotMessage]) -> Value {
    let mut customer = serde_json::Map::new();
    if let Some(name) = &s.customer_name {
        customer.insert("name".into(), json!(name));
    }
    if let Some(phone) = &s.customer_phone {
        customer.insert("phone".into(), json!(phone));
    }
    customer.insert("email".into(), json!(s.customer_email));
    let mut metadata = serde_json::Map::new();
    if let Some(quality) = &s.quality {
        metadata.insert("quality".into(), json!(quality));
    }
    metadata.insert("category".into(), json!(s.category));
    metadata.insert("tags".into(), json!(s.tags));
    if let Some(notes) = &s.notes {
        metadata.insert("notes".into(), json!(notes));
    }
    metadata.insert("messageCount".into(), json!(s.message_count));
    metadata.insert("dateRange".into(), json!({ "start": s.conversation_start_date, "end": s.conversation_end_date }));
    json!({
        "id": s.id,
        "customer": customer,
        "conversation": messages.iter().map(|m| json!({
            "role": role(m), "content": m.content, "timestamp": m.timestamp, "senderType": m.sender_type,
        })).collect::<Vec<_>>(),
        "metadata": metadata,
    })
}

/// A chat fine-tuning example: consecutive messages of one role merged, empty ones dropped;
/// `None` when it has no assistant message (such examples are skipped and counted).
pub fn openai_example(messages: &[SnapshotMessage], system: Option<&str>) -> Option<Value> {
    let mut turns: Vec<(&str, String)> = Vec::new();
    for m in messages.iter().filter(|m| !m.content.trim().is_empty()) {
        match turns.last_mut() {
            Some((r, content)) if *r == role(m) => {
                content.push('\n');
                content.push_str(&m.content);
            }
            _ => turns.push((role(m), m.content.clone())),
        }
    }
    if !turns.iter().any(|(r, _)| *r == "assistant") {
        return None;
    }
    let mut out: Vec<Value> = system.map(|s| json!({ "role": "system", "content": s })).into_iter().collect();
    out.extend(turns.into_iter().map(|(r, c)| json!({ "role": r, "content": c })));
    Some(json!({ "messages": out }))
}

/// Encodes snapshots one at a time in a format.
pub struct Encoder {
    format: Format,
    system: Option<String>,
    /// What was written and skipped.
    pub counts: Counts,
}

impl Encoder {
    /// An encoder for `format` (`system` only applies to `openai`).
    pub fn new(format: Format, system: Option<String>) -> Self {
        Self::resume(format, system, Counts::default())
    }

    /// An encoder continuing an export that has written `counts` so far.
    pub fn resume(format: Format, system: Option<String>, counts: Counts) -> Self {
        Self { format, system, counts }
    }

    /// The bytes before the first item.
    pub fn start(&self, export_date: &str, org: &str) -> Result<Vec<u8>, ApiError> {
        Ok(match self.format {
            Format::Json => {
                let mut head = serde_json::to_vec(&json!({ "exportDate": export_date, "organizationId": org }))
                    .map_err(|e| ApiError::internal("encode export", e))?;
                head.pop(); // reopen the object: `data` streams, `totalSnapshots` comes last
                head.extend_from_slice(br#","data":["#);
                head
            }
            Format::Csv => {
                let mut head = BOM.to_vec();
                head.extend(csv_record(CSV_COLUMNS.iter().copied())?);
                head
            }
            Format::Jsonl | Format::OpenAi => Vec::new(),
        })
    }

    /// The bytes of one snapshot (empty when it is skipped).
    pub fn item(&mut self, s: &Snapshot, messages: &[SnapshotMessage]) -> Result<Vec<u8>, ApiError> {
        let encode = |v: &Value| serde_json::to_vec(v).map_err(|e| ApiError::internal("encode export", e));
        let out = match self.format {
            Format::Json => {
                let mut out = if self.counts.items > 0 { b",".to_vec() } else { Vec::new() };
                out.extend(encode(&export_item(s, messages))?);
                out
            }
            Format::Jsonl => {
                let mut out = encode(&export_item(s, messages))?;
                out.push(b'\n');
                out
            }
            Format::OpenAi => match openai_example(messages, self.system.as_deref()) {
                None => {
                    self.counts.skipped += 1;
                    return Ok(Vec::new());
                }
                Some(example) => {
                    let mut out = encode(&example)?;
                    out.push(b'\n');
                    out
                }
            },
            Format::Csv => {
                let mut out = Vec::new();
                let tags = s.tags.join("|");
                let created = s.created_at.as_str();
                for (i, m) in messages.iter().enumerate() {
                    let index = i.to_string();
                    out.extend(csv_record([
                        s.id.as_str(),
                        s.contact.id.as_str(),
                        s.customer_name.as_deref().unwrap_or(""),
                        s.customer_phone.as_deref().unwrap_or(""),
                        s.customer_email.as_deref().unwrap_or(""),
                        s.quality.as_deref().unwrap_or(""),
                        s.category.as_deref().unwrap_or(""),
                        tags.as_str(),
                        s.notes.as_deref().unwrap_or(""),
                        if s.is_archived { "true" } else { "false" },
                        created,
                        index.as_str(),
                        m.id.as_str(),
                        role(m),
                        m.sender_type.as_str(),
                        m.timestamp.as_str(),
                        m.content.as_str(),
                    ])?);
                }
                out
            }
        };
        self.counts.items += 1;
        Ok(out)
    }

    /// The bytes after the last item.
    pub fn finish(&self) -> Vec<u8> {
        match self.format {
            Format::Json => format!(r#"],"totalSnapshots":{}}}"#, self.counts.items).into_bytes(),
            _ => Vec::new(),
        }
    }
}

/// Largest `system` prompt, in characters.
pub const MAX_SYSTEM_CHARS: usize = 10_000;

/// Validates the training export's parameters into its spec.
/// Both the synchronous route and export jobs come through here, so equal parameters give
/// byte-identical files: a blank `system` is left out (an empty system message is an invalid
/// fine-tuning example), whichever route it came by.
pub fn training_spec(format: Format, filters: Filters, system: Option<String>) -> Result<ExportSpec, ApiError> {
    let system = system.filter(|s| !s.trim().is_empty());
    if system.as_ref().is_some_and(|s| s.chars().count() > MAX_SYSTEM_CHARS) {
        return Err(ApiError::invalid("system", format!("must be at most {MAX_SYSTEM_CHARS} characters")));
    }
    Ok(ExportSpec::Training { format, filters, system, changed: None })
}
