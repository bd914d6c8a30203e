//! The dedup journal's encoding: one segment is `DDJ1` then events, each a tag byte (0: an
//! example kept, with its id, exact hash and signature; 1: a sample pair), little-endian.

use super::{Dedup, Deduper, Event, Fingerprint, Pair, HASHES};
use crate::error::ApiError;

const MAGIC: &[u8; 4] = b"DDJ1";

impl Deduper {
    /// The journal's events before `mark` (an item's [`Deduper::mark`]), encoded as the next
    /// segment, and forgotten from the journal; `None` when there are none.
    pub fn segment(&mut self, mark: u64) -> Option<Vec<u8>> {
        let first = self.events - self.journal.len() as u64;
        let take = mark.saturating_sub(first).min(self.journal.len() as u64) as usize;
        if take == 0 {
            return None;
        }
        let mut out = MAGIC.to_vec();
        for event in self.journal.drain(..take) {
            match event {
                Event::Kept(id, fp) => {
                    out.push(0);
                    put_str(&mut out, &id);
                    out.extend(fp.exact.to_le_bytes());
                    match fp.signature {
                        Some(sig) => {
                            out.push(1);
                            out.extend(sig.iter().flat_map(|h| h.to_le_bytes()));
                        }
                        None => out.push(0),
                    }
                }
                Event::Sampled(pair) => {
                    out.push(1);
                    put_str(&mut out, &pair.kept);
                    put_str(&mut out, &pair.removed);
                    out.extend(pair.similarity.to_le_bytes());
                }
            }
        }
        Some(out)
    }

    /// The state a job had after writing `segments` (in order), holding at most `limit`.
    pub fn replay(mode: Dedup, limit: usize, segments: &[Vec<u8>]) -> Result<Self, ApiError> {
        let mut d = Self::new(mode).with_limit(limit);
        for segment in segments {
            let mut r = Reader { bytes: segment, at: 0 };
            if r.take(4)? != MAGIC {
                return Err(ApiError::internal("dedup journal", "not a journal segment"));
            }
            while r.at < segment.len() {
                match r.take(1)?[0] {
                    0 => {
                        let id = r.string()?;
                        let exact = u128::from_le_bytes(r.array()?);
                        let signature = match r.take(1)?[0] {
                            0 => None,
                            _ => {
                                let mut sig = [0u16; HASHES];
                                for h in sig.iter_mut() {
                                    *h = u16::from_le_bytes(r.array()?);
                                }
                                Some(Box::new(sig))
                            }
                        };
                        d.apply_kept(id, Fingerprint { exact, signature });
                    }
                    _ => {
                        let (kept, removed) = (r.string()?, r.string()?);
                        d.sample.push(Pair { kept, removed, similarity: f64::from_le_bytes(r.array()?) });
                    }
                }
                d.events += 1;
            }
        }
        Ok(d)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Ids are short; a longer string is cut at the u16 length (never the case for our ids).
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend((bytes.len() as u16).to_le_bytes());
    out.extend(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        let end = self.at + n;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| ApiError::internal("dedup journal", "truncated"))?;
        self.at = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ApiError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn string(&mut self) -> Result<String, ApiError> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|e| ApiError::internal("dedup journal", e))
    }
}
