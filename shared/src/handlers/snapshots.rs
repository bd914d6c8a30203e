//! HTTP handlers of the Tether training snapshot routes.

use http::{header, StatusCode};
use lambda_http::{Body, Request, Response};

use super::query::filters;
use crate::error::{ApiError, Envelope, ErrorKind};
use crate::http::{
    cursor_id, handle, json_response, limit_param, next_cursor_id, query_param, read_json, success, with_header, Page,
};
use crate::idempotency::{Claim, Idempotency, MAX_KEY_LEN};
use crate::keys::Org;
use crate::snapshots::create::create;
use crate::snapshots::model::{CreateInput, PatchInput, Snapshot, SnapshotMessage};
use crate::snapshots::store::{Archived, SnapshotStore, NOT_FOUND};
use crate::AppState;

/// The `{id}` of a snapshot route: 24 hex digits, else 400.
fn snapshot_id(req: &Request) -> Result<String, ApiError> {
    use lambda_http::RequestExt;
    let id = req.path_parameters_ref().and_then(|p| p.first("id")).unwrap_or_default();
    if crate::ids::is_object_id(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(ApiError::invalid("id", "must be a snapshot id: 24 hexadecimal characters"))
    }
}

/// The `data` of a delete answer.
#[derive(serde::Serialize)]
struct Deleted<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
}

/// Checks a client's `Idempotency-Key`: printable ASCII, 1 to 255 characters.
fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid("Idempotency-Key", "must be 1-255 printable ASCII characters"));
    }
    Ok(())
}

fn with_etag(response: Response<Body>, snap: &Snapshot) -> Response<Body> {
    with_header(response, header::ETAG, &format!("\"{}\"", snap.updated_at))
}

/// `POST /api/training/snapshots`: freezes the chosen messages of a contact's conversations.
pub async fn create_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let input: CreateInput = read_json(&req, state.config.max_body_bytes)?;
        let input = input.validate()?;
        let table = &state.config.table_name;
        let org = &Org::verified(&principal);
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
                let (snap, messages) = store.get(org, &id).await?.ok_or(NOT_FOUND)?;
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
                let (snap, messages) = store.get(org, &id).await?.ok_or(NOT_FOUND)?;
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
    with_etag(
        success(StatusCode::CREATED, "Training snapshot created successfully", &snap.document(false, Some(messages))),
        snap,
    )
}

/// `GET /api/training/snapshots/{id}`: the whole document, `userId` / `contactId` populated.
pub async fn get_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let id = snapshot_id(&req)?;
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        let (snap, messages) = store.get(&Org::verified(&principal), &id).await?.ok_or(NOT_FOUND)?;
        let doc = snap.document(true, Some(&messages));
        // Tether's GET answers `{success, data}`, without a message.
        #[derive(serde::Serialize)]
        struct Found<'a> {
            success: bool,
            data: crate::snapshots::model::SnapshotDocument<'a>,
        }
        Ok(with_etag(json_response(StatusCode::OK, &Found { success: true, data: doc }), &snap))
    })
    .await
}

/// Default page size of the snapshot list.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page size of the snapshot list.
pub const MAX_LIMIT: usize = 100;

/// `GET /api/training/snapshots`: filtered, newest first, cursor-paginated.
pub async fn list_snapshots(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let org = &Org::verified(&principal);
        let archived = match query_param(&req, "archived") {
            None | Some("false") => Archived::No,
            Some("true") => Archived::Yes,
            Some("all") => Archived::All,
            Some(_) => return Err(ApiError::invalid("archived", "must be false, true or all")),
        };
        let f = filters(&req, archived)?;
        let limit = limit_param(&req, DEFAULT_LIMIT, MAX_LIMIT)?;
        let include_messages = match query_param(&req, "includeMessages") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ApiError::invalid("includeMessages", "must be true or false")),
        };
        let scope = f.scope();
        let after = cursor_id(state, &req, org, &scope)?;
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        let (page, next, _) = store.list(org, &f, limit, after.as_deref()).await?;
        // The headers are in hand: fetch only the chunks, by key, for the whole page.
        let messages =
            if include_messages { Some(store.messages_of(&page, &mut Default::default()).await?) } else { None };
        let data: Vec<_> = match &messages {
            Some(messages) => page.iter().zip(messages).map(|(snap, m)| snap.document(true, Some(m))).collect(),
            None => page.iter().map(|snap| snap.document(true, None)).collect(),
        };
        let next_cursor = next_cursor_id(state, org, &scope, next)?;
        Ok(Page::new("Training snapshots retrieved successfully", data, next_cursor).into_response())
    })
    .await
}

/// `PATCH /api/training/snapshots/{id}`: notes, tags, quality, category, isArchived.
pub async fn update_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let id = snapshot_id(&req)?;
        let patch: PatchInput = read_json(&req, state.config.max_body_bytes)?;
        let patch = patch.validate()?;
        let if_match = if_match(req.headers())?;
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        let snap = store.patch(&Org::verified(&principal), &id, &patch, if_match.as_deref()).await?;
        Ok(with_etag(
            success(StatusCode::OK, "Training snapshot updated successfully", &snap.document(true, None)),
            &snap,
        ))
    })
    .await
}

