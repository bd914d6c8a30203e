//! Duplicate removal, a stage of the training export after redaction.
//!
//! `exact` hashes each example's normalised text (lower case, runs of whitespace as one space,
//! each message prefixed by its role), so two conversations that differ only in what redaction
//! replaced collapse. `near` adds MinHash over word 5-gram shingles: 112 hash functions
//! (`(a·x + b) mod 2^61−1`), kept as their low 16 bits (b-bit MinHash: the estimate's bias is
//! 2^-16), in 14 LSH bands of 8 rows, so a pair of Jaccard similarity 0.8 shares a band with
//! probability 1 − (1 − 0.8^8)^14 ≈ 0.92 and one of 0.5 with 0.05. A band match is a candidate;
//! it is removed when the estimated similarity (the share of equal hashes) is at least 0.8.
//!
//! The keep rule: an example is kept unless one kept before it in the export's order is its
//! duplicate. The training export reads newest first, so of each group the newest example
//! stays. A split job's files are written train, validation, test, and an example of a later
//! file is removed when its duplicate was kept in an earlier one: no duplicate crosses splits.
//!
//! Memory per kept example (not per text): 14 band keys, 112 16-bit hashes, the 16-byte exact
//! hash and the id, about 0.6 KB with the tables' spare room ([`Deduper::footprint`]); 100,000
//! kept examples hold about 60 MB. Removed examples hold nothing. A job journals what it kept ([`Deduper::segment`]) at every checkpoint, and a
//! resumed invocation replays the journal ([`Deduper::replay`]) into the same state.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

mod codec;

/// Hash functions of the MinHash signature.
pub const HASHES: usize = 112;
/// LSH bands (of [`ROWS`] hashes each).
pub const BANDS: usize = 14;
/// Hashes per band.
pub const ROWS: usize = HASHES / BANDS;
/// Words per shingle.
pub const SHINGLE_WORDS: usize = 5;
/// Estimated similarity from which a candidate is a near duplicate.
pub const THRESHOLD: f64 = 0.8;
/// `{kept, removed}` pairs kept as a sample for the manifest.
pub const SAMPLE: usize = 10;
const P: u64 = (1 << 61) - 1;

/// `dedup`: which duplicates a training export removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    /// None (the default).
    #[default]
    None,
    /// Equal normalised texts.
    Exact,
    /// Estimated Jaccard similarity of word 5-grams ≥ 0.8, and exact ones.
    Near,
}

impl Dedup {
    /// Parses `dedup` (default `none`).
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("none") => Ok(Self::None),
            Some("exact") => Ok(Self::Exact),
            Some("near") => Ok(Self::Near),
            Some(_) => Err(ApiError::invalid("dedup", "must be none, exact or near")),
        }
    }
    /// Whether nothing is removed.
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// An example's text as dedup compares it: lower case, whitespace runs as one space, each
/// message on its own line after its role.
pub fn normalise<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (role, text) in messages {
        out.push_str(role);
        out.push(':');
        for word in text.split_whitespace() {
            out.push(' ');
            out.extend(word.chars().flat_map(char::to_lowercase));
        }
        out.push('\n');
    }
    out
}

/// FNV-1a, 128 bits: a stable hash (the same in every build, so a journal outlives a deploy).
fn fnv128(bytes: &[u8]) -> u128 {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e3779b97f4a7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// The 112 hash functions' `(a, b)`, fixed for every build.
fn coefficients() -> &'static [(u64, u64); HASHES] {
    static C: std::sync::OnceLock<[(u64, u64); HASHES]> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let mut state = 0x5eed_d3d0_u64;
        std::array::from_fn(|_| (splitmix(&mut state) % (P - 1) + 1, splitmix(&mut state) % P))
    })
}

fn mod_p(v: u128) -> u64 {
    let folded = (v as u64 & P) as u128 + (v >> 61);
    let mut r = (folded as u64 & P) + (folded >> 61) as u64;
    if r >= P {
        r -= P;
    }
    r
}

