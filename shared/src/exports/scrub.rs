//! The redaction stage of every export: which types a caller asked for (`redact=pii`,
//! `redactTypes`), what the deployment enforces (`EXPORT_REDACTION=required`), and an example
//! (a snapshot or a conversation, with its messages) with its texts and customer fields
//! replaced by the placeholders of [`super::redact`]. It runs before encoding, so every format
//! writes the same redacted example, and the encoders stay unaware of it.

use super::counts::Redacted;
pub use super::redact::Redaction;
use super::redact::{Identity, Known, PiiType, Redactor};
use crate::convos::{Convo, Message};
use crate::error::ApiError;
use crate::snapshots::{Snapshot, SnapshotMessage};
use std::collections::HashMap;
use std::sync::Arc;

use phonenumber::country::Id;

/// The redaction an export runs with: the caller's, or every type when the deployment
/// requires redaction (whatever a job stored before the setting changed).
pub fn effective(asked: Option<&Redaction>, required: bool) -> Option<Redaction> {
    if required {
        return Some(Redaction::all());
    }
    asked.cloned()
}

/// Validates `redact` (`none` or `pii`) and `redactTypes` (type codes) into the redaction an
/// export asks for. With `required` (`EXPORT_REDACTION=required`) every type is redacted:
/// `redact=none` and a narrower `redactTypes` answer 400 saying so.
pub fn redaction(
    redact: Option<&str>,
    types: Option<Vec<String>>,
    required: bool,
) -> Result<Option<Redaction>, ApiError> {
    let mut issues = Vec::new();
    let parsed: Vec<PiiType> = match &types {
        None => PiiType::ALL.to_vec(),
        Some(codes) => {
            let mut parsed = Vec::new();
            for code in codes.iter().map(|c| c.trim()) {
                match PiiType::parse(code) {
                    Some(t) => parsed.push(t),
                    None => issues.push(format!(
                        "redactTypes: `{code}` is not a type (email, phone, card, iban, ssn, ip or name)"
                    )),
                }
            }
            if codes.is_empty() {
                issues.push("redactTypes: must name at least one type".to_string());
            }
            parsed
        }
    };
    let on = match redact {
        None => required || types.is_some(),
        Some("pii") => true,
        Some("none") if required => {
            issues.push("redact: this deployment redacts every export (EXPORT_REDACTION=required)".to_string());
            true
        }
        Some("none") if types.is_some() => {
            issues.push("redactTypes: only with redact=pii".to_string());
            false
        }
        Some("none") => false,
        Some(_) => {
            issues.push("redact: must be none or pii".to_string());
            false
        }
    };
    if required && PiiType::ALL.iter().any(|t| !parsed.contains(t)) {
        issues.push(
            "redactTypes: this deployment redacts every type (EXPORT_REDACTION=required); leave redactTypes out"
                .to_string(),
        );
    }
    if !issues.is_empty() {
        return Err(ApiError::validation_issues(issues.join("; "), issues));
    }
    // One order whatever the caller's, so equal requests store equal parameters.
    let types: Vec<PiiType> = PiiType::ALL.into_iter().filter(|t| parsed.contains(t)).collect();
    Ok(on.then_some(Redaction { types }))
}

/// Customers prepared for matching ([`Known::of`]: their phone numbers parsed once), kept for
/// one export: its examples are mostly a few customers' conversations.
#[derive(Debug, Default)]
pub struct KnownCache(HashMap<String, Arc<Known>>);

/// Customers kept at most (the cache is emptied when full).
const KNOWN_CACHE: usize = 1024;

impl KnownCache {
    /// `identity` prepared for `default` region, from the cache when it was seen before.
    fn get(&mut self, identity: &Identity, default: Id) -> Arc<Known> {
        let key = [&identity.names, &identity.emails, &identity.phones]
            .iter()
            .map(|v| v.join("\u{1f}"))
            .collect::<Vec<_>>()
            .join("\u{1e}");
        if let Some(known) = self.0.get(&key) {
            return known.clone();
        }
        if self.0.len() >= KNOWN_CACHE {
            self.0.clear();
        }
        let known = Arc::new(Known::of(identity, default));
        self.0.insert(key, known.clone());
        known
    }
}

fn text(r: &mut Redactor, v: &str) -> String {
    r.redact(v).into_owned()
}

fn field(r: &mut Redactor, kind: PiiType, v: &Option<String>) -> Option<String> {
    v.as_deref().map(|v| r.field(kind, v).into_owned())
}

/// A snapshot and its messages with the customer's fields and every text redacted, and what
/// was replaced. Labels (quality, category, tags), the business user and the contact reference
/// (no format writes its name, phone or e-mail, only its id; they serve as the known identity)
/// stay as they are.
pub fn snapshot(
    redaction: &Redaction,
    (default_region, cache): (Id, &mut KnownCache),
    s: &Snapshot,
    messages: &[SnapshotMessage],
) -> (Snapshot, Vec<SnapshotMessage>, Redacted) {
    let c = &s.contact;
    let full_name = match (&c.first_name, &c.last_name) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (f, l) => f.clone().or_else(|| l.clone()),
    };
    let identity = Identity {
        names: [&s.customer_name, &full_name].into_iter().flatten().cloned().collect(),
        emails: [&s.customer_email, &c.email].into_iter().flatten().cloned().collect(),
        phones: [&s.customer_phone, &c.phone_number].into_iter().flatten().cloned().collect(),
    };
    let mut r = Redactor::with_known(&redaction.types, cache.get(&identity, default_region));
    // The texts first, so placeholders are numbered in reading order.
    let messages: Vec<SnapshotMessage> =
        messages.iter().map(|m| SnapshotMessage { content: text(&mut r, &m.content), ..m.clone() }).collect();
    let mut out = s.clone();
    out.customer_name = field(&mut r, PiiType::Name, &s.customer_name);
    out.customer_phone = field(&mut r, PiiType::Phone, &s.customer_phone);
    out.customer_email = field(&mut r, PiiType::Email, &s.customer_email);
    out.notes = s.notes.as_deref().map(|n| text(&mut r, n));
    (out, messages, Redacted::of(r.counts()))
}

/// A conversation and its messages with the lead's fields and every text redacted.
pub fn convo(
    redaction: &Redaction,
    (default_region, cache): (Id, &mut KnownCache),
    c: &Convo,
    messages: &[Message],
) -> (Convo, Vec<Message>, Redacted) {
    let identity = Identity {
        names: c.user_name.iter().cloned().collect(),
        emails: c.user_email.iter().cloned().collect(),
        phones: c.user_phone.iter().cloned().collect(),
    };
    let mut r = Redactor::with_known(&redaction.types, cache.get(&identity, default_region));
    let messages: Vec<Message> =
        messages.iter().map(|m| Message { content: text(&mut r, &m.content), ..m.clone() }).collect();
    let mut out = c.clone();
    out.user_name = field(&mut r, PiiType::Name, &c.user_name);
    out.user_email = field(&mut r, PiiType::Email, &c.user_email);
    out.user_phone = field(&mut r, PiiType::Phone, &c.user_phone);
    // Free text that may hold any type (an address with a phone number, a website or company
    // with the customer's name, notes).
    out.user_address = c.user_address.as_deref().map(|v| text(&mut r, v));
    out.user_company = c.user_company.as_deref().map(|v| text(&mut r, v));
    out.user_website = c.user_website.as_deref().map(|v| text(&mut r, v));
    out.notes = c.notes.as_deref().map(|v| text(&mut r, v));
    (out, messages, Redacted::of(r.counts()))
}
