//! The stages an example goes through before it is written: redaction ([`super::scrub`]),
//! duplicate removal ([`super::dedup`], training exports) and encoding. Redaction comes
//! first, so two conversations that differ only in a phone number are duplicates, and dedup
//! only remembers examples that were written (one a target's rules skip is not "kept").

use std::borrow::Cow;

use phonenumber::country::Id;

use super::counts::{Counts, SkipReason};
use super::dedup::{normalise, Deduper, Verdict};
use super::examples::Role;
use super::scrub::{self, KnownCache, Redaction};
use super::training::Encoder;
use crate::convos::{Convo, Message};
use crate::error::ApiError;
use crate::snapshots::{Snapshot, SnapshotMessage};

fn role(r: Role) -> &'static str {
    match r {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// The stages of one export.
#[derive(Debug, Default)]
pub struct Stages {
    /// What is redacted (`None`: nothing).
    pub redaction: Option<Redaction>,
    /// Region of nationally written phone numbers when the customer's own number does not say.
    pub region: Option<Id>,
    /// Duplicate removal and its state (`None`: none).
    pub dedup: Option<Deduper>,
    /// Customers prepared for redaction.
    pub known: KnownCache,
}

impl Stages {
    /// The dedup state's mark after the examples staged so far (0 without dedup).
    pub fn mark(&self) -> u64 {
        self.dedup.as_ref().map_or(0, Deduper::mark)
    }

    /// A snapshot through every stage: its encoded bytes (empty when skipped or removed).
    pub fn snapshot(
        &mut self,
        encoder: &mut Encoder,
        s: &Snapshot,
        messages: &[SnapshotMessage],
    ) -> Result<Vec<u8>, ApiError> {
        let region = self.region.unwrap_or(Id::US);
        let (s, messages, redacted) = match &self.redaction {
            Some(r) => {
                let (s, m, found) = scrub::snapshot(r, (region, &mut self.known), s, messages);
                (Cow::Owned(s), Cow::Owned(m), found)
            }
            None => (Cow::Borrowed(s), Cow::Borrowed(messages), Default::default()),
        };
        let verdict = self.dedup.as_ref().and_then(|d| {
            // What the file holds is compared: a chat format's turns (merged, trimmed), else the
            // messages. An example the format leaves out is not compared: its reason counts.
            let text = match encoder.turns(&messages) {
                Some(Err(_)) => return None,
                Some(Ok(turns)) => normalise(turns.iter().map(|t| (role(t.role), t.text.as_ref()))),
                None => normalise(messages.iter().map(|m| (role(Role::of(m)), m.content.as_str()))),
            };
            Some(d.check(&text))
        });
        if let (Some(d), Some(Verdict::Duplicate { kept, similarity, exact })) = (self.dedup.as_mut(), &verdict) {
            encoder.counts.skip(if *exact { SkipReason::Duplicate } else { SkipReason::NearDuplicate });
            d.removed(kept.clone(), &s.id, *similarity);
            return Ok(Vec::new());
        }
        let skipped = encoder.counts.skipped;
        let bytes = encoder.item(&s, &messages)?;
        if encoder.counts.skipped == skipped {
            encoder.counts.redacted.add(redacted);
            if let (Some(d), Some(Verdict::Unique(fingerprint))) = (self.dedup.as_mut(), verdict) {
                d.keep(&s.id, fingerprint)?;
            }
        }
        Ok(bytes)
    }

    /// A conversation redacted (when asked), its findings added to `counts`.
    pub fn convo<'m>(
        &mut self,
        counts: &mut Counts,
        c: &'m Convo,
        messages: &'m [Message],
    ) -> (Cow<'m, Convo>, Cow<'m, [Message]>) {
        match &self.redaction {
            Some(r) => {
                let (c, m, found) = scrub::convo(r, (self.region.unwrap_or(Id::US), &mut self.known), c, messages);
                counts.redacted.add(found);
                (Cow::Owned(c), Cow::Owned(m))
            }
            None => (Cow::Borrowed(c), Cow::Borrowed(messages)),
        }
    }
}
