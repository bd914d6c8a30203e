//! Conversation exports (Convocore contract): all of an agent's conversations, or one,
//! as JSON (`{success, message, data}`) or CSV.

use futures::{stream, StreamExt, TryStreamExt};
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

use super::sink::ExportSink;
use super::{csv_record, delivery_param, object_spec, respond, sink, Counts, BOM};
use crate::convos::store::ConvoStore;
use crate::convos::{Convo, Message, Sender};
use crate::error::{ApiError, Envelope};
use crate::http::{handle, path_id, query_param};
use crate::AppState;

/// CSV columns of the conversation exports, in order (one row per message).
pub const CSV_COLUMNS: &[&str] = &[
    "convoId", "userName", "userEmail", "userPhone", "userCompany", "userAddress", "userWebsite", "origin",
    "convoFeedback", "tags", "notes", "turn", "from", "messageId", "ts", "timestamp", "message", "feedback", "aiGenerated",
];

/// Conversations whose messages are read at once.
const CONCURRENT_READS: usize = 8;

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

fn csv_rows(c: &Convo, messages: &[Message]) -> Result<Vec<u8>, ApiError> {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn format_param(req: &Request) -> Result<Format, ApiError> {
    match query_param(req, "format") {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(_) => Err(ApiError::validation("`format` must be json or csv")),
    }
}

fn time_param(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    query_param(req, name)
        .map(|v| {
            crate::time::parse_rfc3339(v)
                .map(crate::time::to_rfc3339)
                .ok_or_else(|| ApiError::validation(format!("`{name}` must be an RFC 3339 timestamp")))
        })
        .transpose()
}

/// Largest `limit` on the agent export.
pub const MAX_EXPORT_LIMIT: usize = 1_000_000;

/// `GET /agents/{agentId}/convos/export?format=json|csv&from=&to=&limit=&delivery=`.
pub async fn export_agent_convos(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Convocore, |principal, req| async move {
        let org = &principal.organization_id;
        let agent = path_id(&req, "agentId")?;
        let format = format_param(&req)?;
        let (from, to) = (time_param(&req, "from")?, time_param(&req, "to")?);
        if let (Some(f), Some(t)) = (&from, &to) {
            if f > t {
                return Err(ApiError::validation("`from` must not be after `to`"));
            }
        }
        let limit = match query_param(&req, "limit") {
            None => MAX_EXPORT_LIMIT,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_EXPORT_LIMIT).contains(n))
                .ok_or_else(|| ApiError::validation(format!("`limit` must be an integer from 1 to {MAX_EXPORT_LIMIT}")))?,
        };
        let delivery = delivery_param(&req)?;
        let (ext, content_type) = extension(format);
        let filename = format!("conversations-{agent}-{}.{ext}", chrono::Utc::now().timestamp_millis());
        let spec = object_spec(state, org, "convos", &filename, content_type);
        let mut sink = sink(state, spec.clone(), delivery);
        let mut counts = Counts::default();
        let result = async {
            sink.write(&match format {
                Format::Json => br#"{"success":true,"message":"Conversations exported successfully","data":["#.to_vec(),
                Format::Csv => csv_head()?,
            })
            .await?;
            let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
            let mut start = None;
            loop {
                let want = (limit - counts.items as usize).min(100);
                let (page, next) = store.list_active(org, &agent, from.as_deref(), to.as_deref(), want, start).await?;
                let mut with_messages = stream::iter(page.into_iter().map(|c| {
                    let store = &store;
                    async move {
                        let messages = store.messages(org, &c.agent_id, &c.id).await?;
                        Ok::<_, ApiError>((c, messages))
                    }
                }))
                .buffered(CONCURRENT_READS);
                while let Some((c, messages)) = with_messages.try_next().await? {
                    write_item(&mut sink, format, counts.items == 0, &c, &messages).await?;
                    counts.items += 1;
                }
                start = next;
                if start.is_none() || counts.items as usize >= limit {
                    break;
                }
            }
            if format == Format::Json {
                sink.write(b"]}").await?;
            }
            Ok::<_, ApiError>(())
        }
        .await;
        if let Err(e) = result {
            sink.abort().await;
            return Err(e);
        }
        let finished = sink.finish().await?;
        respond(state, &spec, finished, counts).await
    })
    .await
}

/// `GET /agents/{agentId}/convos/{convoId}/export?format=json|csv&delivery=`.
pub async fn export_convo(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Convocore, |principal, req| async move {
        let org = &principal.organization_id;
        let agent = path_id(&req, "agentId")?;
        let convo = path_id(&req, "convoId")?;
        let format = format_param(&req)?;
        let delivery = delivery_param(&req)?;
        let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
        let header = store.get_header(org, &agent, &convo).await?.ok_or_else(|| ApiError::not_found("Conversation not found"))?;
        let messages = store.messages(org, &agent, &convo).await?;
        let (ext, content_type) = extension(format);
        let filename = format!("conversation-{convo}-{}.{ext}", chrono::Utc::now().timestamp_millis());
        let spec = object_spec(state, org, "convos", &filename, content_type);
        let mut sink = sink(state, spec.clone(), delivery);
        let result = async {
            match format {
                Format::Json => {
                    let body = json!({ "success": true, "message": "Conversation exported successfully", "data": export_item(&header, &messages) });
                    sink.write(&serde_json::to_vec(&body).map_err(|e| ApiError::internal("encode export", e))?).await
                }
                Format::Csv => {
                    let mut bytes = csv_head()?;
                    bytes.extend(csv_rows(&header, &messages)?);
                    sink.write(&bytes).await
                }
            }
        }
        .await;
        if let Err(e) = result {
            sink.abort().await;
            return Err(e);
        }
        let finished = sink.finish().await?;
        respond(state, &spec, finished, Counts { items: 1, skipped: 0 }).await
    })
    .await
}

fn extension(format: Format) -> (&'static str, &'static str) {
    match format {
        Format::Json => ("json", "application/json"),
        Format::Csv => ("csv", "text/csv; charset=utf-8"),
    }
}

fn csv_head() -> Result<Vec<u8>, ApiError> {
    let mut head = BOM.to_vec();
    head.extend(csv_record(CSV_COLUMNS.iter().copied())?);
    Ok(head)
}

async fn write_item(sink: &mut ExportSink<'_>, format: Format, first: bool, c: &Convo, messages: &[Message]) -> Result<(), ApiError> {
    match format {
        Format::Json => {
            let mut bytes = if first { Vec::new() } else { b",".to_vec() };
            bytes.extend(serde_json::to_vec(&export_item(c, messages)).map_err(|e| ApiError::internal("encode export", e))?);
            sink.write(&bytes).await
        }
        Format::Csv => sink.write(&csv_rows(c, messages)?).await,
    }
}
