//! `GET /api/training/export`: every matching snapshot, in Tether's JSON payload, JSONL,
//! fine-tune-ready chat JSONL (`openai`) or CSV.

use serde::Serialize;

use super::counts::SkipReason;
use super::spec::ExportSpec;
pub use super::spec::Format;
use super::split::SplitSpec;
use super::{csv_record, examples, Counts, BOM};
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
    match examples::Role::of(m) {
        examples::Role::User => "user",
        examples::Role::Assistant => "assistant",
    }
}

// The answers below are typed, borrowing from the snapshot. Their fields are declared in
// alphabetical order: earlier releases wrote them through serde_json's sorted maps, and files
// stay byte for byte what they were.

/// Tether's `TrainingExportItem`. Its schema makes `customer.email` and `metadata.category`
/// nullable and the other optional fields plain strings, so those are left out when absent.
#[derive(Debug, Serialize)]
pub struct ExportItem<'a> {
    conversation: Vec<ExportMessage<'a>>,
    customer: Customer<'a>,
    id: &'a str,
    metadata: Metadata<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportMessage<'a> {
    content: &'a str,
    role: &'static str,
    sender_type: &'a str,
    timestamp: &'a str,
}

#[derive(Debug, Serialize)]
struct Customer<'a> {
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    category: Option<&'a str>,
    date_range: DateRange<'a>,
    message_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    notes: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quality: Option<&'a str>,
    tags: &'a [String],
}

#[derive(Debug, Serialize)]
struct DateRange<'a> {
    end: Option<&'a str>,
    start: Option<&'a str>,
}

/// The export item of a snapshot and its messages.
pub fn export_item<'a>(s: &'a Snapshot, messages: &'a [SnapshotMessage]) -> ExportItem<'a> {
    ExportItem {
        conversation: messages
            .iter()
            .map(|m| ExportMessage {
                content: &m.content,
                role: role(m),
                sender_type: &m.sender_type,
                timestamp: &m.timestamp,
            })
            .collect(),
        customer: Customer {
            email: s.customer_email.as_deref(),
            name: s.customer_name.as_deref(),
            phone: s.customer_phone.as_deref(),
        },
        id: &s.id,
        metadata: Metadata {
            category: s.category.as_deref(),
            date_range: DateRange {
                end: s.conversation_end_date.as_deref(),
                start: s.conversation_start_date.as_deref(),
            },
            message_count: s.message_count,
            notes: s.notes.as_deref(),
            quality: s.quality.as_deref(),
            tags: &s.tags,
        },
    }
}

/// Encodes snapshots one at a time in a format.
pub struct Encoder {
    format: Format,
    system: Option<String>,
    /// What was written and skipped.
    pub counts: Counts,
}

impl Encoder {
    /// An encoder for `format` (`system` only applies to the chat formats).
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
                #[derive(Serialize)]
                #[serde(rename_all = "camelCase")]
                struct Head<'a> {
                    export_date: &'a str,
                    organization_id: &'a str,
                }
                let head = Head { export_date, organization_id: org };
                let mut head = serde_json::to_vec(&head).map_err(|e| ApiError::internal("encode export", e))?;
                head.pop(); // reopen the object: `data` streams, `totalSnapshots` comes last
                head.extend_from_slice(br#","data":["#);
                head
            }
            Format::Csv => {
                let mut head = BOM.to_vec();
                head.extend(csv_record(CSV_COLUMNS.iter().copied())?);
                head
            }
            Format::Jsonl | Format::OpenAi | Format::Bedrock | Format::Vertex | Format::ShareGpt => Vec::new(),
        })
    }

    /// The turns a chat format writes of `messages`, or why it leaves them out (`None`: the
    /// format writes snapshots, not turns).
    pub fn turns<'m>(&self, messages: &'m [SnapshotMessage]) -> Option<Result<Vec<examples::Turn<'m>>, SkipReason>> {
        let rules = examples::rules(self.format).filter(|_| self.format.is_chat())?;
        Some(examples::shape(messages, self.system.as_deref(), &rules))
    }

    /// The bytes of one snapshot (empty when it is skipped).
    pub fn item(&mut self, s: &Snapshot, messages: &[SnapshotMessage]) -> Result<Vec<u8>, ApiError> {
        fn encode(v: &impl Serialize) -> Result<Vec<u8>, ApiError> {
            serde_json::to_vec(v).map_err(|e| ApiError::internal("encode export", e))
        }
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
            Format::OpenAi | Format::Bedrock | Format::Vertex | Format::ShareGpt => {
                let Some(rules) = examples::rules(self.format) else { return Ok(Vec::new()) };
                let system = self.system.as_deref();
                match examples::shape(messages, system, &rules) {
                    Err(reason) => {
                        self.counts.skip(reason);
                        return Ok(Vec::new());
                    }
                    Ok(turns) => {
                        let mut out = examples::encode(self.format, &turns, system)
                            .map_err(|e| ApiError::internal("encode export", e))?;
                        out.push(b'\n');
                        out
                    }
                }
            }
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
pub fn training_spec(
    format: Format,
    filters: Filters,
    system: Option<String>,
    split: Option<SplitSpec>,
) -> Result<ExportSpec, ApiError> {
    let system = system.filter(|s| !s.trim().is_empty());
    if system.as_ref().is_some_and(|s| s.chars().count() > MAX_SYSTEM_CHARS) {
        return Err(ApiError::invalid("system", format!("must be at most {MAX_SYSTEM_CHARS} characters")));
    }
    if let (Format::Bedrock, Some(prompt)) = (format, &system) {
        // Every example would be left out: say so now rather than write an empty file.
        let lower = prompt.to_lowercase();
        if let Some(r) = examples::BEDROCK_RESERVED.iter().find(|r| lower.contains(*r)) {
            return Err(ApiError::invalid("system", format!("holds `{r}`, which Bedrock reserves (in any case)")));
        }
    }
    let split = split.map(SplitSpec::validate).transpose()?;
    Ok(ExportSpec::Training { format, filters, system, changed: None, split, redact: None, dedup: Default::default() })
}
