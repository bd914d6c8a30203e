//! A seeded, labelled corpus of customer-service messages for the redaction figures: each
//! message records where its PII is (type and byte span), and hard negatives (order and
//! tracking numbers, prices, dates, times, versions, postcodes, 16-digit numbers that fail
//! Luhn, e-mail-like strings in code) sit beside it unlabelled. Phone numbers are written in
//! several locales' national and international forms; each is kept only when libphonenumber's
//! metadata calls it valid, so the labels name real numbers.

use phonenumber::country::Id;
use shared::exports::redact::{Identity, PiiType};

/// One labelled message.
pub struct Labelled {
    /// The text.
    pub text: String,
    /// The conversation's region (national phone writings are read for it).
    pub region: Id,
    /// The customer.
    pub identity: Identity,
    /// Every PII span: (start, end, type).
    pub spans: Vec<(usize, usize, PiiType)>,
}

/// A small deterministic generator (SplitMix64): the corpus is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

const FIRST: &[&str] = &["Jane", "Omar", "Li", "Sofia", "Mateo", "Aisha", "Lukas", "Emma", "Noah", "Priya"];
const LAST: &[&str] = &["Doe", "Haddad", "Wei", "Rossi", "Garcia", "Khan", "Muller", "Dubois", "Smith", "Patel"];
const DOMAINS: &[&str] = &["example.com", "mail.example.org", "acme.co.uk", "example.de", "corp.example.net"];

/// A message builder: text with labelled inserts.
struct Message {
    text: String,
    spans: Vec<(usize, usize, PiiType)>,
}

impl Message {
    fn new() -> Self {
        Self { text: String::new(), spans: Vec::new() }
    }
    fn say(&mut self, s: &str) {
        self.text.push_str(s);
    }
    fn pii(&mut self, s: &str, kind: PiiType) {
        let start = self.text.len();
        self.text.push_str(s);
        self.spans.push((start, self.text.len(), kind));
    }
}

