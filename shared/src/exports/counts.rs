//! What an export counted: items written, and items left out by reason. `Copy` and small, so
//! every produced item carries the counts so far and a job's checkpoint stores them.

use serde::{Deserialize, Serialize};

use super::redact::PiiType;

/// What an export counted, for headers and the download body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Items written (snapshots or conversations).
    pub items: u64,
    /// Items left out (fine-tune examples that break a rule of their target).
    pub skipped: u64,
    /// `skipped` by reason.
    #[serde(default)]
    pub reasons: Reasons,
    /// What redaction replaced, by type.
    #[serde(default)]
    pub redacted: Redacted,
    /// Deletion records written (scheduled exports: snapshots deleted or archived).
    #[serde(default)]
    pub deletions: u64,
}

impl Counts {
    /// Adds the counts of another file.
    pub fn add(&mut self, other: Counts) {
        self.items += other.items;
        self.skipped += other.skipped;
        let (a, b) = (&mut self.reasons, other.reasons);
        a.empty += b.empty;
        a.no_assistant_turn += b.no_assistant_turn;
        a.no_user_turn += b.no_user_turn;
        a.reserved_text += b.reserved_text;
        a.too_long += b.too_long;
        a.duplicate += b.duplicate;
        a.near_duplicate += b.near_duplicate;
        self.redacted.add(other.redacted);
        self.deletions += other.deletions;
    }

    /// Counts an item left out for `reason`.
    pub fn skip(&mut self, reason: SkipReason) {
        self.skipped += 1;
        self.reasons.add(reason);
    }
}

/// Why an example was left out of a fine-tune file (its code in counts and the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No message with text.
    Empty,
    /// No business-side turn to learn from.
    NoAssistantTurn,
    /// No customer turn before the last business turn (a target that wants user first).
    NoUserTurn,
    /// Text holds a string the target reserves (Bedrock: `User:`, `[EOS]`, ...).
    ReservedText,
    /// Longer than the target's bound (estimated tokens).
    TooLong,
    /// The same normalised text as an example kept before it (`dedup=exact` or `near`).
    Duplicate,
    /// Estimated similar to an example kept before it (`dedup=near`).
    NearDuplicate,
}

/// Skipped examples by reason; `Copy`, so counts stay cheap to checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reasons {
    /// [`SkipReason::Empty`].
    pub empty: u64,
    /// [`SkipReason::NoAssistantTurn`].
    pub no_assistant_turn: u64,
    /// [`SkipReason::NoUserTurn`].
    pub no_user_turn: u64,
    /// [`SkipReason::ReservedText`].
    pub reserved_text: u64,
    /// [`SkipReason::TooLong`].
    pub too_long: u64,
    /// [`SkipReason::Duplicate`].
    pub duplicate: u64,
    /// [`SkipReason::NearDuplicate`].
    pub near_duplicate: u64,
}

impl Reasons {
    /// Counts one example left out for `reason`.
    pub fn add(&mut self, reason: SkipReason) {
        let counter = match reason {
            SkipReason::Empty => &mut self.empty,
            SkipReason::NoAssistantTurn => &mut self.no_assistant_turn,
            SkipReason::NoUserTurn => &mut self.no_user_turn,
            SkipReason::ReservedText => &mut self.reserved_text,
            SkipReason::TooLong => &mut self.too_long,
            SkipReason::Duplicate => &mut self.duplicate,
            SkipReason::NearDuplicate => &mut self.near_duplicate,
        };
        *counter += 1;
    }

    /// The non-zero counts by code, as answers show them (`{"too_long": 2}`).
    pub fn by_code(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.nonzero().into_iter().collect()
    }

    /// The non-zero counts as a header value: `reserved_text=2, too_long=1` (empty when none).
    pub fn header(&self) -> String {
        self.nonzero().iter().map(|(code, n)| format!("{code}={n}")).collect::<Vec<_>>().join(", ")
    }

    /// The non-zero counts, as `(code, count)`.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("empty", self.empty),
            ("no_assistant_turn", self.no_assistant_turn),
            ("no_user_turn", self.no_user_turn),
            ("reserved_text", self.reserved_text),
            ("too_long", self.too_long),
            ("duplicate", self.duplicate),
            ("near_duplicate", self.near_duplicate),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// What redaction replaced, by type; `Copy` like the rest of the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Redacted {
    /// E-mail addresses.
    pub email: u64,
    /// Phone numbers.
    pub phone: u64,
    /// Card numbers.
    pub card: u64,
    /// IBANs.
    pub iban: u64,
    /// US social security numbers.
    pub ssn: u64,
    /// IP addresses.
    pub ip: u64,
    /// The customer's names.
    pub name: u64,
}

impl Redacted {
    /// Adds another count.
    pub fn add(&mut self, o: Redacted) {
        self.email += o.email;
        self.phone += o.phone;
        self.card += o.card;
        self.iban += o.iban;
        self.ssn += o.ssn;
        self.ip += o.ip;
        self.name += o.name;
    }

    /// The counts of one redactor (by [`PiiType`]).
    pub fn of(found: &std::collections::HashMap<PiiType, u64>) -> Self {
        let n = |t| found.get(&t).copied().unwrap_or(0);
        Self {
            email: n(PiiType::Email),
            phone: n(PiiType::Phone),
            card: n(PiiType::Card),
            iban: n(PiiType::Iban),
            ssn: n(PiiType::Ssn),
            ip: n(PiiType::Ip),
            name: n(PiiType::Name),
        }
    }

    /// The non-zero counts by type code (`{"email": 3}`).
    pub fn by_code(&self) -> std::collections::BTreeMap<&'static str, u64> {
        [
            ("email", self.email),
            ("phone", self.phone),
            ("card", self.card),
            ("iban", self.iban),
            ("ssn", self.ssn),
            ("ip", self.ip),
            ("name", self.name),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    /// The header value: `email=3, phone=1`, or `none` when nothing was found.
    pub fn header(&self) -> String {
        let found = self.by_code();
        if found.is_empty() {
            return "none".to_string();
        }
        found.iter().map(|(code, n)| format!("{code}={n}")).collect::<Vec<_>>().join(", ")
    }
}
