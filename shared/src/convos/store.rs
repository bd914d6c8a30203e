//! DynamoDB access for conversations and messages. Every key starts with the organization.

use std::collections::HashMap;

use aws_sdk_dynamodb::{types::AttributeValue, Client};

use super::model::{Convo, ConvoInput, Message};
use crate::keys::{self, Org};
use crate::store_error::{SdkResultExt, StoreError};
use crate::table::{GSI1, GSI2, LSI1, PK, SK};

// Building one chunk's transaction of `ConvoStore::ingest` (a child module, so it shares the
// private key helpers; its file sits next to this one).
#[path = "store_ingest.rs"]
mod store_ingest;

/// Sort key of a conversation header.
pub fn convo_sk(convo: &str) -> String {
    format!("CONVO#{convo}")
}
fn activity_sk(ts: &str, convo: &str) -> String {
    format!("{ts}#{convo}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The SET clauses and values every header write has: ids, timestamps, counters, index keys and
/// the contact (kept when `contact` is absent).
fn header_base(
    org: &Org,
    agent: &str,
    convo: &str,
    now: &str,
    contact: Option<&str>,
) -> (Vec<String>, HashMap<String, AttributeValue>) {
    let mut sets = vec![
        "agentId = :agent".to_string(),
        "id = :convo".to_string(),
        "organizationId = :org".to_string(),
        "createdAt = if_not_exists(createdAt, :now)".to_string(),
        "updatedAt = :now".to_string(),
        "messagesNum = if_not_exists(messagesNum, :zero)".to_string(),
        "version = if_not_exists(version, :zero) + :one".to_string(),
        "GSI1PK = :agentKey".to_string(),
        "GSI1SK = if_not_exists(GSI1SK, :activity)".to_string(),
        "GSI2SK = :contactSort".to_string(),
    ];
    let mut values: HashMap<String, AttributeValue> = HashMap::from([
        (":agent".into(), s(agent)),
        (":convo".into(), s(convo)),
        (":org".into(), s(org.as_str())),
        (":now".into(), s(now)),
        (":zero".into(), n(0)),
        (":one".into(), n(1)),
        (":agentKey".into(), s(keys::agent(org, agent))),
        (":activity".into(), s(activity_sk(now, convo))),
        (":contactSort".into(), s(format!("CONVO#{agent}#{convo}"))),
    ]);
    match contact {
        Some(contact) => {
            sets.push("contactId = :contact".into());
            sets.push("GSI2PK = :contactKey".into());
            values.insert(":contact".into(), s(contact));
            values.insert(":contactKey".into(), s(keys::contact(org, contact)));
        }
        None => {
            sets.push("contactId = if_not_exists(contactId, :convo)".into());
            sets.push("GSI2PK = if_not_exists(GSI2PK, :contactKey)".into());
            values.insert(":contactKey".into(), s(keys::contact(org, convo)));
        }
    }
    (sets, values)
}

/// Adds the lead's optional fields to a header write: the texts given, feedback and tags
/// (set when given, defaulted when the header has none).
fn header_fields(input: ConvoInput, sets: &mut Vec<String>, values: &mut HashMap<String, AttributeValue>) {
    let feedback = input.feedback.map(|f| format!("{f:?}"));
    let texts = [
        ("userName", input.user_name),
        ("userEmail", input.user_email),
        ("userPhone", input.user_phone),
        ("userCompany", input.user_company),
        ("userAddress", input.user_address),
        ("userWebsite", input.user_website),
        ("notes", input.notes),
        ("origin", input.origin),
    ];
    for (i, (name, value)) in texts.into_iter().enumerate() {
        if let Some(v) = value {
            sets.push(format!("{name} = :t{i}"));
            values.insert(format!(":t{i}"), s(v));
        }
    }
    match feedback {
        Some(f) => {
            sets.push("feedback = :feedback".into());
            values.insert(":feedback".into(), s(f));
        }
        None => {
            sets.push("feedback = if_not_exists(feedback, :feedback)".into());
            values.insert(":feedback".into(), s("Unset"));
        }
    }
    let tags = input.tags.map(|t| AttributeValue::L(t.into_iter().map(s).collect()));
    match tags {
        Some(t) => {
            sets.push("tags = :tags".into());
            values.insert(":tags".into(), t);
        }
        None => {
            sets.push("tags = if_not_exists(tags, :tags)".into());
            values.insert(":tags".into(), AttributeValue::L(vec![]));
        }
    }
}

/// The 404 of a conversation without a header: "Conversation not found".
pub const NOT_FOUND: StoreError = StoreError::NotFound("Conversation");

/// Messages per transaction: DynamoDB allows 100 actions, one is the header update.
const TX_MESSAGES: usize = 99;
/// Attempts when concurrent ingests race on the header's version.
const MAX_VERSION_RETRIES: usize = 8;

/// What an ingest did.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestOutcome {
    /// Messages stored by this request.
    pub inserted: usize,
    /// Messages already stored (same id) and left unchanged.
    pub duplicates: usize,
    /// The header after the ingest.
    pub convo: Convo,
}

/// Conversation storage over one table.
pub struct ConvoStore<'a> {
    client: &'a Client,
    table: &'a str,
}

