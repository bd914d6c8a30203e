//! Snapshot shapes, as stored and as answered, and the inputs that create and change them.

use serde::{Deserialize, Deserializer, Serialize};

use crate::convos::model::{Message, Sender};
use crate::validate::{Issues, MAX_NOTES_CHARS};

/// At most this many messages in one snapshot.
pub const MAX_MESSAGES: usize = 10_000;
/// At most this many bytes of messages (as JSON) in one snapshot, so that creating and reading
/// it can still be answered within Lambda's 6 MB response limit.
pub const MAX_MESSAGE_BYTES: usize = 4_000_000;
/// `quality` and `category` at most this many characters.
pub const MAX_LABEL_CHARS: usize = 100;

/// A captured message, in Tether's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMessage {
    /// The source message id.
    pub id: String,
    /// The text, byte for byte.
    pub content: String,
    /// `user` for the business side (AI or human agent), `contact` for the customer.
    pub sender: String,
    /// `AI` or `HUMAN`.
    #[serde(rename = "senderType")]
    pub sender_type: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
}

impl From<&Message> for SnapshotMessage {
    fn from(m: &Message) -> Self {
        // Tether's mapping: the business side (AI or human agent) is `user`, the customer `contact`.
        let (sender, sender_type) = match m.from {
            Sender::User => ("contact", "HUMAN"),
            Sender::Bot | Sender::Human => ("user", if m.ai_generated { "AI" } else { "HUMAN" }),
        };
        Self {
            id: m.id.clone(),
            content: m.content.clone(),
            sender: sender.into(),
            sender_type: sender_type.into(),
            timestamp: m.ts.clone(),
        }
    }
}

/// Who captured a snapshot, from the token's claims at capture time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRef {
    /// `sub`.
    #[serde(rename = "_id")]
    pub id: String,
    /// `given_name`.
    #[serde(rename = "firstName", default)]
    pub first_name: Option<String>,
    /// `family_name`.
    #[serde(rename = "lastName", default)]
    pub last_name: Option<String>,
    /// `email`.
    #[serde(default)]
    pub email: Option<String>,
}

/// The customer, from the conversation's lead fields at capture time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRef {
    /// The contact id.
    #[serde(rename = "_id")]
    pub id: String,
    /// First word of the lead's name.
    #[serde(rename = "firstName", default)]
    pub first_name: Option<String>,
    /// The rest of the lead's name.
    #[serde(rename = "lastName", default)]
    pub last_name: Option<String>,
    /// Lead phone.
    #[serde(rename = "phoneNumber", default)]
    pub phone_number: Option<String>,
    /// Lead e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// The conversation's origin (`sms`, `web-chat`, ...).
    #[serde(rename = "channelType", default)]
    pub channel_type: Option<String>,
}

/// A snapshot's metadata, as stored in its header item (with its messages when they are small).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// 24-hex, time-ordered id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The tenant.
    pub organization_id: String,
    /// Who captured it.
    pub user: UserRef,
    /// The customer.
    pub contact: ContactRef,
    /// Lead name.
    #[serde(default)]
    pub customer_name: Option<String>,
    /// Lead phone.
    #[serde(default)]
    pub customer_phone: Option<String>,
    /// Lead e-mail.
    #[serde(default)]
    pub customer_email: Option<String>,
    /// How many messages were captured.
    pub message_count: usize,
    /// When it was captured.
    pub snapshot_date: String,
    /// First captured message.
    #[serde(default)]
    pub conversation_start_date: Option<String>,
    /// Last captured message.
    #[serde(default)]
    pub conversation_end_date: Option<String>,
    /// Curation notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Curation tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free text: `good`, `bad`, `neutral`, ...
    #[serde(default)]
    pub quality: Option<String>,
    /// Free text category.
    #[serde(default)]
    pub category: Option<String>,
    /// Archived snapshots are hidden from lists and exports by default.
    pub is_archived: bool,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// How many message chunk items are stored beside the header (stored, not answered).
    #[serde(default)]
    pub chunks: usize,
    /// Which write attempt's chunks the header committed: empty for chunk keys `MSGS#<n>`, else
    /// `MSGS#<set>#<n>` (a resumed create under an id an earlier attempt may have written to).
    /// Stored, not answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_set: String,
    /// Optimistic-concurrency counter (stored, not answered).
    #[serde(default)]
    pub version: u64,
    /// The messages' JSON array when they are kept in the header item (a small snapshot: see
    /// `store.rs`); `chunks` is then 0. Stored, not answered.
    #[serde(default, rename = "data", skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

impl Snapshot {
    /// The organization it is stored under.
    pub fn org(&self) -> crate::keys::Org {
        crate::keys::Org::stored(&self.organization_id)
    }

    /// The Tether document. `populated` answers `userId` / `contactId` as objects (read
    /// routes), else as ids (create); `messages` is included when given.
    pub fn document<'a>(&'a self, populated: bool, messages: Option<&'a [SnapshotMessage]>) -> SnapshotDocument<'a> {
        let (user_id, contact_id) = if populated {
            (Ref::Populated(&self.user), Ref::Populated(&self.contact))
        } else {
            (Ref::Id(&self.user.id), Ref::Id(&self.contact.id))
        };
        SnapshotDocument {
            id: &self.id,
            organization_id: &self.organization_id,
            user_id,
            contact_id,
            customer_name: self.customer_name.as_deref(),
            customer_phone: self.customer_phone.as_deref(),
            customer_email: self.customer_email.as_deref(),
            message_count: self.message_count,
            snapshot_date: &self.snapshot_date,
            conversation_start_date: self.conversation_start_date.as_deref(),
            conversation_end_date: self.conversation_end_date.as_deref(),
            notes: self.notes.as_deref(),
            tags: &self.tags,
            quality: self.quality.as_deref(),
            category: self.category.as_deref(),
            is_archived: self.is_archived,
            created_at: &self.created_at,
            updated_at: &self.updated_at,
            messages,
        }
    }
}

