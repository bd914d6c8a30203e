//! SHA-256 of a file written across several Lambda invocations: the running state (eight
//! words, the length, and the bytes of an unfinished block) is small and serialisable, so an
//! export job's checkpoint carries it and a resumed job ends with the digest one pass gives.
//! The compression function is the `sha2` crate's; only FIPS 180-4's padding is written here.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

/// FIPS 180-4's initial hash value.
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// A running SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sha256State {
    /// The chaining value after every whole block so far.
    h: [u32; 8],
    /// Bytes hashed so far.
    len: u64,
    /// The unfinished block (fewer than 64 bytes), hex-encoded in a checkpoint.
    #[serde(with = "hex_tail")]
    tail: Vec<u8>,
}

impl Default for Sha256State {
    fn default() -> Self {
        Self { h: H0, len: 0, tail: Vec::new() }
    }
}

impl Sha256State {
    /// Hashes `bytes` after what was hashed so far.
    pub fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        let mut rest = bytes;
        if !self.tail.is_empty() {
            let take = (64 - self.tail.len()).min(rest.len());
            self.tail.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.tail.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.tail);
            self.compress(&block);
        }
        let whole = rest.len() / 64 * 64;
        self.compress(&rest[..whole]);
        self.tail.extend_from_slice(&rest[whole..]);
    }

    /// Compresses whole blocks, in place (no copy of the input).
    fn compress(&mut self, blocks: &[u8]) {
        for block in blocks.chunks_exact(64) {
            sha2::compress256(&mut self.h, std::slice::from_ref(GenericArray::from_slice(block)));
        }
    }

    /// The digest of everything hashed, as lowercase hex (the state is left as it was).
    pub fn hex(&self) -> String {
        let mut done = self.clone();
        let bits = self.len.wrapping_mul(8);
        let mut last = self.tail.clone();
        last.push(0x80);
        while last.len() % 64 != 56 {
            last.push(0);
        }
        last.extend_from_slice(&bits.to_be_bytes());
        done.compress(&last);
        done.h.iter().map(|w| format!("{w:08x}")).collect()
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The unfinished block as a checkpoint stores it: lowercase hex.
mod hex_tail {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tail: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&tail.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        // Only ever our own encoding; a damaged checkpoint makes the digest wrong, not a panic.
        Ok((0..text.len() / 2).filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn reference(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn any_split_of_the_input_through_a_serialised_state_gives_sha256() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        assert_eq!(Sha256State::default().hex(), reference(b""));
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 128, 1000] {
            for cut in [0, 1, 3, 63, 64, 100, len / 2, len] {
                let cut = cut.min(len);
                let mut state = Sha256State::default();
                state.update(&data[..cut]);
                // Through a checkpoint, as a resumed job takes it.
                let mut state: Sha256State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
                for piece in data[cut..len].chunks(37) {
                    state.update(piece);
                }
                assert_eq!(state.hex(), reference(&data[..len]), "len {len}, cut {cut}");
                assert_eq!(state.len(), len as u64);
            }
        }
    }
}