impl<'a> ConvoStore<'a> {
    /// A store over `table`.
    pub fn new(client: &'a Client, table: &'a str) -> Self {
        Self { client, table }
    }

    /// Creates or updates a header; fields absent from `input` keep their value.
    /// Returns the header and whether it was created.
    pub async fn put_header(
        &self,
        org: &Org,
        agent: &str,
        convo: &str,
        input: ConvoInput,
    ) -> Result<(Convo, bool), StoreError> {
        let now = crate::time::now_rfc3339();
        let (mut sets, mut values) = header_base(org, agent, convo, &now, input.contact_id.as_deref());
        header_fields(input, &mut sets, &mut values);
        let out = self
            .client
            .update_item()
            .table_name(self.table)
            .key(PK, s(keys::agent(org, agent)))
            .key(SK, s(convo_sk(convo)))
            .update_expression(format!("SET {}", sets.join(", ")))
            .set_expression_attribute_values(Some(values))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .ctx("put conversation header")?;
        let item = out.attributes.unwrap_or_default();
        let convo: Convo = serde_dynamo::from_item(item).map_err(|e| StoreError::fault("decode conversation", e))?;
        let created = convo.version == 1;
        Ok((convo, created))
    }

    /// Reads a header (strongly consistent).
    pub async fn get_header(&self, org: &Org, agent: &str, convo: &str) -> Result<Option<Convo>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.table)
            .key(PK, s(keys::agent(org, agent)))
            .key(SK, s(convo_sk(convo)))
            .consistent_read(true)
            .send()
            .await
            .ctx("get conversation header")?;
        out.item.map(serde_dynamo::from_item).transpose().map_err(|e| StoreError::fault("decode conversation", e))
    }

    /// Appends messages. Each chunk of up to 99 messages is written in one transaction
    /// together with the header's counters, so counts never drift from the stored messages;
    /// a message whose id is already stored is left unchanged and counted as a duplicate.
    /// Answers 404 when the conversation has no header.
    pub async fn ingest(
        &self,
        org: &Org,
        agent: &str,
        convo: &str,
        messages: Vec<Message>,
    ) -> Result<IngestOutcome, StoreError> {
        let header = self.get_header(org, agent, convo).await?.ok_or(NOT_FOUND)?;
        let mut outcome = IngestOutcome { inserted: 0, duplicates: 0, convo: header };
        for chunk in messages.chunks(TX_MESSAGES) {
            self.ingest_chunk(org, agent, convo, chunk, &mut outcome).await?;
        }
        Ok(outcome)
    }

    /// One page of an agent's conversations, newest activity first.
    pub async fn list(
        &self,
        org: &Org,
        agent: &str,
        limit: usize,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<(Vec<Convo>, Option<HashMap<String, AttributeValue>>), StoreError> {
        self.list_active(org, agent, None, None, limit, start).await
    }

    /// Like [`Self::list`], restricted to conversations last active between `from` and `to`
    /// (RFC 3339 UTC as stored): a key condition on the activity index, not a filter.
    pub async fn list_active(
        &self,
        org: &Org,
        agent: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<(Vec<Convo>, Option<HashMap<String, AttributeValue>>), StoreError> {
        let out = self.activity_query(org, agent, from, to, limit, start).await?;
        let convos = serde_dynamo::from_items(out.items.unwrap_or_default())
            .map_err(|e| StoreError::fault("decode conversations", e))?;
        Ok((convos, out.last_evaluated_key))
    }

    /// One Query of an agent's conversations on the activity index (GSI1), newest first.
    async fn activity_query(
        &self,
        org: &Org,
        agent: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<aws_sdk_dynamodb::operation::query::QueryOutput, StoreError> {
        // GSI1SK is `<ts>#<convo>`; `~` sorts after every id character, so `<to>#~` is inclusive.
        let lo = from.map_or_else(|| "0".to_string(), |f| f.to_string());
        let hi = to.map_or_else(|| "~".to_string(), |t| format!("{t}#~"));
        self.client
            .query()
            .table_name(self.table)
            .index_name(GSI1.name)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", GSI1.pk)
            .expression_attribute_names("#sk", GSI1.sk)
            .expression_attribute_values(":pk", s(keys::agent(org, agent)))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(hi))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .ctx("list conversations")
    }

    /// Like [`Self::list_active`] for exports and jobs: each conversation with its activity key
    /// (`GSI1SK`), continuing after the conversation whose activity key is `start`, so a job can
    /// checkpoint the last one it wrote and resume there. Answers the page and whether more may follow.
    pub async fn activity_page(
        &self,
        org: &Org,
        agent: &str,
        from: Option<&str>,
        to: Option<&str>,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(Convo, String)>, bool), StoreError> {
        let exclusive_start = start.and_then(|key| {
            let convo = key.split_once('#')?.1;
            Some(HashMap::from([
                (crate::table::PK.to_string(), s(keys::agent(org, agent))),
                (crate::table::SK.to_string(), s(convo_sk(convo))),
                (GSI1.pk.to_string(), s(keys::agent(org, agent))),
                (GSI1.sk.to_string(), s(key)),
            ]))
        });
        let out = self.activity_query(org, agent, from, to, limit, exclusive_start).await?;
        let more = out.last_evaluated_key.is_some();
        let mut page = Vec::new();
        for item in out.items.unwrap_or_default() {
            let key = item.get(GSI1.sk).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let convo: Convo =
                serde_dynamo::from_item(item).map_err(|e| StoreError::fault("decode conversations", e))?;
            page.push((convo, key));
        }
        Ok((page, more))
    }

    /// Every conversation header of a contact (GSI2), across agents.
    pub async fn contact_convos(&self, org: &Org, contact: &str) -> Result<Vec<Convo>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.table)
            .index_name(GSI2.name)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :convo)")
            .expression_attribute_names("#pk", GSI2.pk)
            .expression_attribute_names("#sk", GSI2.sk)
            .expression_attribute_values(":pk", s(keys::contact(org, contact)))
            .expression_attribute_values(":convo", s("CONVO#"));
        query_all(query, "read contact conversations").await
    }

    /// Every message of a conversation in time order (paged Query on LSI1).
    pub async fn messages(&self, org: &Org, agent: &str, convo: &str) -> Result<Vec<Message>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.table)
            .index_name(LSI1.name)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(keys::messages(org, agent, convo)));
        query_all(query, "read messages").await
    }
}

/// Every item of a query, page after page, decoded.
async fn query_all<T: serde::de::DeserializeOwned>(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    context: &'static str,
) -> Result<Vec<T>, StoreError> {
    let mut pages = query.into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(item) = pages.next().await {
        out.push(serde_dynamo::from_item(item.ctx(context)?).map_err(|e| StoreError::fault(context, e))?);
    }
    Ok(out)
}
