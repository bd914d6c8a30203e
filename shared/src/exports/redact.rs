//! PII redaction with consistent pseudonyms: a stage of the export pipeline that replaces what
//! it finds in an example's texts (and metadata) with placeholders, `<EMAIL_1>`, `<PHONE_2>`,
//! `<NAME_1>`…, the same normalised value always the same placeholder within one example, so a
//! conversation stays coherent for training. Nothing that was found is logged; only counts per
//! type leave this module.
//!
//! What is found: e-mail addresses; phone numbers parsed and validated by `phonenumber` (a
//! libphonenumber port), written internationally or nationally for the default region; card
//! numbers (13 to 19 digits, spaces or dashes between, Luhn-valid); IBANs (mod-97); US SSNs
//! written `AAA-GG-SSSS` with a valid area, group and serial; IPv4 and IPv6 addresses; and the
//! conversation's known identity (the customer's name, e-mail and phone from the stored
//! conversation, in any case and any phone writing), which no pattern could know.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

pub use super::identity::{region_of, Identity, Known};

/// What a placeholder stands for (its code in `redactTypes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiType {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number.
    Card,
    /// An IBAN.
    Iban,
    /// A US social security number.
    Ssn,
    /// An IPv4 or IPv6 address.
    Ip,
    /// The customer's name.
    Name,
}

impl PiiType {
    /// Every type, in the order of `redactTypes`.
    pub const ALL: [PiiType; 7] = [Self::Email, Self::Phone, Self::Card, Self::Iban, Self::Ssn, Self::Ip, Self::Name];

    /// Its code in `redactTypes` and counts.
    pub fn code(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Card => "card",
            Self::Iban => "iban",
            Self::Ssn => "ssn",
            Self::Ip => "ip",
            Self::Name => "name",
        }
    }

    /// Parses a code of `redactTypes`.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    fn label(self) -> &'static str {
        match self {
            Self::Email => "EMAIL",
            Self::Phone => "PHONE",
            Self::Card => "CARD",
            Self::Iban => "IBAN",
            Self::Ssn => "SSN",
            Self::Ip => "IP",
            Self::Name => "NAME",
        }
    }
}

/// What an export redacts (stored in a job's parameters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redaction {
    /// The types replaced, in the order of [`PiiType::ALL`].
    pub types: Vec<PiiType>,
}

impl Redaction {
    /// Every type.
    pub fn all() -> Self {
        Self { types: PiiType::ALL.to_vec() }
    }
}

/// A found span: where, what, and its normalised value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    kind: PiiType,
    value: String,
}

fn regex(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    // The patterns are constants (`patterns_compile` tests them); one that did not would find nothing.
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

/// Every pattern compiles (for the tests).
pub fn patterns_compile() -> bool {
    [email_re(), digits_re(), iban_re(), ssn_re(), ip_re()].iter().all(Option::is_some)
}

fn email_re() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    regex(&R, r"(?i)\b[a-z0-9._%+-]+@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,24}\b")
}

fn digits_re() -> Option<&'static Regex> {
    // Runs of digits with the separators people type inside card and phone numbers.
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    regex(&R, r"\+?\(?\d(?:[\d\s().\-/]{4,28})\d")
}

fn iban_re() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    regex(&R, r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
}

fn ssn_re() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    regex(&R, r"\b(\d{3})-(\d{2})-(\d{4})\b")
}

fn ip_re() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    regex(&R, r"(?i)\b(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7})\b")
}

