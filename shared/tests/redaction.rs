//! PII redaction (shared::exports::redact): every type found in its documented writings with a
//! consistent placeholder, hard negatives left as written, checksums, and metadata redacted with
//! the placeholders of the texts.

use std::collections::HashMap;

use shared::exports::redact::{iban_valid, luhn, Identity, PiiType, Redactor};

const US: phonenumber::country::Id = phonenumber::country::Id::US;

fn redact(text: &str, identity: &Identity) -> (String, HashMap<PiiType, u64>) {
    let mut r = Redactor::new(&PiiType::ALL, US, identity);
    let out = r.redact(text).into_owned();
    (out, r.counts().clone())
}

#[test]
fn every_type_in_its_writings_gets_a_consistent_placeholder() {
    let who = Identity { names: vec!["Jane Doe".into()], ..Identity::default() };
    let cases = [
        ("mail me at Jane.Doe@Example.com or jane.doe@example.com", "mail me at <EMAIL_1> or <EMAIL_1>"),
        ("call (415) 555-2671 or +1 415-555-2671", "call <PHONE_1> or <PHONE_1>"),
        ("UK: +44 20 7946 0958", "UK: <PHONE_1>"),
        ("card 4111 1111 1111 1111, exp 12/29", "card <CARD_1>, exp 12/29"),
        ("card 4111-1111-1111-1111", "card <CARD_1>"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN <IBAN_1> please"),
        ("ssn 123-45-6789", "ssn <SSN_1>"),
        ("from 192.168.10.20 and 2001:db8::1", "from <IP_1> and <IP_2>"),
        ("Hi, this is JANE. Jane Doe here, jane speaking", "Hi, this is <NAME_1>. <NAME_1> here, <NAME_1> speaking"),
    ];
    for (text, want) in cases {
        assert_eq!(redact(text, &who).0, want, "{text}");
    }
}

#[test]
fn hard_negatives_stay_as_written() {
    let who = Identity { names: vec!["Jane Doe".into()], ..Identity::default() };
    for text in [
        "order 4111 1111 1111 1112 (fails Luhn)",
        "tracking 1Z999AA10123456784",
        "it costs $1,299.00, due 2026-05-18 at 13:45",
        "version 2.4.1 and 10.2",
        "postcode 94103",
        "ssn-like 000-12-3456 and 666-12-3456",
        "Janet and Doedle are not Jane's names",
    ] {
        let (out, counts) = redact(text, &who);
        let names = counts.get(&PiiType::Name).copied().unwrap_or(0);
        if text.starts_with("Janet") {
            assert_eq!(out, "Janet and Doedle are not <NAME_1>'s names");
            assert_eq!(names, 1);
        } else {
            assert_eq!(out, text, "{text}");
        }
    }
}

#[test]
fn checksums_and_patterns() {
    assert!(shared::exports::redact::patterns_compile());
    assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
    assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
    assert!(iban_valid("GB82WEST12345698765432"));
    assert!(iban_valid("DE89370400440532013000"));
    assert!(!iban_valid("GB82WEST12345698765433"));
}

#[test]
fn metadata_takes_the_placeholders_of_the_texts() {
    let who = Identity { names: vec!["Jane Doe".into()], phones: vec!["+14155552671".into()], ..Identity::default() };
    let mut r = Redactor::new(&PiiType::ALL, US, &who);
    let text = r.redact("Jane here, call 415.555.2671").into_owned();
    assert_eq!(text, "<NAME_1> here, call <PHONE_1>");
    assert_eq!(r.field(PiiType::Name, "Jane Doe"), "<NAME_1>");
    assert_eq!(r.field(PiiType::Phone, "(415) 555-2671"), "<PHONE_1>");
    assert_eq!(r.field(PiiType::Email, "jane@example.com"), "<EMAIL_1>");
}

#[test]
fn the_customers_own_number_is_found_in_any_writing_and_names_only_as_names() {
    let who = Identity {
        names: vec!["Will Smith".into(), "Li An".into(), "Ayşe Yılmaz".into()],
        phones: vec!["+1 415 555 0123".into()],
        ..Identity::default()
    };
    let cases = [
        // Local (too short to parse as a phone) and national writings of the known number.
        ("my cell is 555-0123, or 415 555 0123", "my cell is <PHONE_1>, or <PHONE_1>"),
        // A name that is also a word counts only with its capital; two-letter parts not alone.
        ("I will ask Will. Smith said so", "I will ask <NAME_1>. <NAME_1> said so"),
        ("Li An here, an apple for li, Li", "<NAME_2> here, an apple for li, <NAME_2>"),
        // A text whose lower case changes byte lengths (İ) is matched in any case all the same.
        ("İstanbul: AYŞE here, ayşe yılmaz", "İstanbul: <NAME_3> here, <NAME_3>"),
    ];
    let mut r = Redactor::new(&PiiType::ALL, US, &who);
    for (text, want) in cases {
        assert_eq!(r.redact(text), want, "{text}");
    }
    assert_eq!(r.field(PiiType::Phone, "+14155550123"), "<PHONE_1>");
}