fn luhn_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(*d) * if i % 2 == 0 { 2 } else { 1 };
            if v > 9 {
                v - 9
            } else {
                v
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn card(rng: &mut Rng, valid: bool) -> String {
    let (prefix, len) = [("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)][rng.below(5)];
    let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while digits.len() < len - 1 {
        digits.push(rng.below(10) as u8);
    }
    let check = luhn_digit(&digits);
    digits.push(if valid { check } else { (check + 1 + rng.below(9) as u8) % 10 });
    let plain: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    match rng.below(3) {
        0 => plain,
        1 => plain.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" "),
        _ => plain.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-"),
    }
}

fn iban(rng: &mut Rng) -> String {
    let (country, bban) = match rng.below(2) {
        0 => ("DE", rng.digits(18)),
        _ => ("GB", format!("{}{}", rng.pick(&["WEST", "NWBK", "BARC"]), rng.digits(14))),
    };
    // Check digits: 98 - (bban + country + "00") mod 97, letters as 10..35.
    let mut rem = 0u32;
    for c in bban.chars().chain(country.chars()).chain("00".chars()) {
        let v = c.to_digit(36).unwrap_or(0);
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    let compact = format!("{country}{:02}{bban}", 98 - rem);
    if rng.below(2) == 0 {
        compact
    } else {
        compact.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
    }
}

fn ssn(rng: &mut Rng) -> String {
    let area = loop {
        let a = 1 + rng.below(899);
        if a != 666 {
            break a;
        }
    };
    format!("{area:03}-{:02}-{:04}", 1 + rng.below(99), 1 + rng.below(9999))
}

/// A valid phone number of `region` in one of its writings (`None` after a few invalid draws).
fn phone(rng: &mut Rng, region: Id) -> Option<String> {
    for _ in 0..20 {
        let written = match region {
            Id::GB => match rng.below(4) {
                0 => format!("+44 20 7{} {}", rng.digits(3), rng.digits(4)),
                1 => format!("020 7{} {}", rng.digits(3), rng.digits(4)),
                2 => format!("+44 7{} {}", rng.digits(3), rng.digits(6)),
                _ => format!("07{} {}", rng.digits(3), rng.digits(6)),
            },
            Id::DE => match rng.below(3) {
                0 => format!("+49 30 {}", rng.digits(8)),
                1 => format!("030 {}", rng.digits(8)),
                _ => format!("+49 151 {}", rng.digits(8)),
            },
            _ => {
                let area = rng.pick(&["212", "213", "312", "415", "617", "646", "702", "305", "206", "503"]);
                let exchange = format!("{}{}", 2 + rng.below(8), rng.digits(2));
                let line = rng.digits(4);
                match rng.below(5) {
                    0 => format!("({area}) {exchange}-{line}"),
                    1 => format!("{area}-{exchange}-{line}"),
                    2 => format!("{area}.{exchange}.{line}"),
                    3 => format!("+1 {area} {exchange} {line}"),
                    _ => format!("+1-{area}-{exchange}-{line}"),
                }
            }
        };
        if shared::exports::redact::phone_e164(&written, region).is_some() {
            return Some(written);
        }
    }
    None
}

/// Text that looks like PII to a careless pattern and is not.
fn hard_negative(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => format!("order #{}", rng.digits(8)),
        1 => format!("tracking 1Z{}{}", rng.pick(&["A9", "X4", "Y7"]), rng.digits(14)),
        2 => format!("it was ${},{}.{}", 1 + rng.below(9), rng.digits(3), rng.digits(2)),
        3 => format!("on 2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        4 => format!("at {:02}:{:02}", rng.below(24), rng.below(60)),
        5 => format!("version {}.{}.{}", rng.below(10), rng.below(20), rng.below(50)),
        6 => format!("postcode {}", rng.digits(5)),
        7 => format!("reference {}", card(rng, false).replace([' ', '-'], "")),
        8 => "the config says `user@localhost` and `admin@127`".to_string(),
        _ => format!("ticket {}-{}", rng.pick(&["SUP", "ORD", "INV"]), rng.digits(6)),
    }
}

/// `n` labelled messages from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<Labelled> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let region = [Id::US, Id::US, Id::GB, Id::DE][rng.below(4)];
        let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
        let identity = Identity { names: vec![format!("{first} {last}")], ..Identity::default() };
        let mut m = Message::new();
        m.say(rng.pick(&["Hi, ", "Hello again. ", "Good morning! ", ""]));
        for _ in 0..1 + rng.below(3) {
            match rng.below(8) {
                0 => {
                    m.say("my email is ");
                    let e = format!("{}.{}@{}", first.to_lowercase(), last.to_lowercase(), rng.pick(DOMAINS));
                    m.pii(&if rng.below(3) == 0 { e.to_uppercase() } else { e }, PiiType::Email);
                    m.say(". ");
                }
                1 => match phone(&mut rng, region) {
                    Some(p) => {
                        m.say("call me on ");
                        m.pii(&p, PiiType::Phone);
                        m.say(" after five. ");
                    }
                    None => m.say("call me later. "),
                },
                2 => {
                    m.say("please charge card ");
                    m.pii(&card(&mut rng, true), PiiType::Card);
                    m.say(", expiry 09/27. ");
                }
                3 => {
                    m.say("wire it to ");
                    m.pii(&iban(&mut rng), PiiType::Iban);
                    m.say(" by Friday. ");
                }
                4 => {
                    m.say("my SSN is ");
                    m.pii(&ssn(&mut rng), PiiType::Ssn);
                    m.say(" for the credit check. ");
                }
                5 => {
                    m.say("I connect from ");
                    let ip = match rng.below(2) {
                        0 => format!(
                            "{}.{}.{}.{}",
                            1 + rng.below(223),
                            rng.below(256),
                            rng.below(256),
                            1 + rng.below(254)
                        ),
                        _ => format!("2001:db8:{:x}::{:x}", rng.below(65535), 1 + rng.below(65534)),
                    };
                    m.pii(&ip, PiiType::Ip);
                    m.say(" and it fails. ");
                }
                6 => {
                    m.say("this is ");
                    let name = match rng.below(3) {
                        0 => first.to_string(),
                        1 => format!("{first} {last}"),
                        _ => format!("{} {}", first.to_uppercase(), last.to_uppercase()),
                    };
                    m.pii(&name, PiiType::Name);
                    m.say(" again. ");
                }
                _ => {
                    m.say("about ");
                    m.say(&hard_negative(&mut rng));
                    m.say(". ");
                }
            }
        }
        m.say(&format!("Also {}.", hard_negative(&mut rng)));
        out.push(Labelled { text: m.text, region, identity, spans: m.spans });
    }
    out
}
