//! Conversation exports (Convocore contract): all of an agent's conversations, or one,
//! as JSON (`{success, message, data}`) or CSV.

use serde_json::{json, Value};

use super::csv_record;
pub use super::spec::ConvoFormat;
use super::spec::ExportSpec;
use crate::convos::{Convo, Message, Sender};
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

/// One conversation in Convocore's export shape.
pub fn export_item(c: &Convo, messages: &[Message]) -> Value {
    json!({
        "metadata": {
            "feedback": c.feedback,
            "convo": {
                "id": c.id, "userName": c.user_name, "userEmail": c.user_email, "userPhone": c.user_phone,
                "userCompany": c.user_company, "userAddress": c.user_address, "userWebsite": c.user_website,
                "notes": c.notes, "tags": c.tags, "origin": c.origin,
            },
            "sessions": [],
        },
        "turns": turns(messages).into_iter().map(|(from, list)| json!({
            "from": sender(from),
            "messages": list.into_iter().map(|m| json!({
                "type": "text",
                "ts": human_ts(&m.ts),
                "payload": { "message": m.content, "feedback": m.feedback, "aiGenerated": m.ai_generated },
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
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
    Ok(ExportSpec::Conversations { agent_id: agent, format, from, to, limit })
}

/// The CSV header row of conversation exports.
pub fn csv_head() -> Result<Vec<u8>, ApiError> {
    super::csv_head(CSV_COLUMNS)
}