/// `If-Match` (RFC 9110 §13.1.1) as the `updatedAt` values it accepts: `None` without the header
/// or with `*` (any current version; the snapshot must still exist), else every value listed,
/// any one of which matches. The ETag is `"<updatedAt>"`; a bare `<updatedAt>` (older clients)
/// is accepted too. Weak tags (`W/"..."`) never match (If-Match compares strongly), so a list
/// of only those matches nothing (412). Several `If-Match` lines are one list. Anything else,
/// or `*` within a list, is 400.
fn if_match(headers: &http::HeaderMap) -> Result<Option<Vec<String>>, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "If-Match",
            "must be `*` or a comma-separated list of the document's ETag (its updatedAt, quoted)",
        )
    };
    let mut lines = headers.get_all(header::IF_MATCH).iter().peekable();
    if lines.peek().is_none() {
        return Ok(None);
    }
    let mut members = Vec::new();
    for line in lines {
        members.extend(entity_tags(line.to_str().map_err(|_| invalid())?).ok_or_else(invalid)?);
    }
    match members.as_slice() {
        [EntityTag::Any] => Ok(None),
        m if m.contains(&EntityTag::Any) => Err(invalid()),
        m => Ok(Some(
            m.iter()
                .filter_map(|t| match t {
                    EntityTag::Strong(v) => Some(v.to_string()),
                    _ => None,
                })
                .collect(),
        )),
    }
}

/// One member of an `If-Match` list.
#[derive(Debug, PartialEq, Eq)]
enum EntityTag<'a> {
    /// `*`.
    Any,
    /// `"<value>"`, or a bare `<value>` without quotes, commas or whitespace.
    Strong(&'a str),
    /// `W/"<value>"`: never matches in If-Match.
    Weak,
}

/// The members of one `If-Match` line (`#entity-tag`, RFC 9110 §5.6.1: empty members and
/// whitespace around commas are ignored; entity-tags may contain commas inside their quotes).
/// `None` when the line is not such a list.
fn entity_tags(line: &str) -> Option<Vec<EntityTag<'_>>> {
    let ows = [' ', '\t'];
    let mut members = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(members);
        }
        let (weak, tag) = match rest.strip_prefix("W/") {
            Some(tag) => (true, tag),
            None => (false, rest),
        };
        let (member, after) = if let Some(quoted) = tag.strip_prefix('"') {
            let end = quoted.find('"')?;
            (if weak { EntityTag::Weak } else { EntityTag::Strong(&quoted[..end]) }, &quoted[end + 1..])
        } else {
            let end = tag.find(',').unwrap_or(tag.len());
            let bare = tag[..end].trim_end_matches(ows);
            if weak || bare.is_empty() || bare.contains(['"', ' ', '\t']) {
                return None;
            }
            (if bare == "*" { EntityTag::Any } else { EntityTag::Strong(bare) }, &tag[end..])
        };
        rest = after.trim_start_matches(ows);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
        members.push(member);
    }
}

/// `DELETE /api/training/snapshots/{id}`: hard delete, with everything stored for it.
pub async fn delete_snapshot(state: &AppState, req: Request) -> Response<Body> {
    handle(state, req, Envelope::Tether, |principal, req| async move {
        let id = snapshot_id(&req)?;
        let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
        if !store.delete(&Org::verified(&principal), &id, state.config.deletion_record_for).await? {
            return Err(NOT_FOUND.into());
        }
        Ok(success(StatusCode::OK, "Training snapshot deleted successfully", &Deleted { id: &id }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(lines: &[&str]) -> Result<Option<Vec<String>>, u16> {
        let mut headers = http::HeaderMap::new();
        for line in lines {
            headers.append(header::IF_MATCH, http::HeaderValue::from_str(line).unwrap());
        }
        if_match(&headers).map_err(|e| e.kind.status().as_u16())
    }

    fn tags(list: &[&str]) -> Result<Option<Vec<String>>, u16> {
        Ok(Some(list.iter().map(|t| t.to_string()).collect()))
    }

    #[test]
    fn if_match_is_a_list_of_strong_entity_tags_or_a_star() {
        const T: &str = "2026-05-18T14:30:00.000Z";
        assert_eq!(parsed(&[]), Ok(None));
        assert_eq!(parsed(&["*"]), Ok(None));
        assert_eq!(parsed(&[" * "]), Ok(None));
        assert_eq!(parsed(&[&format!("\"{T}\"")]), tags(&[T]));
        assert_eq!(parsed(&[T]), tags(&[T]), "bare, as older clients send it");
        assert_eq!(parsed(&[&format!("\"stale\", \"{T}\"")]), tags(&["stale", T]));
        assert_eq!(parsed(&[&format!("\"stale\",\"{T}\" ,, ")]), tags(&["stale", T]), "empty members are ignored");
        assert_eq!(parsed(&["\"a\"", "\"b\", \"c\""]), tags(&["a", "b", "c"]), "several lines are one list");
        assert_eq!(parsed(&["\"a,b\", c"]), tags(&["a,b", "c"]), "a comma inside quotes belongs to the tag");
        assert_eq!(parsed(&[&format!("W/\"{T}\"")]), tags(&[]), "weak tags never match");
        assert_eq!(parsed(&[&format!("W/\"{T}\", \"x\"")]), tags(&["x"]));
        assert_eq!(parsed(&[""]), tags(&[]));
        for bad in ["\"x\"; evil=\"1\"", "\"unterminated", "\"a\" \"b\"", "*, \"a\"", "W/bare", "a b", "\"a\"b", "W/*"]
        {
            assert_eq!(parsed(&[bad]), Err(400), "{bad}");
        }
        assert_eq!(parsed(&["*", "\"a\""]), Err(400), "`*` is only valid alone");
    }
}
