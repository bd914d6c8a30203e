//! HTTP handlers of the Tether training snapshot routes.

use http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::model::{ContactRef, CreateInput, PatchInput, Snapshot, SnapshotMessage, UserRef, MAX_MESSAGES, MAX_MESSAGE_BYTES};
use super::store::{not_found, Archived, Filters, SnapshotStore};
use crate::auth::Principal;
use crate::convos::store::ConvoStore;
use crate::error::{ApiError, Envelope, ErrorKind};
use crate::http::{handle, json_response, limit_param, query_param, query_params, read_json, success};
use crate::idempotency::{validate_key, Claim, Idempotency};
use crate::AppState;

/// The `{id}` of a snapshot route: 24 hex digits, else 400.
fn snapshot_id(req: &Request) -> Result<String, ApiError> {
    use lambda_http::RequestExt;
    let id = req.path_parameters_ref().and_then(|p| p.first("id")).unwrap_or_default();
    if crate::ids::is_object_id(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(ApiError::validation("Invalid snapshot id: expected 24 hexadecimal characters"))
    }
}

fn with_etag(mut response: Response<Body>, snap: &Snapshot) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", snap.updated_at)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// `POST /api/training/snapshots`: freezes the chosen messages of a contact's conversations.
pub async fn create_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let input: CreateInput = read_json(&req, state.config.max_body_bytes)?;
        let input = input.validate()?;
        let table = &state.config.table_name;
        let org = &principal.organization_id;
        let key = req.headers().get("idempotency-key").map(|v| v.to_str().unwrap_or("\u{0}"));
        let Some(key) = key else {
            let (snap, messages, _) = create(state, &principal, input, crate::ids::object_id(), false).await?;
            return Ok(created(&snap, &messages));
        };
        validate_key(key)?;
        let idem = Idempotency::new(&state.dynamo, table, org, "create-snapshot", key);
        let store = SnapshotStore::new(&state.dynamo, table);
        // The id is chosen before the claim and stored in it: every attempt of this request
        // works on this one id, and the conditional commit creates it once.
        let fresh = crate::ids::object_id();
        let (id, resumed) = match idem.claim(req.body().as_ref(), &fresh).await? {
            Claim::Replay(id) => {
                let (snap, messages) = store.get(org, &id).await?.ok_or_else(not_found)?;
                return Ok(created(&snap, &messages));
            }
            Claim::New => (fresh, false),
            Claim::Resume(id) => {
                // An earlier attempt may have committed it before its answer was lost.
                if let Some((snap, messages)) = store.get(org, &id).await? {
                    complete(&idem, &snap.id).await;
                    return Ok(created(&snap, &messages));
                }
                (id, true)
            }
        };
        match create(state, &principal, input, id.clone(), resumed).await {
            Ok((snap, messages, true)) => {
                // The snapshot exists: answer it even if the key cannot be completed (a retry
                // then finds it and answers it).
                complete(&idem, &snap.id).await;
                Ok(created(&snap, &messages))
            }
            Ok((_, _, false)) => {
                // Another attempt of the same request committed this id first: its answer.
                let (snap, messages) = store.get(org, &id).await?.ok_or_else(not_found)?;
                complete(&idem, &snap.id).await;
                Ok(created(&snap, &messages))
            }
            // Storage unavailable: the claim stays, so the retry resumes this id (a write
            // given up on may still be applied; the conditional commit keeps it to one).
            Err(e) if e.kind == ErrorKind::Unavailable => Err(e),
            Err(e) => {
                idem.release(&id).await;
                Err(e)
            }
        }
    })
    .await
}

/// Records the answer of an idempotent create; a failure only means a retry re-reads it.
async fn complete(idem: &Idempotency<'_>, id: &str) {
    if let Err(e) = idem.complete(id).await {
        tracing::error!(snapshot = %id, error = %e, "could not record the idempotency answer");
    }
}

fn created(snap: &Snapshot, messages: &[SnapshotMessage]) -> Response<Body> {
    with_etag(success(StatusCode::CREATED, "Training snapshot created successfully", &snap.document(false, Some(messages))), snap)
}

