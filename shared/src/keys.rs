//! Every DynamoDB and S3 key, built here from an [`Org`], so a key without its tenant cannot be
//! written: an `Org` is made only from a verified principal ([`Org::verified`]) or from an
//! organization id this service stored itself ([`Org::stored`]), never from request input.
//!
//! | item                 | PK                                     | SK                |
//! |----------------------|----------------------------------------|-------------------|
//! | conversation header  | `ORG#<org>#AGENT#<agent>`              | `CONVO#<convo>`   |
//! | message              | `ORG#<org>#CONVO#<agent>#<convo>`      | `MSG#<msgId>`     |
//! | snapshot header      | `ORG#<org>#SNAP#<id>`                  | `META`            |
//! | snapshot messages    | `ORG#<org>#SNAP#<id>`                  | `MSGS#[<set>#]<n>`|
//! | deletion record      | `ORG#<org>#SNAP#<id>`                  | `TOMBSTONE`       |
//! | idempotency record   | `ORG#<org>#IDEM#<operation>#<sha256>`  | `IDEM`            |
//! | export job           | `ORG#<org>#JOBS`                       | `JOB#<id>`        |
//! | schedule state       | `ORG#<org>#SCHEDULE`                   | `SCHEDULE`        |
//! | scheduled run        | `SCHEDULED#RUNS`                       | `RUN#<scheduled time>` |
//!
//! | index partition      | key                                                           |
//! |----------------------|---------------------------------------------------------------|
//! | GSI1: agent's convos | `ORG#<org>#AGENT#<agent>` (sort: `<lastActivity>#<convo>`)    |
//! | GSI2: contact's convos | `ORG#<org>#CONTACT#<contact>`                               |
//! | GSI1-4: snapshot lists | `ORG#<org>#SNAPS#A<0/1>[#Q#<quality>/#C#<category>/#CT#<contact>]` (sort: id) |
//! | GSI5: changed snapshots | `ORG#<org>#CHANGED` (sort: `<updatedAt or deletedAt>#<id>`) |
//! | GSI1: organizations  | `SCHEDULED#ORGS` (sort: the organization)                     |
//!
//! Export files: `exports/<org>/<kind>/<yyyy-mm-dd>/<128 random bits, hex>/<file name>`.
//! A unit test below checks every builder against these tables, and the key table of
//! `docs/architecture.md` against them.

use std::fmt;

use crate::auth::Principal;

/// An organization id whose origin is trusted: a verified token, or this service's own storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Org(String);

impl Org {
    /// The caller's organization, from a verified token.
    pub fn verified(principal: &Principal) -> Self {
        Self(principal.organization_id.clone())
    }

