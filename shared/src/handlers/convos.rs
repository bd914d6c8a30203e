//! HTTP handlers of the conversation routes (Convocore envelope).

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::convos::model::{Convo, ConvoInput, IngestInput};
use crate::convos::store::ConvoStore;
use crate::error::{ApiError, Envelope};
use crate::http::{handle, limit_param, path_id, query_param, read_json, success, Page};
use crate::keys::Org;
use crate::AppState;

/// How a conversation is answered: the stored header plus `ts` (last activity).
#[derive(Debug, Serialize)]
struct ConvoView<'a> {
    #[serde(flatten)]
    convo: &'a Convo,
    ts: &'a str,
}

fn view(c: &Convo) -> ConvoView<'_> {
    ConvoView { convo: c, ts: c.ts() }
}

/// The answer of an ingest.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Ingested<'a> {
    received: usize,
    inserted: usize,
    duplicates: usize,
    messages_num: u64,
    #[serde(rename = "firstMessageTS")]
    first_message_ts: Option<&'a str>,
    #[serde(rename = "lastMessageTS")]
    last_message_ts: Option<&'a str>,
}

/// `PUT /agents/{agentId}/convos/{convoId}`: create (201) or update (200) a header.
pub async fn put_convo(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Convocore, |principal, req| async move {
        let agent = path_id(&req, "agentId")?;
        let convo = path_id(&req, "convoId")?;
        let input: ConvoInput = read_json(&req, state.config.max_body_bytes)?;
        let input = input.validate()?;
        let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
        let (saved, created) = store.put_header(&Org::verified(&principal), &agent, &convo, input).await?;
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(success(status, "Conversation saved successfully", &view(&saved)))
    })
    .await
}

/// `POST /agents/{agentId}/convos/{convoId}/messages`: append up to 500 messages, idempotently.
pub async fn ingest_messages(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Convocore, |principal, req| async move {
        let agent = path_id(&req, "agentId")?;
        let convo = path_id(&req, "convoId")?;
        let input: IngestInput = read_json(&req, state.config.max_body_bytes)?;
        let received = input.messages.len();
        let messages = input.into_messages()?;
        let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
        let outcome = store.ingest(&Org::verified(&principal), &agent, &convo, messages).await?;
        let status = if outcome.inserted > 0 { StatusCode::CREATED } else { StatusCode::OK };
        let c = &outcome.convo;
        Ok(success(
            status,
            "Messages ingested successfully",
            &Ingested {
                received,
                inserted: outcome.inserted,
                duplicates: received - outcome.inserted,
                messages_num: c.messages_num,
                first_message_ts: c.first_message_ts.as_deref(),
                last_message_ts: c.last_message_ts.as_deref(),
            },
        ))
    })
    .await
}

/// Default page size of the conversation list.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page size of the conversation list.
pub const MAX_LIMIT: usize = 100;

/// `GET /agents/{agentId}/convos?limit=&cursor=`: newest activity first.
pub async fn list_convos(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Convocore, |principal, req| async move {
        let org = &Org::verified(&principal);
        let agent = path_id(&req, "agentId")?;
        let limit = limit_param(&req, DEFAULT_LIMIT, MAX_LIMIT)?;
        if query_param(&req, "page").is_some_and(|p| p != "1") {
            return Err(ApiError::invalid(
                "page",
                "is not supported: pass the `nextCursor` of the previous page as `cursor`",
            ));
        }
        let scope = format!("convos:{agent}");
        let start = query_param(&req, "cursor").map(|c| state.cursors.decode(org, &scope, c)).transpose()?;
        let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
        let (convos, last) = store.list(org, &agent, limit, start).await?;
        let next = state.cursors.encode(org, &scope, last.as_ref())?;
        Ok(Page::new("Conversations retrieved successfully", convos.iter().map(view).collect(), next).into_response())
    })
    .await
}
