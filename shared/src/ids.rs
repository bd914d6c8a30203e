//! Time-ordered 24-hex ids shaped like MongoDB ObjectIds, so Tether clients that check ids keep
//! working, ids sort by creation time to the millisecond, and a snapshot's `createdAt` is the
//! instant its id names: a list sorted by id is sorted by `createdAt` (ties by id), and a
//! `from`/`to` window on `createdAt` is exactly a range of ids.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use rand::Rng;

/// Per process: 3 random bytes and a counter that starts at a random point, so ids made by one
/// process within one millisecond still sort in creation order and processes do not collide.
fn process_state() -> &'static ([u8; 3], AtomicU32) {
    static STATE: OnceLock<([u8; 3], AtomicU32)> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut rng = rand::rng();
        // Start in the lower half so the 24-bit counter does not wrap for 8 million ids.
        (rng.random(), AtomicU32::new(rng.random::<u32>() & 0x007f_ffff))
    })
}

/// A new id for now, and the instant it names (milliseconds; store it as `createdAt`).
pub fn new_id() -> (String, DateTime<Utc>) {
    let now = Utc::now();
    let at = Utc.timestamp_millis_opt(now.timestamp_millis()).single().unwrap_or(now);
    (object_id_at(at), at)
}

/// A new id: 4 bytes of seconds since the epoch (an ObjectId's timestamp), 2 bytes of the
/// millisecond (0-999), 3 random bytes per process and a 3-byte counter.
pub fn object_id() -> String {
    new_id().0
}

/// A new id for the given instant (its millisecond; tests and seeding use this).
pub fn object_id_at(t: DateTime<Utc>) -> String {
    let (random, counter) = process_state();
    let counter = counter.fetch_add(1, Ordering::Relaxed);
    let mut out = time_prefix(t);
    for b in random {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str(&format!("{:06x}", counter & 0x00ff_ffff));
    out
}

/// The first 12 hex digits of every id made at `t`'s millisecond: seconds, then millisecond.
pub fn time_prefix(t: DateTime<Utc>) -> String {
    let secs = t.timestamp().clamp(0, u32::MAX as i64) as u32;
    format!("{secs:08x}{:04x}", t.timestamp_subsec_millis().min(999))
}

/// The instant an id made here names (`None` for ids of another shape).
pub fn instant(id: &str) -> Option<DateTime<Utc>> {
    if !is_object_id(id) {
        return None;
    }
    let secs = u32::from_str_radix(id.get(..8)?, 16).ok()?;
    let millis = u16::from_str_radix(id.get(8..12)?, 16).ok().filter(|m| *m < 1000)?;
    Utc.timestamp_millis_opt(i64::from(secs) * 1000 + i64::from(millis)).single()
}

/// Whether `s` has the shape of an id made here: exactly 24 lowercase or uppercase hex digits.
pub fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Longest id accepted in a path.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is usable as a key part: 1 to 128 characters of letters, digits and `-_.:@`.
///
/// `#` is excluded because it separates key parts; so are spaces and control characters.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.bytes().all(|b| b == b'.') // `.` and `..` are path segments, not ids
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_hex_ordered_by_millisecond_and_name_their_instant() {
        let t = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        let a = object_id_at(t(1_700_000_000_999));
        let b = object_id_at(t(1_700_000_001_000));
        let c = object_id_at(t(1_700_000_001_001));
        assert!(is_object_id(&a) && is_object_id(&b));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(a.starts_with(&format!("{:08x}", 1_700_000_000u32)), "an ObjectId's timestamp");
        assert_eq!(instant(&a), Some(t(1_700_000_000_999)));
        assert_eq!(instant(&c), Some(t(1_700_000_001_001)));
        let (x, at) = new_id();
        assert_eq!(instant(&x), Some(at));
        let (y, _) = new_id();
        assert!(x < y, "one process's ids sort in creation order");
        assert!(!is_object_id("zz0000000000000000000000"));
        assert_eq!(instant("65a0e0e0ffff000000000000"), None, "not a millisecond");
    }
}
