//! Time-ordered 24-hex ids shaped like MongoDB ObjectIds, so Tether clients that check
//! ids keep working and ids sort by creation time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use rand::Rng;

/// Per process, like an ObjectId: a random 5-byte value and a counter that starts at a random
/// point, so ids made by one process within one second still sort in creation order.
fn process_state() -> &'static ([u8; 5], AtomicU32) {
    static STATE: OnceLock<([u8; 5], AtomicU32)> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut rng = rand::rng();
        // Start in the lower half so the 24-bit counter does not wrap for 8 million ids.
        (rng.random(), AtomicU32::new(rng.random::<u32>() & 0x007f_ffff))
    })
}

/// A new id: 4 bytes of seconds since the epoch, 5 bytes random per process, a 3-byte counter.
pub fn object_id() -> String {
    object_id_at(crate::auth::now_epoch())
}

/// A new id for the given second (tests and range bounds use this).
pub fn object_id_at(seconds: u64) -> String {
    let (random, counter) = process_state();
    let counter = counter.fetch_add(1, Ordering::Relaxed);
    let mut out = format!("{:08x}", seconds as u32);
    for b in random {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str(&format!("{:06x}", counter & 0x00ff_ffff));
    out
}

/// Whether `s` has the shape of an id made here: exactly 24 lowercase or uppercase hex digits.
pub fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_hex_and_time_ordered() {
        let a = object_id_at(1_700_000_000);
        let b = object_id_at(1_700_000_001);
        assert!(is_object_id(&a) && is_object_id(&b));
        assert!(a < b);
        assert!(a.starts_with(&format!("{:08x}", 1_700_000_000u32)));
        let (x, y) = (object_id(), object_id());
        assert!(x < y, "one process's ids sort in creation order");
        assert!(!is_object_id("zz0000000000000000000000"));
    }
}
