//! Timestamps: RFC 3339 with milliseconds in UTC for storage and Tether, and Convocore's
//! human-readable form (`December 1st 2024, 10:30:00 am`).

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Now, as stored: `2026-05-18T14:30:00.000Z`.
pub fn now_rfc3339() -> String {
    to_rfc3339(Utc::now())
}

/// Formats a UTC instant as stored.
pub fn to_rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp (with `T` between date and time, as JSON Schema's
/// `date-time` requires) and normalises it to UTC.
///
/// A leap second (`23:59:60Z`) is refused: chrono would keep it (as a nanosecond count past one
/// second) and format it back as `:60`, which most clients cannot parse, and it would sort
/// after the next second's `00` in the stored text.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    // Stored timestamps sort as text, which holds for four-digit years only.
    DateTime::parse_from_rfc3339(s)
        .ok()
        .filter(|t| t.nanosecond() < 1_000_000_000)
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| (1970..=9999).contains(&t.year()))
}

/// Convocore's export format, always UTC: `December 1st 2024, 10:30:00 am`.
pub fn human(t: DateTime<Utc>) -> String {
    let day = t.day();
    let suffix = match (day % 10, day % 100) {
        (1, n) if n != 11 => "st",
        (2, n) if n != 12 => "nd",
        (3, n) if n != 13 => "rd",
        _ => "th",
    };
    let (pm, hour) = t.hour12();
    format!(
        "{} {day}{suffix} {}, {hour}:{:02}:{:02} {}",
        t.format("%B"),
        t.year(),
        t.minute(),
        t.second(),
        if pm { "pm" } else { "am" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_matches_convocore_examples() {
        let t = parse_rfc3339("2024-12-01T10:30:00Z").unwrap();
        assert_eq!(human(t), "December 1st 2024, 10:30:00 am");
        let t = parse_rfc3339("2024-03-22T23:05:09+01:00").unwrap();
        assert_eq!(human(t), "March 22nd 2024, 10:05:09 pm");
        let t = parse_rfc3339("2024-01-11T00:00:00Z").unwrap();
        assert_eq!(human(t), "January 11th 2024, 12:00:00 am");
        assert_eq!(to_rfc3339(parse_rfc3339("2026-05-18T16:30:00+02:00").unwrap()), "2026-05-18T14:30:00.000Z");
        assert_eq!(parse_rfc3339("2024-12-01 10:30:00Z"), None);
        assert_eq!(parse_rfc3339("2024-12-01"), None);
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59-23:59"), None);
        assert_eq!(parse_rfc3339("0000-01-01T00:00:00+00:01"), None);
    }

    #[test]
    fn leap_seconds_are_refused_in_any_offset() {
        for leap in [
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:60.5Z",
            "2017-01-01T00:59:60+01:00",
            "2016-12-31T23:59:60.999999999z",
        ] {
            assert_eq!(parse_rfc3339(leap), None, "{leap}");
        }
        assert_eq!(to_rfc3339(parse_rfc3339("2016-12-31T23:59:59.999Z").unwrap()), "2016-12-31T23:59:59.999Z");
        assert_eq!(to_rfc3339(parse_rfc3339("2017-01-01T00:59:59+01:00").unwrap()), "2016-12-31T23:59:59.000Z");
    }
}
