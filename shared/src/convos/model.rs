//! Conversation and message shapes, as stored and as answered.

use serde::{Deserialize, Serialize};

use crate::validate::{Issues, MAX_NOTES_CHARS, MAX_TEXT_CHARS};

/// Convocore's feedback values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Feedback {
    /// Positive feedback.
    Positive,
    /// Negative feedback.
    Negative,
    /// No feedback given.
    #[default]
    Unset,
}

/// Who wrote a message, in Convocore's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// The customer.
    User,
    /// The AI agent.
    Bot,
    /// A human operator of the business.
    Human,
}

/// A conversation header as answered (and stored, with key attributes beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Convo {
    /// The conversation id.
    pub id: String,
    /// The agent it belongs to.
    pub agent_id: String,
    /// The contact (customer); defaults to the conversation id.
    pub contact_id: String,
    /// Lead: name.
    #[serde(default)]
    pub user_name: Option<String>,
    /// Lead: e-mail.
    #[serde(default)]
    pub user_email: Option<String>,
    /// Lead: phone.
    #[serde(default)]
    pub user_phone: Option<String>,
    /// Lead: company.
    #[serde(default)]
    pub user_company: Option<String>,
    /// Lead: address.
    #[serde(default)]
    pub user_address: Option<String>,
    /// Lead: website.
    #[serde(default)]
    pub user_website: Option<String>,
    /// Notes on the lead.
    #[serde(default)]
    pub notes: Option<String>,
    /// Tags on the lead.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The channel: `sms`, `web-chat`, `whatsapp`, ...
    #[serde(default)]
    pub origin: Option<String>,
    /// Conversation-level feedback.
    #[serde(default)]
    pub feedback: Feedback,
    /// How many messages are stored.
    #[serde(default)]
    pub messages_num: u64,
    /// Timestamp of the earliest message.
    #[serde(default, rename = "firstMessageTS")]
    pub first_message_ts: Option<String>,
    /// Timestamp of the latest message.
    #[serde(default, rename = "lastMessageTS")]
    pub last_message_ts: Option<String>,
    /// When the header was created.
    pub created_at: String,
    /// When the header or its messages last changed.
    pub updated_at: String,
    /// Optimistic-concurrency counter (not answered).
    #[serde(default, skip_serializing)]
    pub version: u64,
}

impl Convo {
    /// Last activity: the latest message, or the creation time of an empty conversation.
    pub fn ts(&self) -> &str {
        self.last_message_ts.as_deref().unwrap_or(&self.created_at)
    }
}

/// Body of `PUT /agents/{agentId}/convos/{convoId}`. Absent (or null) fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConvoInput {
    /// The contact; set once or moved to another contact.
    pub contact_id: Option<String>,
    /// Lead: name.
    pub user_name: Option<String>,
    /// Lead: e-mail.
    pub user_email: Option<String>,
    /// Lead: phone.
    pub user_phone: Option<String>,
    /// Lead: company.
    pub user_company: Option<String>,
    /// Lead: address.
    pub user_address: Option<String>,
    /// Lead: website.
    pub user_website: Option<String>,
    /// Notes.
    pub notes: Option<String>,
    /// Tags (trimmed, de-duplicated).
    pub tags: Option<Vec<String>>,
    /// Channel.
    pub origin: Option<String>,
    /// Feedback.
    pub feedback: Option<Feedback>,
}

impl ConvoInput {
    /// Validates and normalises every field, naming all problems in one 400.
    pub fn validate(mut self) -> Result<Self, crate::ApiError> {
        let mut issues = Issues::default();
        if let Some(c) = &self.contact_id {
            if !crate::ids::is_valid_id(c) {
                issues.push("contactId", "must be 1-128 characters of letters, digits, '-', '_', '.', ':' or '@'");
            }
        }
        for (field, value) in [
            ("userName", &self.user_name),
            ("userEmail", &self.user_email),
            ("userPhone", &self.user_phone),
            ("userCompany", &self.user_company),
            ("userAddress", &self.user_address),
            ("userWebsite", &self.user_website),
        ] {
            issues.text(field, value.as_deref(), MAX_TEXT_CHARS);
        }
        issues.text("origin", self.origin.as_deref(), 64);
        issues.text("notes", self.notes.as_deref(), MAX_NOTES_CHARS);
        self.tags = issues.tags("tags", self.tags.take());
        issues.finish("Invalid conversation")?;
        Ok(self)
    }
}

/// A stored message, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Message id (given, or generated).
    pub id: String,
    /// Who wrote it.
    pub from: Sender,
    /// The text.
    pub content: String,
    /// When it was written, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// Message-level feedback.
    #[serde(default)]
    pub feedback: Feedback,
    /// Whether an AI wrote it.
    #[serde(default)]
    pub ai_generated: bool,
}

/// Longest message id accepted.
pub const MAX_MESSAGE_CONTENT_BYTES: usize = 100_000;
/// Most messages in one ingest batch.
pub const MAX_BATCH: usize = 500;

/// One message of an ingest batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageInput {
    /// Optional id; re-sending the same id changes nothing. Without one, the id is derived
    /// from `ts`, `from` and `content`, so a retried batch is idempotent too.
    pub id: Option<String>,
    /// Who wrote it.
    pub from: Sender,
    /// The text (at most 100,000 bytes).
    pub content: String,
    /// RFC 3339 timestamp.
    pub ts: String,
    /// Feedback, `Unset` by default.
    pub feedback: Option<Feedback>,
    /// Defaults to `true` for `bot` and `false` otherwise.
    pub ai_generated: Option<bool>,
}

/// The id of a message sent without one: derived from what it is (time, sender, text), so a
/// retried batch stores nothing twice.
fn derived_id(ts: &str, from: Sender, content: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{ts}\u{0}{from:?}\u{0}{content}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Body of `POST /agents/{agentId}/convos/{convoId}/messages`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestInput {
    /// 1 to 500 messages.
    pub messages: Vec<MessageInput>,
}

impl IngestInput {
    /// Validates every message and turns the batch into stored messages, dropping repeats
    /// of an id within the batch (the first wins).
    pub fn into_messages(self) -> Result<Vec<Message>, crate::ApiError> {
        let mut issues = Issues::default();
        if self.messages.is_empty() || self.messages.len() > MAX_BATCH {
            issues.push("messages", format!("send 1 to {MAX_BATCH} messages per request"));
        }
        let mut out: Vec<Message> = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let field = |name: &str| format!("messages[{i}].{name}");
            if let Some(id) = &m.id {
                if !crate::ids::is_valid_id(id) {
                    issues.push(&field("id"), "must be 1-128 characters of letters, digits, '-', '_', '.', ':' or '@'");
                }
            }
            if m.content.len() > MAX_MESSAGE_CONTENT_BYTES {
                issues.push(&field("content"), format!("must be at most {MAX_MESSAGE_CONTENT_BYTES} bytes"));
            }
            let Some(ts) = crate::time::parse_rfc3339(&m.ts) else {
                issues.push(&field("ts"), "must be an RFC 3339 timestamp such as 2024-12-01T10:30:00Z");
                continue;
            };
            let ts = crate::time::to_rfc3339(ts);
            let id = m.id.unwrap_or_else(|| derived_id(&ts, m.from, &m.content));
            if out.iter().any(|o| o.id == id) {
                continue;
            }
            out.push(Message {
                id,
                ai_generated: m.ai_generated.unwrap_or(m.from == Sender::Bot),
                from: m.from,
                content: m.content,
                ts,
                feedback: m.feedback.unwrap_or_default(),
            });
        }
        issues.finish("Invalid messages")?;
        Ok(out)
    }
}