/// An example's MinHash signature (low 16 bits of each minimum).
pub type Signature = [u16; HASHES];

/// The signature of a normalised text's word 5-grams (a text of fewer words is one shingle).
pub fn signature(normalised: &str) -> Signature {
    let words: Vec<u64> = normalised.split_whitespace().map(|w| fnv64(w.as_bytes())).collect();
    let mut mins = [u64::MAX; HASHES];
    let n = words.len().saturating_sub(SHINGLE_WORDS - 1).max(1);
    for start in 0..n {
        let shingle = words[start..words.len().min(start + SHINGLE_WORDS)]
            .iter()
            .fold(0xcbf29ce484222325_u64, |h, w| (h.rotate_left(23) ^ w).wrapping_mul(0x100000001b3));
        let x = u128::from(shingle % P);
        for (min, (a, b)) in mins.iter_mut().zip(coefficients()) {
            let h = mod_p(u128::from(*a) * x + u128::from(*b));
            if h < *min {
                *min = h;
            }
        }
    }
    mins.map(|m| m as u16)
}

/// The estimated Jaccard similarity of two signatures (the share of equal hashes).
pub fn similarity(a: &Signature, b: &Signature) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / HASHES as f64
}

fn band_key(band: usize, sig: &Signature) -> u64 {
    let rows = &sig[band * ROWS..(band + 1) * ROWS];
    let bytes: Vec<u8> = rows.iter().flat_map(|r| r.to_le_bytes()).chain([band as u8]).collect();
    fnv64(&bytes)
}

/// What dedup decided for an example.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not a duplicate of anything kept: keep it (then call [`Deduper::keep`]).
    Unique(Fingerprint),
    /// A duplicate of the kept example `kept` (its id), with the estimated similarity (1 when exact).
    Duplicate { kept: String, similarity: f64, exact: bool },
}

/// What is remembered of a kept example.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    exact: u128,
    signature: Option<Box<Signature>>,
}

/// A `{kept, removed}` pair of the manifest's sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pair {
    /// The example kept.
    pub kept: String,
    /// Its duplicate, removed.
    pub removed: String,
    /// Estimated similarity (1 for an exact duplicate).
    pub similarity: f64,
}

/// The state of one export's dedup: what was kept, and a journal of what changed since the
/// last [`Deduper::segment`].
#[derive(Debug, Clone, Default)]
pub struct Deduper {
    mode: Dedup,
    ids: Vec<String>,
    exact: HashMap<u128, u32>,
    bands: HashMap<u64, u32>,
    /// Further examples under a band key already taken (rare: their band is equal, yet they
    /// were not similar enough to be one group).
    more_bands: HashMap<u64, Vec<u32>>,
    signatures: Vec<Signature>,
    sample: Vec<Pair>,
    /// Events (kept examples and sample pairs) since the journal's last segment.
    journal: Vec<Event>,
    /// Events recorded in all, journaled or not (an item's mark).
    events: u64,
    /// The names of the journal segments that hold this state (a job's checkpoint lists them).
    pub segments: Vec<String>,
    /// Largest number of kept examples (memory bound; see [`max_kept`]).
    limit: usize,
}

#[derive(Debug, Clone)]
enum Event {
    Kept(String, Fingerprint),
    Sampled(Pair),
}

impl Deduper {
    /// An empty state for `mode`.
    pub fn new(mode: Dedup) -> Self {
        Self { mode, limit: usize::MAX, ..Self::default() }
    }

    /// The same, holding at most `limit` kept examples: [`Deduper::keep`] refuses the next.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The mode.
    pub fn mode(&self) -> Dedup {
        self.mode
    }

    /// Events recorded so far: an item's mark, for [`Deduper::segment`].
    pub fn mark(&self) -> u64 {
        self.events
    }

    /// The sample of `{kept, removed}` pairs (the first [`SAMPLE`] removals).
    pub fn sample(&self) -> &[Pair] {
        &self.sample
    }

    /// Examples kept so far.
    pub fn kept(&self) -> usize {
        self.ids.len()
    }

