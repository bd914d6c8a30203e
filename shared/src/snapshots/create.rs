//! Creating a snapshot: the chosen messages of a contact's conversations, frozen with the
//! customer's lead fields and the capturing user, stored by [`SnapshotStore::create`].

use super::model::{ContactRef, CreateInput, Snapshot, SnapshotMessage, UserRef, MAX_MESSAGES, MAX_MESSAGE_BYTES};
use super::store::{Layout, SnapshotStore};
use crate::auth::Principal;
use crate::convos::model::{Convo, Message};
use crate::convos::store::ConvoStore;
use crate::error::ApiError;
use crate::keys::Org;
use crate::AppState;

/// Creates the snapshot `id` (see [`SnapshotStore::create`] for `resumed`); the flag answered
/// is `false` when another attempt had committed `id` first (then the snapshot answered is not
/// the stored one: read it).
pub async fn create(
    state: &AppState,
    principal: &Principal,
    input: CreateInput,
    id: String,
    resumed: bool,
) -> Result<(Snapshot, Vec<SnapshotMessage>, bool), ApiError> {
    let org = &Org::verified(principal);
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
    let chosen = choose(&all, &input)?;
    // The lead fields of the contact's most recently active conversation describe the customer.
    let lead =
        headers.iter().max_by(|a, b| a.ts().cmp(b.ts())).ok_or_else(|| ApiError::not_found("Contact not found"))?;
    let mut snap = new_snapshot(id, org, principal, input, lead, &chosen, resumed);
    // Registered before the snapshot commits, so the scheduled export never misses its organization.
    crate::jobs::schedule::register(state, org).await?;
    let layout = if state.config.small_snapshots_in_header { Layout::SmallInHeader } else { Layout::Chunks };
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let committed = store.create(&mut snap, &chosen, layout, resumed).await?;
    Ok((snap, chosen, committed))
}

/// The messages `input` chooses among the contact's messages `all` (in time order), checked
/// against what a snapshot holds.
fn choose(all: &[Message], input: &CreateInput) -> Result<Vec<SnapshotMessage>, ApiError> {
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
        return Err(ApiError::invalid("contactId", "has no messages to capture"));
    }
    let bytes = serde_json::to_vec(&chosen).map_err(|e| ApiError::internal("encode messages", e))?.len();
    if bytes > MAX_MESSAGE_BYTES {
        return Err(ApiError::invalid(
            "messageIds",
            format!("chooses {bytes} bytes of messages; a snapshot holds at most {MAX_MESSAGE_BYTES} (choose fewer messageIds)"),
        ));
    }
    if chosen.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messageIds",
            format!(
                "must choose at most {MAX_MESSAGES} messages per snapshot; this contact has {} (choose messageIds)",
                chosen.len()
            ),
        ));
    }
    Ok(chosen)
}

/// The snapshot `id` of the messages `chosen`, captured by `principal`, with the customer's
/// fields from the conversation `lead`.
fn new_snapshot(
    id: String,
    org: &Org,
    principal: &Principal,
    input: CreateInput,
    lead: &Convo,
    chosen: &[SnapshotMessage],
    resumed: bool,
) -> Snapshot {
    let (first_name, last_name) = match lead.user_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => match name.split_once(' ') {
            Some((f, l)) => (Some(f.to_string()), Some(l.trim().to_string())),
            None => (Some(name.to_string()), None),
        },
        _ => (None, None),
    };
    // `createdAt` is the instant the id names, so id order is `createdAt` order and a `from`/`to`
    // window is exactly a range of ids. A resumed create commits later than its id was made:
    // its `updatedAt` is now, so the scheduled export's change window cannot have passed it.
    let created = crate::ids::instant(&id).map_or_else(crate::time::now_rfc3339, crate::time::to_rfc3339);
    let updated = if resumed { crate::time::now_rfc3339().max(created.clone()) } else { created.clone() };
    Snapshot {
        id,
        organization_id: org.as_str().to_string(),
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
        snapshot_date: created.clone(),
        conversation_start_date: chosen.first().map(|m| m.timestamp.clone()),
        conversation_end_date: chosen.last().map(|m| m.timestamp.clone()),
        notes: input.notes,
        tags: input.tags.unwrap_or_default(),
        quality: input.quality,
        category: input.category,
        is_archived: false,
        created_at: created,
        updated_at: updated,
        chunks: 0,
        chunk_set: String::new(),
        inline: None,
        version: 1,
    }
}
