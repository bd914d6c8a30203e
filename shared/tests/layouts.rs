//! The two storage layouts of a snapshot's messages (`shared::snapshots::store`): in the header
//! item when small, in chunk items beside it otherwise and in data written by earlier versions.
//! Every reader takes both alike.

mod support;

use serde_json::{json, Value};
use shared::snapshots::store::{Layout, SnapshotStore};
use shared::snapshots::{Snapshot, SnapshotMessage};
use support::{call, create_snapshot, item_str, items_with_prefix, new_org, seed_contact, state, token};

/// The sort keys stored in snapshot `id`'s partition, sorted, and whether its header holds
/// the messages.
async fn stored(state: &shared::AppState, org: &str, id: &str) -> (Vec<String>, bool) {
    let items = items_with_prefix(state, &format!("ORG#{org}#SNAP#{id}")).await;
    let mut sks: Vec<String> = items.iter().map(|i| item_str(i, "SK")).collect();
    sks.sort();
    let inline = items.iter().any(|i| item_str(i, "SK") == "META" && i.contains_key("data"));
    (sks, inline)
}

#[tokio::test]
async fn a_small_snapshot_is_one_item_and_a_large_one_is_chunked() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    // A created header is about 890 bytes: one short message fits in its first kilobyte.
    seed_contact(&state, &tok, "ag", "k1", 40, |i| {
        if i == 0 {
            "ok".into()
        } else {
            format!("line {i}: {}", "words ".repeat(40))
        }
    })
    .await;
    let small = create_snapshot(&state, &tok, json!({"contactId": "k1", "messageIds": ["m00000"]})).await;
    let large = create_snapshot(&state, &tok, json!({"contactId": "k1", "messageIds": ["m00000", "m00001"]})).await;
    assert_eq!(stored(&state, &org, &small).await, (vec!["META".to_string()], true));
    assert_eq!(stored(&state, &org, &large).await, (vec!["META".to_string(), "MSGS#00000".to_string()], false));
    for (id, count) in [(&small, 1), (&large, 2)] {
        let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
        assert_eq!(g.status, 200, "{}", g.body);
        let messages = g.body["data"]["messages"].as_array().unwrap();
        assert_eq!(messages.len(), count);
        assert_eq!(messages[0]["content"], "ok");
        assert_eq!(messages[count - 1]["id"], format!("m{:05}", count - 1));
    }
}

#[tokio::test]
async fn by_default_every_snapshot_is_chunked_as_earlier_versions_read_them() {
    // The default, in the code and in the template, is `chunks`.
    assert!(!shared::Config::from_env().unwrap().small_snapshots_in_header, "SNAPSHOT_LAYOUT is unset here");
    let template = include_str!("../../template.yaml");
    assert!(template.contains("  SnapshotLayout:\n    Type: String\n    Default: chunks\n"));
    assert!(template.contains("        SNAPSHOT_LAYOUT: !Ref SnapshotLayout\n"), "in the functions' Globals");
    let state = support::state_with(|c| c.small_snapshots_in_header = false).await;
    let org = new_org();
    let tok = token(&org);
    seed_contact(&state, &tok, "ag", "k1", 1, |_| "ok".into()).await;
    let id = create_snapshot(&state, &tok, json!({"contactId": "k1"})).await;
    assert_eq!(stored(&state, &org, &id).await, (vec!["META".to_string(), "MSGS#00000".to_string()], false));
    let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
    assert_eq!(g.body["data"]["messages"][0]["content"], "ok");
}

/// Two snapshots of the same messages, one in each layout.
fn twins(org: &str) -> Vec<(Snapshot, Vec<SnapshotMessage>)> {
    let messages = vec![SnapshotMessage {
        id: "m1".into(),
        content: "How much is the premium plan? 🙂 \"quoted\"\nnew line".into(),
        sender: "contact".into(),
        sender_type: "HUMAN".into(),
        timestamp: "2026-05-18T13:00:00.000Z".into(),
    }];
    (0..2)
        .map(|_| {
            let (id, at) = shared::ids::new_id();
            let now = shared::time::to_rfc3339(at);
            let snap: Snapshot = serde_json::from_value(json!({
                "_id": id, "organizationId": org, "user": {"_id": "u"}, "contact": {"_id": "k"},
                "messageCount": 1, "snapshotDate": now, "quality": "good", "isArchived": false,
                "createdAt": now, "updatedAt": now, "version": 1
            }))
            .unwrap();
            (snap, messages.clone())
        })
        .collect()
}

/// The messages of every snapshot of a list's `data`, by id.
fn messages_by_id(list: &Value) -> std::collections::BTreeMap<String, Value> {
    list.as_array().unwrap().iter().map(|d| (d["_id"].as_str().unwrap().to_string(), d["messages"].clone())).collect()
}

#[tokio::test]
async fn both_layouts_read_alike_in_get_list_export_patch_and_delete() {
    let state = state().await;
    let org = new_org();
    let tok = token(&org);
    let store = SnapshotStore::new(&state.dynamo, &state.config.table_name);
    let mut snaps = twins(&org);
    let chunked = snaps.pop().unwrap();
    let (ids, want) = ([snaps[0].0.id.clone(), chunked.0.id.clone()], serde_json::to_value(&chunked.1).unwrap());
    store.import_as(vec![chunked], Layout::Chunks).await.unwrap();
    store.import_as(snaps, Layout::SmallInHeader).await.unwrap();
    assert_eq!(stored(&state, &org, &ids[0]).await, (vec!["META".to_string()], true));
    assert_eq!(stored(&state, &org, &ids[1]).await, (vec!["META".to_string(), "MSGS#00000".to_string()], false));

    for id in &ids {
        let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(g.body["data"]["messages"], want);
    }
    let list = call(&state, "GET", "/api/training/snapshots?includeMessages=true", &tok, None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let listed = messages_by_id(&list.body["data"]);
    assert_eq!(listed.len(), 2);
    assert!(listed.values().all(|m| *m == want), "{listed:?}");
    let export = call(&state, "GET", "/api/training/export", &tok, None).await;
    assert_eq!(export.status, 200);
    let exported: Vec<&Value> = export.body["data"].as_array().unwrap().iter().map(|i| &i["conversation"]).collect();
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0], exported[1]);
    assert_eq!(exported[0][0]["content"], want[0]["content"]);

    // A PATCH leaves the messages where they are, in either layout.
    for id in &ids {
        let p =
            call(&state, "PATCH", &format!("/api/training/snapshots/{id}"), &tok, Some(json!({"tags": ["t"]}))).await;
        assert_eq!(p.status, 200, "{}", p.body);
        let g = call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await;
        assert_eq!((&g.body["data"]["messages"], &g.body["data"]["tags"]), (&want, &json!(["t"])));
    }
    assert!(stored(&state, &org, &ids[0]).await.1);

    // A delete leaves the deletion record alone in either layout.
    for id in &ids {
        let d = call(&state, "DELETE", &format!("/api/training/snapshots/{id}"), &tok, None).await;
        assert_eq!(d.status, 200, "{}", d.body);
        assert_eq!(call(&state, "GET", &format!("/api/training/snapshots/{id}"), &tok, None).await.status, 404);
        assert_eq!(stored(&state, &org, id).await, (vec!["TOMBSTONE".to_string()], false));
    }
}
