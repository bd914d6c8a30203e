//! Time-ordered 24-hex ids shaped like MongoDB ObjectIds, so Tether clients that check
//! ids keep working and ids sort by creation time.

use std::sync::atomic::{AtomicU32, Ordering};

use rand::Rng;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new id: 4 bytes of seconds since the epoch, 5 random bytes, a 3-byte counter.
pub fn object_id() -> String {
    object_id_at(crate::auth::now_epoch())
}

/// A new id for the given second (tests and range bounds use this).
pub fn object_id_at(seconds: u64) -> String {
    let mut rng = rand::rng();
    let random: [u8; 5] = rng.random();
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(rng.random::<u32>() & 0x00ff_ffff);
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
        assert_ne!(object_id(), object_id());
        assert!(!is_object_id("zz0000000000000000000000"));
    }
}
