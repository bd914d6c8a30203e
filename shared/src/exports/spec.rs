//! What an export is: its source, its filters and its file format, as the routes take them and
//! as an export job stores them.

use serde::{Deserialize, Serialize};

pub use super::dedup::Dedup;
use super::redact::Redaction;
use super::split::{Split, SplitSpec};
use crate::error::ApiError;
use crate::snapshots::store::Filters;

/// The training export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tether's `TrainingExportPayload`.
    Json,
    /// One export item per line.
    Jsonl,
    /// One `{"messages": [...]}` chat example per line (OpenAI's and TRL's conversational format).
    OpenAi,
    /// One row per message.
    Csv,
    /// Amazon Bedrock's conversation schema (Nova model customization), one example per line.
    Bedrock,
    /// Google Vertex AI's Gemini supervised tuning, one example per line.
    Vertex,
    /// ShareGPT (`{"conversations": [{"from", "value"}]}`), one example per line.
    #[serde(rename = "sharegpt")]
    ShareGpt,
}

impl Format {
    /// Parses `format` (default `json`).
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("json") => Ok(Self::Json),
            Some("jsonl") => Ok(Self::Jsonl),
            Some("openai") => Ok(Self::OpenAi),
            Some("csv") => Ok(Self::Csv),
            Some("bedrock") => Ok(Self::Bedrock),
            Some("vertex") => Ok(Self::Vertex),
            Some("sharegpt") => Ok(Self::ShareGpt),
            Some(_) => {
                Err(ApiError::invalid("format", "must be json, jsonl, openai, bedrock, vertex, sharegpt or csv"))
            }
        }
    }
    /// Whether the format writes fine-tune examples (checked per target) rather than snapshots.
    pub fn is_chat(self) -> bool {
        matches!(self, Self::OpenAi | Self::Bedrock | Self::Vertex | Self::ShareGpt)
    }
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Jsonl | Self::OpenAi | Self::Bedrock | Self::Vertex | Self::ShareGpt => "jsonl",
            Self::Csv => "csv",
        }
    }
    /// Content type of the file.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Jsonl | Self::OpenAi | Self::Bedrock | Self::Vertex | Self::ShareGpt => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Conversation export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvoFormat {
    /// Convocore's `{success, message, data}` JSON.
    Json,
    /// One row per message.
    Csv,
}

impl ConvoFormat {
    /// Parses `format` (default `json`).
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("json") => Ok(Self::Json),
            Some("csv") => Ok(Self::Csv),
            Some(_) => Err(ApiError::invalid("format", "must be json or csv")),
        }
    }
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }
    /// Content type of the file.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A change window of the scheduled export: snapshots changed in `(after, upTo]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Exclusive lower bound (RFC 3339, the previous watermark).
    pub after: String,
    /// Inclusive upper bound (RFC 3339, the new watermark once exported).
    pub up_to: String,
}

/// An export's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "camelCase")]
pub enum ExportSpec {
    /// Training snapshots (`GET /api/training/export`).
    #[serde(rename_all = "camelCase")]
    Training {
        /// File format.
        format: Format,
        /// Which snapshots.
        filters: Filters,
        /// System prompt of `openai` examples.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        /// Scheduled exports: only non-archived snapshots changed in this window, oldest change first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed: Option<Window>,
        /// Export jobs: one file per split, each group of examples whole in one of them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split: Option<SplitSpec>,
        /// PII redaction (`redact=pii`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redact: Option<Redaction>,
        /// Duplicate removal.
        #[serde(default, skip_serializing_if = "Dedup::is_none")]
        dedup: Dedup,
    },
    /// An agent's conversations (`GET /agents/{agentId}/convos/export`).
    #[serde(rename_all = "camelCase")]
    Conversations {
        /// The agent.
        agent_id: String,
        /// File format.
        format: ConvoFormat,
        /// Last active at or after (RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// Last active at or before (RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// At most this many conversations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        /// PII redaction (`redact=pii`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redact: Option<Redaction>,
    },
    /// One conversation (`GET /agents/{agentId}/convos/{convoId}/export`).
    #[serde(rename_all = "camelCase")]
    Conversation {
        /// The agent.
        agent_id: String,
        /// The conversation.
        convo_id: String,
        /// File format.
        format: ConvoFormat,
        /// PII redaction (`redact=pii`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redact: Option<Redaction>,
    },
}

impl ExportSpec {
    /// The object-key segment of this kind of export.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Training { changed: Some(_), .. } => "scheduled",
            Self::Training { .. } => "training",
            Self::Conversations { .. } | Self::Conversation { .. } => "convos",
        }
    }

    /// The download's file name, stamped with the export's creation time.
    pub fn file_name(&self, created: chrono::DateTime<chrono::Utc>) -> String {
        let millis = created.timestamp_millis();
        match self {
            Self::Training { format, changed: Some(_), .. } => {
                format!("training-changes-{}.{}", created.format("%Y-%m-%dT%H%M%SZ"), format.extension())
            }
            Self::Training { format, .. } => format!("training-data-{millis}.{}", format.extension()),
            Self::Conversations { agent_id, format, .. } => {
                format!("conversations-{agent_id}-{millis}.{}", format.extension())
            }
            Self::Conversation { convo_id, format, .. } => {
                format!("conversation-{convo_id}-{millis}.{}", format.extension())
            }
        }
    }

    /// The source as the API names it: `training` or `conversations`.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Training { .. } => "training",
            Self::Conversations { .. } | Self::Conversation { .. } => "conversations",
        }
    }

    /// The redaction the caller asked for (see [`super::scrub::effective`] for what runs).
    pub fn redaction(&self) -> Option<&Redaction> {
        match self {
            Self::Training { redact, .. } | Self::Conversations { redact, .. } | Self::Conversation { redact, .. } => {
                redact.as_ref()
            }
        }
    }

    /// The same export with `redaction`.
    pub fn with_redaction(mut self, redaction: Option<Redaction>) -> Self {
        match &mut self {
            Self::Training { redact, .. } | Self::Conversations { redact, .. } | Self::Conversation { redact, .. } => {
                *redact = redaction
            }
        }
        self
    }

    /// The same export with `mode` of dedup (training exports; the others have none).
    pub fn with_dedup(mut self, mode: Dedup) -> Self {
        if let Self::Training { dedup, .. } = &mut self {
            *dedup = mode;
        }
        self
    }

    /// Duplicate removal (training exports; the others have none).
    pub fn dedup(&self) -> Dedup {
        match self {
            Self::Training { dedup, .. } => *dedup,
            _ => Dedup::None,
        }
    }

    /// The split of a training job, if it splits.
    pub fn split(&self) -> Option<&SplitSpec> {
        match self {
            Self::Training { split, .. } => split.as_ref(),
            _ => None,
        }
    }

    /// The file of `split`: the job's file name with `-<split>` before its extension.
    pub fn split_file_name(file_name: &str, split: Split) -> String {
        match file_name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}-{}.{ext}", split.name()),
            None => format!("{file_name}-{}", split.name()),
        }
    }

    /// The file's content type.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Training { format, .. } => format.content_type(),
            Self::Conversations { format, .. } | Self::Conversation { format, .. } => format.content_type(),
        }
    }
}
