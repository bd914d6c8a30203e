//! Conversation exports (Convocore contract): all of an agent's conversations, or one,
//! as JSON (`{success, message, data}`) or CSV.

use serde::Serialize;

use super::csv_record;
pub use super::spec::ConvoFormat;
use super::spec::ExportSpec;
use crate::convos::{Convo, Feedback, Message, Sender};
use crate::error::ApiError;

/// CSV columns of the conversation exports, in order (one row per message).
pub const CSV_COLUMNS: &[&str] = &[
    "convoId",
    "userName",
    "userEmail",
    "userPhone",
    "userCompany",
    "userAddress",
    "userWebsite",
    "origin",
    "convoFeedback",
    "tags",
    "notes",
    "turn",
    "from",
    "messageId",
    "ts",
    "timestamp",
    "message",
    "feedback",
    "aiGenerated",
];

fn sender(s: Sender) -> &'static str {
    match s {
        Sender::User => "user",
        Sender::Bot => "bot",
        Sender::Human => "human",
    }
}

fn human_ts(ts: &str) -> String {
    crate::time::parse_rfc3339(ts).map(crate::time::human).unwrap_or_else(|| ts.to_string())
}

/// Consecutive messages of one sender, as Convocore's turns.
fn turns(messages: &[Message]) -> Vec<(Sender, Vec<&Message>)> {
    let mut out: Vec<(Sender, Vec<&Message>)> = Vec::new();
    for m in messages {
        match out.last_mut() {
            Some((from, list)) if *from == m.from => list.push(m),
            _ => out.push((m.from, vec![m])),
        }
    }
    out
}

// The export's shape, typed and borrowing from the conversation. Fields are declared in
// alphabetical order: earlier releases wrote them through serde_json's sorted maps, and files
// stay byte for byte what they were.

/// One conversation in Convocore's export shape.
#[derive(Debug, Serialize)]
pub struct ExportItem<'a> {
    metadata: Metadata<'a>,
    turns: Vec<Turn<'a>>,
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    convo: ConvoFields<'a>,
    feedback: Feedback,
    /// Always empty: we keep no sessions.
    sessions: [(); 0],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConvoFields<'a> {
    id: &'a str,
    notes: Option<&'a str>,
    origin: Option<&'a str>,
    tags: &'a [String],
    user_address: Option<&'a str>,
    user_company: Option<&'a str>,
    user_email: Option<&'a str>,
    user_name: Option<&'a str>,
    user_phone: Option<&'a str>,
    user_website: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct Turn<'a> {
    from: &'static str,
    messages: Vec<TurnMessage<'a>>,
}

#[derive(Debug, Serialize)]
struct TurnMessage<'a> {
    payload: Payload<'a>,
    ts: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    ai_generated: bool,
    feedback: Feedback,
    message: &'a str,
}

/// The export item of a conversation and its messages.
pub fn export_item<'a>(c: &'a Convo, messages: &'a [Message]) -> ExportItem<'a> {
    let convo = ConvoFields {
        id: &c.id,
        notes: c.notes.as_deref(),
        origin: c.origin.as_deref(),
        tags: &c.tags,
        user_address: c.user_address.as_deref(),
        user_company: c.user_company.as_deref(),
        user_email: c.user_email.as_deref(),
        user_name: c.user_name.as_deref(),
        user_phone: c.user_phone.as_deref(),
        user_website: c.user_website.as_deref(),
    };
    let turns = turns(messages)
        .into_iter()
        .map(|(from, list)| Turn {
            from: sender(from),
            messages: list
                .into_iter()
                .map(|m| TurnMessage {
                    payload: Payload { ai_generated: m.ai_generated, feedback: m.feedback, message: &m.content },
                    ts: human_ts(&m.ts),
                    kind: "text",
                })
                .collect(),
        })
        .collect();
    ExportItem { metadata: Metadata { convo, feedback: c.feedback, sessions: [] }, turns }
}

/// The JSON file of one conversation: its export item in the `{success, message, data}`
/// envelope (in the sorted order of earlier releases, like the item).
pub fn conversation_json(c: &Convo, messages: &[Message]) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    struct File<'a> {
        data: ExportItem<'a>,
        message: &'static str,
        success: bool,
    }
    let file = File { data: export_item(c, messages), message: "Conversation exported successfully", success: true };
    serde_json::to_vec(&file).map_err(|e| ApiError::internal("encode export", e))
}

/// One conversation's CSV rows (one per message).
pub fn csv_rows(c: &Convo, messages: &[Message]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let feedback = format!("{:?}", c.feedback);
    let tags = c.tags.join("|");
    for (turn, (_, list)) in turns(messages).into_iter().enumerate() {
        let turn = turn.to_string();
        for m in list {
            let (ts, mf) = (human_ts(&m.ts), format!("{:?}", m.feedback));
            out.extend(csv_record([
                c.id.as_str(),
                c.user_name.as_deref().unwrap_or(""),
                c.user_email.as_deref().unwrap_or(""),
                c.user_phone.as_deref().unwrap_or(""),
                c.user_company.as_deref().unwrap_or(""),
                c.user_address.as_deref().unwrap_or(""),
                c.user_website.as_deref().unwrap_or(""),
                c.origin.as_deref().unwrap_or(""),
                feedback.as_str(),
                tags.as_str(),
                c.notes.as_deref().unwrap_or(""),
                turn.as_str(),
                sender(m.from),
                m.id.as_str(),
                ts.as_str(),
                m.ts.as_str(),
                m.content.as_str(),
                mf.as_str(),
                if m.ai_generated { "true" } else { "false" },
            ])?);
        }
    }
    Ok(out)
}

/// Parses an RFC 3339 bound into the stored form (UTC, milliseconds).
pub fn time_value(name: &str, v: Option<&str>) -> Result<Option<String>, ApiError> {
    v.map(|v| {
        crate::time::parse_rfc3339(v)
            .map(crate::time::to_rfc3339)
            .ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 timestamp"))
    })
    .transpose()
}

/// Largest `limit` on the agent export.
pub const MAX_EXPORT_LIMIT: usize = 1_000_000;

/// Validates the agent export's parameters into its spec.
pub fn agent_spec(
    agent: String,
    format: ConvoFormat,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
) -> Result<ExportSpec, ApiError> {
    if let (Some(f), Some(t)) = (&from, &to) {
        if f > t {
            return Err(ApiError::invalid("from", "must not be after `to`"));
        }
    }
    if limit.is_some_and(|n| !(1..=MAX_EXPORT_LIMIT).contains(&n)) {
        return Err(ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_EXPORT_LIMIT}")));
    }
    Ok(ExportSpec::Conversations { agent_id: agent, format, from, to, limit, redact: None })
}

/// The CSV header row of conversation exports.
pub fn csv_head() -> Result<Vec<u8>, ApiError> {
    super::csv_head(CSV_COLUMNS)
}