/// Creates the snapshot `id` (see [`SnapshotStore::create`] for `resumed`); the flag answered
/// is `false` when another attempt had committed `id` first (then the snapshot answered is not
/// the stored one: read it).
async fn create(
    state: &AppState,
    principal: &Principal,
    input: CreateInput,
    id: String,
    resumed: bool,
) -> Result<(Snapshot, Vec<SnapshotMessage>, bool), ApiError> {
    let org = &principal.organization_id;
    let convos = ConvoStore::new(&state.dynamo, &state.config.table_name);
    let headers = convos.contact_convos(org, &input.contact_id).await?;
    if headers.is_empty() {
        return Err(ApiError::not_found("Contact not found"));
    }
    let mut all = Vec::new();
    for c in &headers {
        all.extend(convos.messages(org, &c.agent_id, &c.id).await?);
    }
    all.sort_by(|a, b| (&a.ts, &a.id).cmp(&(&b.ts, &b.id)));
    let chosen: Vec<SnapshotMessage> = match &input.message_ids {
        None => all.iter().map(SnapshotMessage::from).collect(),
        Some(ids) => {
            let known: std::collections::HashSet<&str> = all.iter().map(|m| m.id.as_str()).collect();
            let unknown: Vec<&String> = ids.iter().filter(|id| !known.contains(id.as_str())).collect();
            if !unknown.is_empty() {
                let list = unknown.iter().take(20).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                return Err(ApiError::validation_issues(
                    format!("messageIds are not messages of contact {}: {list}", input.contact_id),
                    unknown.iter().map(|id| format!("messageIds: {id} is not a message of this contact")).collect(),
                ));
            }
            let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            all.iter().filter(|m| wanted.contains(m.id.as_str())).map(SnapshotMessage::from).collect()
        }
    };
    if chosen.is_empty() {
        return Err(ApiError::validation("The contact has no messages to capture"));
    }
    let bytes = serde_json::to_vec(&chosen).map_err(|e| ApiError::internal("encode messages", e))?.len();
    if bytes > MAX_MESSAGE_BYTES {
        return Err(ApiError::validation(format!(
            "messageIds: the chosen messages are {bytes} bytes; a snapshot holds at most {MAX_MESSAGE_BYTES} (choose fewer messageIds)"
        )));
    }
    if chosen.len() > MAX_MESSAGES {
        return Err(ApiError::validation(format!(
            "messageIds: a snapshot holds at most {MAX_MESSAGES} messages; this contact has {} (choose messageIds)",
            chosen.len()
        )));
    }
    // The lead fields of the contact's most recently active conversation describe the customer.
    let lead = headers.iter().max_by(|a, b| a.ts().cmp(b.ts())).ok_or_else(|| ApiError::not_found("Contact not found"))?;
    let (first_name, last_name) = match lead.user_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => match name.split_once(' ') {
            Some((f, l)) => (Some(f.to_string()), Some(l.trim().to_string())),
            None => (Some(name.to_string()), None),
        },
        _ => (None, None),
    };
    let now = crate::time::now_rfc3339();
    let mut snap = Snapshot {
        id,
        organization_id: org.clone(),
        user: UserRef {
            id: principal.user_id.clone(),
            first_name: principal.given_name.clone(),
            last_name: principal.family_name.clone(),
            email: principal.email.clone(),
        },
        contact: ContactRef {
            id: input.contact_id.clone(),
            first_name,
            last_name,
            phone_number: lead.user_phone.clone(),
            email: lead.user_email.clone(),
            channel_type: lead.origin.clone(),
        },
        customer_name: lead.user_name.clone(),
        customer_phone: lead.user_phone.clone(),
        customer_email: lead.user_email.clone(),
        message_count: chosen.len(),
        snapshot_date: now.clone(),
        conversation_start_date: chosen.first().map(|m| m.timestamp.clone()),
        conversation_end_date: chosen.last().map(|m| m.timestamp.clone()),
        notes: input.notes,
        tags: input.tags.unwrap_or_default(),
        quality: input.quality,
        category: input.category,
        is_archived: false,
        created_at: now.clone(),
        updated_at: now,
        chunks: 0,
        chunk_set: String::new(),
        version: 1,
    };
    // Registered before the snapshot commits, so the scheduled export never misses its organization.
    crate::jobs::schedule::register(state, &snap.organization_id).await?;
    let committed = SnapshotStore::new(&state.dynamo, &state.config.table_name).create(&mut snap, &chosen, resumed).await?;
    Ok((snap, chosen, committed))
}

/// `GET /api/training/snapshots/{id}`: the whole document, `userId` / `contactId` populated.
pub async fn get_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let id = snapshot_id(&req)?;
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        let (snap, messages) = store.get(&principal.organization_id, &id).await?.ok_or_else(not_found)?;
        let doc = snap.document(true, Some(&messages));
        Ok(with_etag(json_response(StatusCode::OK, &json!({ "success": true, "data": doc })), &snap))
    })
    .await
}

