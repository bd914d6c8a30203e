//! The customer's known identity, as redaction matches it: their names and the parts of them
//! (whole words, any case), and their phone numbers in any writing (the full national number,
//! or the local number without its area code). No pattern could know either.

use phonenumber::country::Id;
use regex::Regex;

/// Who the customer is, from the stored conversation and snapshot.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Names (a full name also matches its parts of two letters or more).
    pub names: Vec<String>,
    /// E-mail addresses.
    pub emails: Vec<String>,
    /// Phone numbers, in any writing.
    pub phones: Vec<String>,
}

/// First names and surnames that are also everyday words: alone, they are the customer's name
/// only when written with a capital (`Will` and `will`, `May` and `may`).
const WORDS: &[&str] = &[
    "amber", "april", "august", "autumn", "bell", "bill", "black", "brown", "carol", "case", "chase", "cook", "dawn",
    "day", "dean", "don", "faith", "fox", "frank", "grace", "gray", "green", "grey", "hill", "holly", "hope", "hunt",
    "iris", "ivy", "jack", "joy", "june", "king", "lane", "lily", "long", "love", "mark", "may", "miles", "north",
    "page", "park", "pat", "pearl", "price", "ray", "rich", "rob", "rose", "ruby", "sandy", "sky", "stone", "summer",
    "sue", "ward", "west", "white", "will", "wood", "young",
];

/// One part of a name to look for.
#[derive(Debug, Clone)]
struct Part {
    /// Lower case.
    text: String,
    /// Only written with a capital (an everyday word alone).
    capital: bool,
}

/// [`Identity`] prepared for matching, once per example.
#[derive(Debug, Clone)]
pub struct Known {
    /// Each person (lower case) with their full name and parts, full name first.
    names: Vec<(String, Vec<Part>)>,
    /// Digits that are the customer's number (national, and local without the area code),
    /// with its E.164 writing.
    phones: Vec<(String, String)>,
    /// The region national phone numbers are read for: the customer's own number's, when
    /// written internationally, else the default.
    pub region: Id,
}

impl Known {
    /// The names and phone numbers of `identity`; phones written nationally are read for the
    /// region of the customer's own number written internationally, else `default`.
    pub fn of(identity: &Identity, default: Id) -> Self {
        let region = identity.phones.iter().find_map(|p| region_of(p)).unwrap_or(default);
        let names = identity
            .names
            .iter()
            .map(|full| {
                let person = full.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
                // Alone, a part of two letters or an everyday word needs its capital.
                let capital = |p: &str| p.chars().count() <= 2 || WORDS.contains(&p);
                if !person.contains(' ') {
                    let capital = capital(&person);
                    return (person.clone(), vec![Part { text: person, capital }]);
                }
                // The full name first, then its parts of two letters or more.
                let mut parts = vec![Part { text: person.clone(), capital: false }];
                let words = person.split(' ').filter(|p| p.chars().count() >= 2);
                parts.extend(words.map(|p| Part { text: p.to_string(), capital: capital(p) }));
                (person, parts)
            })
            .filter(|(person, _)| !person.is_empty())
            .collect();
        let mut phones = Vec::new();
        for p in &identity.phones {
            let Ok(number) = phonenumber::parse(Some(region), p) else { continue };
            if !phonenumber::is_valid(&number) {
                continue;
            }
            let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
            let national = number.national().value().to_string();
            phones.push((format!("{}{national}", number.code().value()), e164.clone()));
            if national.len() >= 9 {
                // The local number, dialled without the area code.
                phones.push((national[national.len() - 7..].to_string(), e164.clone()));
            }
            phones.push((national, e164));
        }
        Self { names, phones, region }
    }

    /// The E.164 writing of `value` when its digits are the customer's number (no parsing).
    pub fn e164(&self, value: &str) -> Option<&str> {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        self.phone(&digits)
    }

    /// The customer's number (E.164) when `digits` (a run's digits, separators removed) is it.
    pub fn phone(&self, digits: &str) -> Option<&str> {
        self.phones.iter().find(|(d, _)| d == digits).map(|(_, e164)| e164.as_str())
    }

    /// The customer's names and their parts in `text`: `(start, end, person)`, every part of a
    /// full name normalised to that full name (one placeholder per person).
    pub fn names(&self, text: &str) -> Vec<(usize, usize, String)> {
        if self.names.is_empty() {
            return Vec::new();
        }
        let lower = text.to_lowercase();
        if lower.len() != text.len() {
            // Lower-casing changed byte offsets (some scripts): a case-insensitive regex instead.
            return self.names_unicode(text);
        }
        let mut out = Vec::new();
        for (person, parts) in &self.names {
            for part in parts {
                let mut from = 0;
                while let Some(i) = lower[from..].find(&part.text) {
                    let (start, end) = (from + i, from + i + part.text.len());
                    if edges(&lower, start, end) && (!part.capital || capitalised(text, start)) {
                        out.push((start, end, person.clone()));
                    }
                    from = end;
                }
            }
        }
        out.sort_by_key(|(s, e, _)| (*s, usize::MAX - e));
        out
    }

    fn names_unicode(&self, text: &str) -> Vec<(usize, usize, String)> {
        let mut out = Vec::new();
        for (person, parts) in &self.names {
            let alternatives: Vec<String> = parts.iter().map(|p| regex::escape(&p.text)).collect();
            let Ok(re) = Regex::new(&format!(r"(?i)\b(?:{})\b", alternatives.join("|"))) else { continue };
            for m in re.find_iter(text) {
                let part = parts.iter().find(|p| p.text == m.as_str().to_lowercase());
                if part.is_none_or(|p| !p.capital || capitalised(text, m.start())) {
                    out.push((m.start(), m.end(), person.clone()));
                }
            }
        }
        out.sort_by_key(|(s, e, _)| (*s, usize::MAX - e));
        out
    }
}

fn edges(text: &str, start: usize, end: usize) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    edge(text[..start].chars().next_back()) && edge(text[end..].chars().next())
}

fn capitalised(text: &str, start: usize) -> bool {
    text[start..].chars().next().is_some_and(char::is_uppercase)
}

/// The region of a phone number written internationally (`+44 …` is GB), if it is valid.
pub fn region_of(phone: &str) -> Option<Id> {
    let number = phonenumber::parse(None, phone).ok()?;
    phonenumber::is_valid(&number).then(|| number.country().id()).flatten()
}