/// `userId` / `contactId` of a document: the id, or the populated object.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Ref<'a, T> {
    /// Just the id (the create answer).
    Id(&'a str),
    /// The whole reference (read routes).
    Populated(&'a T),
}

/// A snapshot as Tether's routes answer it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDocument<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    organization_id: &'a str,
    user_id: Ref<'a, UserRef>,
    contact_id: Ref<'a, ContactRef>,
    customer_name: Option<&'a str>,
    customer_phone: Option<&'a str>,
    customer_email: Option<&'a str>,
    message_count: usize,
    snapshot_date: &'a str,
    conversation_start_date: Option<&'a str>,
    conversation_end_date: Option<&'a str>,
    notes: Option<&'a str>,
    tags: &'a [String],
    quality: Option<&'a str>,
    category: Option<&'a str>,
    is_archived: bool,
    created_at: &'a str,
    updated_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [SnapshotMessage]>,
}

/// Body of `POST /api/training/snapshots`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    /// The contact whose conversations are captured.
    pub contact_id: String,
    /// The messages to capture; absent means every message of the contact.
    pub message_ids: Option<Vec<String>>,
    /// Notes.
    pub notes: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Quality.
    pub quality: Option<String>,
    /// Category.
    pub category: Option<String>,
}

fn label(issues: &mut Issues, field: &str, value: Option<String>) -> Option<String> {
    let value = value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    issues.text(field, value.as_deref(), MAX_LABEL_CHARS);
    value
}

impl CreateInput {
    /// Validates and normalises the body, naming every problem in one 400.
    pub fn validate(mut self) -> Result<Self, crate::ApiError> {
        let mut issues = Issues::default();
        if !crate::ids::is_valid_id(&self.contact_id) {
            issues.push("contactId", "must be 1-128 characters of letters, digits, '-', '_', '.', ':' or '@'");
        }
        if let Some(ids) = &mut self.message_ids {
            if ids.len() > MAX_MESSAGES {
                issues.push("messageIds", format!("at most {MAX_MESSAGES} messages per snapshot"));
            }
            let mut seen = std::collections::HashSet::new();
            ids.retain(|id| seen.insert(id.clone()));
        }
        issues.text("notes", self.notes.as_deref(), MAX_NOTES_CHARS);
        self.tags = issues.tags("tags", self.tags.take());
        self.quality = label(&mut issues, "quality", self.quality.take());
        self.category = label(&mut issues, "category", self.category.take());
        issues.finish("Validation failed")?;
        Ok(self)
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /api/training/snapshots/{id}`: only the editable metadata. Absent fields
/// are unchanged; `null` clears `notes`, `quality`, `category` and empties `tags`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchInput {
    /// Notes.
    #[serde(default, deserialize_with = "present")]
    pub notes: Option<Option<String>>,
    /// Tags.
    #[serde(default, deserialize_with = "present")]
    pub tags: Option<Option<Vec<String>>>,
    /// Quality.
    #[serde(default, deserialize_with = "present")]
    pub quality: Option<Option<String>>,
    /// Category.
    #[serde(default, deserialize_with = "present")]
    pub category: Option<Option<String>>,
    /// Archive state.
    #[serde(default)]
    pub is_archived: Option<bool>,
}

impl PatchInput {
    /// Validates and normalises the patch; an empty patch is a 400.
    pub fn validate(mut self) -> Result<Self, crate::ApiError> {
        let mut issues = Issues::default();
        if self.notes.is_none()
            && self.tags.is_none()
            && self.quality.is_none()
            && self.category.is_none()
            && self.is_archived.is_none()
        {
            issues.push("body", "give at least one of notes, tags, quality, category, isArchived");
        }
        if let Some(Some(notes)) = &self.notes {
            issues.text("notes", Some(notes), MAX_NOTES_CHARS);
        }
        if let Some(tags) = self.tags.take() {
            self.tags = Some(Some(issues.tags("tags", Some(tags.unwrap_or_default())).unwrap_or_default()));
        }
        if let Some(q) = self.quality.take() {
            self.quality = Some(label(&mut issues, "quality", q));
        }
        if let Some(c) = self.category.take() {
            self.category = Some(label(&mut issues, "category", c));
        }
        issues.finish("Validation failed")?;
        Ok(self)
    }

    /// Applies the patch to a snapshot's metadata.
    pub fn apply(&self, s: &mut Snapshot) {
        if let Some(notes) = &self.notes {
            s.notes = notes.clone();
        }
        if let Some(tags) = &self.tags {
            s.tags = tags.clone().unwrap_or_default();
        }
        if let Some(quality) = &self.quality {
            s.quality = quality.clone();
        }
        if let Some(category) = &self.category {
            s.category = category.clone();
        }
        if let Some(archived) = self.is_archived {
            s.is_archived = archived;
        }
    }
}
