//! Section 8 of the benchmark, near-duplicate detection: generated pairs of known Jaccard
//! similarity (of their word 5-gram sets, computed exactly), each second text checked against
//! the first by `dedup=near`; the share caught above 0.9 and the share wrongly caught below 0.5.

use std::collections::HashSet;
use std::time::Instant;

use shared::exports::dedup::{normalise, Dedup, Deduper, Verdict, SHINGLE_WORDS};

use super::{Row, Target};

/// Pairs generated.
const PAIRS: usize = 3_000;
/// Their seed.
const SEED: u64 = 15;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn jaccard(a: &[String], b: &[String]) -> f64 {
    let set = |w: &[String]| -> HashSet<Vec<String>> { w.windows(SHINGLE_WORDS).map(<[String]>::to_vec).collect() };
    let (x, y) = (set(a), set(b));
    x.intersection(&y).count() as f64 / x.union(&y).count().max(1) as f64
}

/// A text and a variant with some words replaced, inserted or deleted.
fn pair(rng: &mut Rng) -> (Vec<String>, Vec<String>) {
    let len = 60 + rng.below(240);
    let base: Vec<String> = (0..len).map(|_| format!("w{}", rng.below(3_000))).collect();
    let mut variant = base.clone();
    let edits = rng.below(len / 8 + 1);
    for e in 0..edits {
        let at = rng.below(variant.len());
        match rng.below(3) {
            0 => variant[at] = format!("edit{e}"),
            1 => variant.insert(at, format!("added{e}")),
            _ => {
                variant.remove(at);
            }
        }
    }
    (base, variant)
}

fn caught(a: &[String], b: &[String]) -> bool {
    let text = |w: &[String]| normalise([("user", w.join(" ").as_str())]);
    let mut d = Deduper::new(Dedup::Near);
    if let Verdict::Unique(fp) = d.check(&text(a)) {
        let _ = d.keep("a", fp); // no limit: never refused
    }
    matches!(d.check(&text(b)), Verdict::Duplicate { .. })
}

fn share(v: &[bool]) -> f64 {
    v.iter().filter(|c| **c).count() as f64 / v.len().max(1) as f64
}

/// The near-duplicate rows.
pub fn near_duplicates() -> Vec<Row> {
    let mut rng = Rng(SEED);
    let (mut high, mut middle, mut low) = (Vec::new(), Vec::new(), Vec::new());
    let mut words = 0usize;
    let started = Instant::now();
    for _ in 0..PAIRS {
        let (a, b) = pair(&mut rng);
        words += a.len() + b.len();
        let j = jaccard(&a, &b);
        let c = caught(&a, &b);
        match j {
            j if j > 0.9 => high.push(c),
            j if j < 0.5 => low.push(c),
            _ => middle.push(c),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let row = |measure: String, ours: f64, target: Option<Target>, note: &str| Row {
        section: "8. Near duplicates",
        measure,
        unit: "share",
        ours,
        baseline: None,
        target,
        note: note.to_string(),
    };
    vec![
        row(
            format!("caught, Jaccard > 0.9 ({} pairs)", high.len()),
            share(&high),
            Some(Target::Above(0.95)),
            "MinHash 112 x 16 bits, 14 bands x 8 rows, confirmed at estimated similarity >= 0.8",
        ),
        row(format!("wrongly caught, Jaccard < 0.5 ({} pairs)", low.len()), share(&low), Some(Target::Below(0.01)), ""),
        row(
            format!("caught, Jaccard 0.5 to 0.9 ({} pairs; the threshold is 0.8)", middle.len()),
            share(&middle),
            None,
            "",
        ),
        Row {
            section: "8. Near duplicates",
            measure: format!("near-dedup throughput ({PAIRS} pairs, {words} words, exact Jaccard included)"),
            unit: "words/s",
            ours: words as f64 / elapsed,
            baseline: None,
            target: None,
            note: "one core; includes the exact Jaccard the rows above are labelled with".into(),
        },
    ]
}