    /// Bytes the state holds (its tables' capacity, ids and signatures; the journal not
    /// counted, as a checkpoint empties it): what the module's memory bound is about.
    pub fn footprint(&self) -> usize {
        use std::mem::size_of;
        let ids: usize = self.ids.iter().map(|id| id.capacity() + size_of::<String>()).sum();
        // hashbrown: one control byte per bucket, buckets at most 8/7 of the capacity.
        let table = |entries: usize, entry: usize| entries * 8 / 7 * (entry + 1);
        ids + table(self.exact.capacity(), size_of::<(u128, u32)>())
            + table(self.bands.capacity(), size_of::<(u64, u32)>())
            + self.more_bands.values().map(|v| v.capacity() * 4 + 40).sum::<usize>()
            + self.signatures.capacity() * size_of::<Signature>()
            + self.sample.iter().map(|p| p.kept.len() + p.removed.len() + size_of::<Pair>()).sum::<usize>()
    }

    /// Whether the example of `normalised` text duplicates one kept before.
    pub fn check(&self, normalised: &str) -> Verdict {
        let exact = fnv128(normalised.as_bytes());
        if let Some(&i) = self.exact.get(&exact) {
            return Verdict::Duplicate { kept: self.ids[i as usize].clone(), similarity: 1.0, exact: true };
        }
        if self.mode != Dedup::Near {
            return Verdict::Unique(Fingerprint { exact, signature: None });
        }
        let sig = Box::new(signature(normalised));
        let mut best: Option<(u32, f64)> = None;
        for band in 0..BANDS {
            let key = band_key(band, &sig);
            let first = self.bands.get(&key).copied();
            for i in first.into_iter().chain(self.more_bands.get(&key).into_iter().flatten().copied()) {
                let s = similarity(&sig, &self.signatures[i as usize]);
                if s >= THRESHOLD && best.is_none_or(|(_, b)| s > b) {
                    best = Some((i, s));
                }
            }
        }
        match best {
            Some((i, similarity)) => {
                Verdict::Duplicate { kept: self.ids[i as usize].clone(), similarity, exact: false }
            }
            None => Verdict::Unique(Fingerprint { exact, signature: Some(sig) }),
        }
    }

    /// Remembers a kept example.
    pub fn keep(&mut self, id: &str, fingerprint: Fingerprint) -> Result<(), ApiError> {
        if self.ids.len() >= self.limit {
            return Err(ApiError::invalid(
                "dedup",
                format!(
                    "holds at most {} distinct examples in this function's memory (about 1 KB each); \
                     narrow the export with filters, or raise the export functions' memory",
                    self.limit
                ),
            ));
        }
        self.journal.push(Event::Kept(id.to_string(), fingerprint.clone()));
        self.events += 1;
        self.apply_kept(id.to_string(), fingerprint);
        Ok(())
    }

    /// Records a removal (only the first [`SAMPLE`] are remembered, for the manifest).
    pub fn removed(&mut self, kept: String, removed: &str, similarity: f64) {
        if self.sample.len() < SAMPLE {
            let pair = Pair { kept, removed: removed.to_string(), similarity: (similarity * 1000.0).round() / 1000.0 };
            self.journal.push(Event::Sampled(pair.clone()));
            self.events += 1;
            self.sample.push(pair);
        }
    }

    fn apply_kept(&mut self, id: String, fp: Fingerprint) {
        let index = self.ids.len() as u32;
        self.ids.push(id);
        self.exact.entry(fp.exact).or_insert(index);
        if let Some(sig) = fp.signature {
            for band in 0..BANDS {
                let key = band_key(band, &sig);
                match self.bands.entry(key) {
                    Entry::Vacant(slot) => {
                        slot.insert(index);
                    }
                    Entry::Occupied(_) => self.more_bands.entry(key).or_default().push(index),
                }
            }
            self.signatures.push(*sig);
        } else {
            // Exact mode keeps no signature; the index stays aligned with `ids` for near mode only.
            debug_assert!(self.signatures.is_empty());
        }
    }
}