/// Luhn's checksum over the digits of `s`.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// ISO 13616's mod-97 check of an IBAN (spaces removed, upper case).
pub fn iban_valid(iban: &str) -> bool {
    if !(15..=34).contains(&iban.len()) || !iban.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut rem = 0u32;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// A valid SSN's area, group and serial (never 000, 666 or 9xx; 00; 0000).
fn ssn_valid(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// A phone number in E.164, when `text` is a valid one (internationally, or for `region`).
pub fn phone_e164(text: &str, region: phonenumber::country::Id) -> Option<String> {
    let number = phonenumber::parse(Some(region), text).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Keeps `f` unless it overlaps a finding kept before it.
fn add(found: &mut Vec<Found>, f: Found) {
    if !found.iter().any(|g| f.start < g.end && g.start < f.end) {
        found.push(f);
    }
}

/// Every span of `types` in `text`, non-overlapping (the first found of two overlapping wins,
/// in the order: e-mail, the customer's names, IBAN, IP, then card, SSN and phone in digit runs).
fn find(text: &str, types: &[PiiType], region: phonenumber::country::Id, known: &Known) -> Vec<Found> {
    // Cheap tests first: most texts hold no `@`, and many no digit, so their patterns never run.
    let has_digit = text.bytes().any(|b| b.is_ascii_digit());
    let on = |t| types.contains(&t);
    let mut found: Vec<Found> = Vec::new();
    if on(PiiType::Email) && text.contains('@') {
        for m in email_re().into_iter().flat_map(|r| r.find_iter(text)) {
            let value = m.as_str().to_lowercase();
            add(&mut found, Found { start: m.start(), end: m.end(), kind: PiiType::Email, value });
        }
    }
    if on(PiiType::Name) {
        for (start, end, value) in known.names(text) {
            add(&mut found, Found { start, end, kind: PiiType::Name, value });
        }
    }
    if on(PiiType::Iban) && has_digit {
        for m in iban_re().into_iter().flat_map(|r| r.find_iter(text)) {
            let compact: String = m.as_str().chars().filter(|c| !c.is_whitespace()).collect();
            if iban_valid(&compact) {
                add(&mut found, Found { start: m.start(), end: m.end(), kind: PiiType::Iban, value: compact });
            }
        }
    }
    // Addresses before digit runs: a dotted quad also parses as some region's phone number.
    if on(PiiType::Ip) && (has_digit || text.contains("::")) {
        for m in ip_re().into_iter().flat_map(|r| r.find_iter(text)) {
            if let Ok(ip) = m.as_str().parse::<std::net::IpAddr>() {
                add(&mut found, Found { start: m.start(), end: m.end(), kind: PiiType::Ip, value: ip.to_string() });
            }
        }
    }
    for m in digits_re().into_iter().filter(|_| has_digit).flat_map(|r| r.find_iter(text)) {
        digit_run(text, m, (types, region, known), &mut found);
    }
    found.sort_by_key(|f| f.start);
    found
}

/// A card, SSN or phone number in the digit run `m` of `text`.
fn digit_run(
    text: &str,
    m: regex::Match<'_>,
    (types, region, known): (&[PiiType], phonenumber::country::Id, &Known),
    found: &mut Vec<Found>,
) {
    let on = |t| types.contains(&t);
    // A run glued to a word or a `#` is an identifier (`1ZA9…`, `#12345678`), not a number.
    let before = text[..m.start()].chars().next_back();
    let after = text[m.end()..].chars().next();
    if before.is_some_and(|c| c.is_alphanumeric() || c == '#' || c == '_') || after.is_some_and(char::is_alphanumeric) {
        return;
    }
    let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    let card_shape = m.as_str().bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-');
    if on(PiiType::Card) && card_shape && (13..=19).contains(&digits.len()) && luhn(&digits) {
        let value = digits.iter().map(|d| char::from(b'0' + d)).collect();
        add(found, Found { start: m.start(), end: m.end(), kind: PiiType::Card, value });
        return;
    }
    if on(PiiType::Ssn) {
        for c in ssn_re().into_iter().flat_map(|r| r.captures_iter(m.as_str())) {
            if let (Some(all), Some(a), Some(g), Some(s)) = (c.get(0), c.get(1), c.get(2), c.get(3)) {
                if ssn_valid(a.as_str(), g.as_str(), s.as_str()) {
                    let value = format!("{}{}{}", a.as_str(), g.as_str(), s.as_str());
                    let (start, end) = (m.start() + all.start(), m.start() + all.end());
                    add(found, Found { start, end, kind: PiiType::Ssn, value });
                }
            }
        }
    }
    // Written nationally, a phone number has 10 digits or more (US, UK, Germany): shorter
    // runs are order numbers, dates and postcodes far more often than phones.
    let international = m.as_str().starts_with('+');
    let run: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    if let Some(e164) = known.phone(&run).filter(|_| on(PiiType::Phone)) {
        // The customer's own number, in whatever writing (even a local one too short to parse).
        let value = e164.to_string();
        add(found, Found { start: m.start(), end: m.end(), kind: PiiType::Phone, value });
        return;
    }
    if on(PiiType::Phone) && (7..=15).contains(&digits.len()) && (international || digits.len() >= 10) {
        let candidate = m.as_str().trim_end_matches([')', '.', '-', '/']);
        if let Some(e164) = phone_e164(candidate, region) {
            let end = m.start() + candidate.len();
            add(found, Found { start: m.start(), end, kind: PiiType::Phone, value: e164 });
        }
    }
}

/// Every finding in `text` as `(start, end, type)`, in order (what [`Redactor::redact`] replaces).
pub fn spans(
    text: &str,
    types: &[PiiType],
    region: phonenumber::country::Id,
    identity: &Identity,
) -> Vec<(usize, usize, PiiType)> {
    find(text, types, region, &Known::of(identity, region)).into_iter().map(|f| (f.start, f.end, f.kind)).collect()
}

/// Redacts the texts of one example, keeping one placeholder per distinct value.
#[derive(Debug)]
pub struct Redactor {
    types: Vec<PiiType>,
    region: phonenumber::country::Id,
    known: std::sync::Arc<Known>,
    placeholders: HashMap<(PiiType, String), String>,
    counts: HashMap<PiiType, u64>,
}

impl Redactor {
    /// A redactor of `types` for an example of the customer `identity`; phones written
    /// nationally are read for `region`.
    pub fn new(types: &[PiiType], region: phonenumber::country::Id, identity: &Identity) -> Self {
        let mut known = Known::of(identity, region);
        known.region = region;
        Self::with_known(types, std::sync::Arc::new(known))
    }

    /// A redactor for a customer already prepared ([`Known::of`], which also says the region).
    pub fn with_known(types: &[PiiType], known: std::sync::Arc<Known>) -> Self {
        let region = known.region;
        Self { types: types.to_vec(), region, known, placeholders: HashMap::new(), counts: HashMap::new() }
    }

    fn placeholder(&mut self, kind: PiiType, value: String) -> String {
        let next = self.placeholders.keys().filter(|(k, _)| *k == kind).count() + 1;
        self.placeholders.entry((kind, value)).or_insert_with(|| format!("<{}_{next}>", kind.label())).clone()
    }

    /// `text` with every finding replaced by its placeholder.
    pub fn redact<'t>(&mut self, text: &'t str) -> Cow<'t, str> {
        let found = find(text, &self.types, self.region, &self.known);
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.start]);
            *self.counts.entry(f.kind).or_default() += 1;
            let placeholder = self.placeholder(f.kind, f.value);
            out.push_str(&placeholder);
            at = f.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// A metadata field (the customer's name, phone or e-mail) redacted with the same
    /// placeholders as the texts: a known value becomes its placeholder whole.
    pub fn field<'t>(&mut self, kind: PiiType, value: &'t str) -> Cow<'t, str> {
        if !self.types.contains(&kind) || value.trim().is_empty() {
            return Cow::Borrowed(value);
        }
        let normalised = match kind {
            PiiType::Phone => match self.known.e164(value) {
                Some(e164) => e164.to_string(),
                None => phone_e164(value, self.region).unwrap_or_else(|| value.trim().to_string()),
            },
            PiiType::Name => value.trim().to_lowercase(),
            _ => value.trim().to_lowercase(),
        };
        *self.counts.entry(kind).or_default() += 1;
        Cow::Owned(self.placeholder(kind, normalised))
    }

    /// Findings so far by type.
    pub fn counts(&self) -> &HashMap<PiiType, u64> {
        &self.counts
    }
}