/// Default page size of the snapshot list.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page size of the snapshot list.
pub const MAX_LIMIT: usize = 100;

fn time_param(req: &Request, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    query_param(req, name)
        .map(|v| {
            crate::time::parse_rfc3339(v)
                .ok_or_else(|| ApiError::validation(format!("`{name}` must be an RFC 3339 timestamp such as 2026-05-18T14:30:00Z")))
        })
        .transpose()
}

/// Reads the filters shared by the list and the export; `archived` is the caller's.
pub fn filters(req: &Request, archived: Archived) -> Result<Filters, ApiError> {
    let text = |name: &str| query_param(req, name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let contact_id = text("contactId");
    if contact_id.as_deref().is_some_and(|c| !crate::http::is_valid_id(c)) {
        return Err(ApiError::validation("`contactId` is not a valid id"));
    }
    let f = Filters {
        quality: text("quality"),
        category: text("category"),
        tags: query_params(req, "tag").into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
        archived,
        from: time_param(req, "from")?,
        to: time_param(req, "to")?,
        contact_id,
    };
    if let (Some(from), Some(to)) = (f.from, f.to) {
        if from > to {
            return Err(ApiError::validation("`from` must not be after `to`"));
        }
    }
    Ok(f)
}

/// `GET /api/training/snapshots`: filtered, newest first, cursor-paginated.
pub async fn list_snapshots(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let org = &principal.organization_id;
        let archived = match query_param(&req, "archived") {
            None | Some("false") => Archived::No,
            Some("true") => Archived::Yes,
            Some("all") => Archived::All,
            Some(_) => return Err(ApiError::validation("`archived` must be false, true or all")),
        };
        let f = filters(&req, archived)?;
        let limit = limit_param(&req, DEFAULT_LIMIT, MAX_LIMIT)?;
        let include_messages = match query_param(&req, "includeMessages") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ApiError::validation("`includeMessages` must be true or false")),
        };
        let scope = f.scope();
        let after = match query_param(&req, "cursor") {
            None => None,
            Some(c) => {
                let key = state.cursors.decode(org, &scope, c)?;
                Some(key.get("id").and_then(|v| v.as_s().ok()).cloned().ok_or_else(|| ApiError::validation("Invalid cursor"))?)
            }
        };
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        let (page, next, _) = store.list(org, &f, limit, after.as_deref()).await?;
        let data: Vec<_> = if include_messages {
            // The headers are in hand: fetch only the chunks, by key, for the whole page.
            let messages = store.messages_of(&page, &mut Default::default()).await?;
            page.iter().zip(&messages).map(|(snap, m)| snap.document(true, Some(m))).collect()
        } else {
            page.iter().map(|snap| snap.document(true, None)).collect()
        };
        let next_key = next.map(|id| std::collections::HashMap::from([("id".to_string(), aws_sdk_dynamodb::types::AttributeValue::S(id))]));
        let next_cursor = state.cursors.encode(org, &scope, next_key.as_ref())?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "success": true, "message": "Training snapshots retrieved successfully", "data": data, "nextCursor": next_cursor }),
        ))
    })
    .await
}

/// `PATCH /api/training/snapshots/{id}`: notes, tags, quality, category, isArchived.
pub async fn update_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let id = snapshot_id(&req)?;
        let patch: PatchInput = read_json(&req, state.config.max_body_bytes)?;
        let patch = patch.validate()?;
        let if_match = req
            .headers()
            .get(header::IF_MATCH)
            .map(|v| v.to_str().map(|s| s.trim().trim_matches('"').to_string()))
            .transpose()
            .map_err(|_| ApiError::validation("If-Match must be the document's updatedAt"))?
            // `*` matches any current version (RFC 9110); the snapshot must still exist.
            .filter(|v| v != "*");
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        let snap = store.patch(&principal.organization_id, &id, &patch, if_match.as_deref()).await?;
        Ok(with_etag(success(StatusCode::OK, "Training snapshot updated successfully", &snap.document(true, None)), &snap))
    })
    .await
}

/// `DELETE /api/training/snapshots/{id}`: hard delete, with everything stored for it.
pub async fn delete_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let id = snapshot_id(&req)?;
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        if !store.delete(&principal.organization_id, &id).await? {
            return Err(not_found());
        }
        Ok(success(StatusCode::OK, "Training snapshot deleted successfully", &json!({ "_id": id })))
    })
    .await
}