    /// An organization id read back from an item or event this service wrote itself (a stored
    /// snapshot or job, the schedule's registry, the worker's event); never request input.
    pub fn stored(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Org {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Partition of an agent's conversation headers (and GSI1's partition of its conversations).
pub fn agent(org: &Org, agent: &str) -> String {
    format!("ORG#{org}#AGENT#{agent}")
}

/// Partition of a conversation's messages.
pub fn messages(org: &Org, agent: &str, convo: &str) -> String {
    format!("ORG#{org}#CONVO#{agent}#{convo}")
}

/// GSI2 partition: a contact's conversations.
pub fn contact(org: &Org, contact: &str) -> String {
    format!("ORG#{org}#CONTACT#{contact}")
}

/// Partition of a snapshot's items (header and message chunks).
pub fn snapshot(org: &Org, id: &str) -> String {
    format!("ORG#{org}#SNAP#{id}")
}

/// Which snapshot list an index partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotList<'a> {
    /// GSI1: every snapshot.
    All,
    /// GSI2: by quality.
    Quality(&'a str),
    /// GSI3: by category.
    Category(&'a str),
    /// GSI4: by contact.
    Contact(&'a str),
}

/// The list partition of an organization's snapshots in one archive state.
pub fn snapshot_list(org: &Org, archived: bool, list: SnapshotList<'_>) -> String {
    let a = if archived { "A1" } else { "A0" };
    match list {
        SnapshotList::All => format!("ORG#{org}#SNAPS#{a}"),
        SnapshotList::Quality(q) => format!("ORG#{org}#SNAPS#{a}#Q#{q}"),
        SnapshotList::Category(c) => format!("ORG#{org}#SNAPS#{a}#C#{c}"),
        SnapshotList::Contact(c) => format!("ORG#{org}#SNAPS#{a}#CT#{c}"),
    }
}

/// GSI5 partition: an organization's non-archived snapshots by last change.
pub fn changed(org: &Org) -> String {
    format!("ORG#{org}#CHANGED")
}

/// An idempotency record: per organization and operation, by the key's SHA-256 (hex).
pub fn idempotency(org: &Org, operation: &str, key_sha256: &str) -> String {
    format!("ORG#{org}#IDEM#{operation}#{key_sha256}")
}

/// Partition of an organization's export jobs.
pub fn jobs(org: &Org) -> String {
    format!("ORG#{org}#JOBS")
}

/// Partition of an organization's scheduled-export state (registry entry and watermark).
pub fn schedule(org: &Org) -> String {
    format!("ORG#{org}#SCHEDULE")
}

/// Partition of the scheduled runs' items: each run's progress over every organization (no
/// organization's data, so no organization in its key), newest last.
pub const SCHEDULED_RUNS: &str = "SCHEDULED#RUNS";

/// Sort key of a scheduled run's item.
pub fn scheduled_run(scheduled_time: &str) -> String {
    format!("RUN#{scheduled_time}")
}

/// An export file's object key: unguessable (128 random bits), namespaced by organization.
pub fn export_object(org: &Org, kind: &str, date: &str, random: u128, file: &str) -> String {
    format!("exports/{org}/{kind}/{date}/{random:032x}/{file}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_starts_with_its_organization_as_the_module_table_says() {
        let o = Org::stored("o1");
        let doc = include_str!("keys.rs");
        let architecture = include_str!("../../docs/architecture.md");
        let cases = [
            (agent(&o, "a"), "ORG#<org>#AGENT#<agent>"),
            (messages(&o, "a", "c"), "ORG#<org>#CONVO#<agent>#<convo>"),
            (contact(&o, "k"), "ORG#<org>#CONTACT#<contact>"),
            (snapshot(&o, "i"), "ORG#<org>#SNAP#<id>"),
            (snapshot_list(&o, false, SnapshotList::All), "ORG#<org>#SNAPS#A<0/1>"),
            (changed(&o), "ORG#<org>#CHANGED"),
            (idempotency(&o, "op", "h"), "ORG#<org>#IDEM#<operation>#<sha256>"),
            (jobs(&o), "ORG#<org>#JOBS"),
            (schedule(&o), "ORG#<org>#SCHEDULE"),
            (export_object(&o, "k", "d", 1, "f"), "exports/<org>/<kind>/<yyyy-mm-dd>/"),
        ];
        for (key, documented) in cases {
            assert!(doc.contains(documented), "{documented} is in the table");
            assert!(key.starts_with("ORG#o1#") || key.starts_with("exports/o1/"), "{key}");
        }
        // The item keys of docs/architecture.md's table.
        for item in [
            "ORG#<org>#AGENT#<agent>",
            "ORG#<org>#CONVO#<agent>#<convo>",
            "ORG#<org>#SNAP#<id>",
            "ORG#<org>#IDEM#<operation>#<sha256>",
            "ORG#<org>#JOBS",
            "ORG#<org>#SCHEDULE",
        ] {
            assert!(architecture.contains(item) && doc.contains(item), "{item}");
        }
        for run in [SCHEDULED_RUNS, "RUN#<scheduled time>"] {
            assert!(architecture.contains(run) && doc.contains(run), "{run}");
        }
        assert_eq!(scheduled_run("2026-01-01T00:00:00.000Z"), "RUN#2026-01-01T00:00:00.000Z");
        assert_eq!(snapshot_list(&o, true, SnapshotList::Quality("q")), "ORG#o1#SNAPS#A1#Q#q");
        assert_eq!(snapshot_list(&o, false, SnapshotList::Category("c")), "ORG#o1#SNAPS#A0#C#c");
        assert_eq!(snapshot_list(&o, false, SnapshotList::Contact("k")), "ORG#o1#SNAPS#A0#CT#k");
        assert_eq!(messages(&o, "a", "c"), "ORG#o1#CONVO#a#c");
        assert_eq!(
            export_object(&o, "training", "2026-01-01", 255, "f.json"),
            format!("exports/o1/training/2026-01-01/{:032x}/f.json", 255)
        );
    }
}
