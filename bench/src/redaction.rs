//! Section 7 of the benchmark, redaction: precision and recall per type on the labelled corpus
//! (`corpus.rs`), and the redaction throughput (MB of text per second, one core).

use std::collections::BTreeMap;
use std::time::Instant;

use shared::exports::redact::{spans, PiiType, Redactor};

use super::corpus::{generate, Labelled};
use super::{Row, Target};

/// Messages in the corpus.
const MESSAGES: usize = 5_000;
/// Its seed: the corpus is the same on every run.
const SEED: u64 = 20_261_206;

#[derive(Default)]
struct Tally {
    labelled: u64,
    caught: u64,
    found: u64,
    right: u64,
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn score(corpus: &[Labelled]) -> BTreeMap<PiiType, Tally> {
    let mut tally: BTreeMap<PiiType, Tally> = BTreeMap::new();
    for m in corpus {
        let found = spans(&m.text, &PiiType::ALL, m.region, &m.identity);
        for &(s, e, kind) in &m.spans {
            let t = tally.entry(kind).or_default();
            t.labelled += 1;
            if found.iter().any(|&(fs, fe, fk)| fk == kind && overlaps((s, e), (fs, fe))) {
                t.caught += 1;
            }
        }
        for &(fs, fe, fk) in &found {
            let t = tally.entry(fk).or_default();
            t.found += 1;
            if m.spans.iter().any(|&(s, e, k)| k == fk && overlaps((s, e), (fs, fe))) {
                t.right += 1;
            }
        }
    }
    tally
}

/// The redaction rows.
pub fn redaction() -> Vec<Row> {
    let corpus = generate(SEED, MESSAGES);
    let tally = score(&corpus);
    let mut rows = Vec::new();
    let (mut found, mut right) = (0, 0);
    for (kind, t) in &tally {
        let recall_target = match kind {
            PiiType::Phone => 0.95,
            PiiType::Email | PiiType::Card | PiiType::Iban | PiiType::Name => 0.99,
            _ => 0.0,
        };
        let recall = if t.labelled == 0 { 1.0 } else { t.caught as f64 / t.labelled as f64 };
        rows.push(Row {
            section: "7. Redaction",
            measure: format!("`{}` recall ({} labelled, {} caught)", kind.code(), t.labelled, t.caught),
            unit: "share",
            ours: recall,
            baseline: None,
            target: (recall_target > 0.0).then_some(Target::Above(recall_target)),
            note: String::new(),
        });
        let precision = if t.found == 0 { 1.0 } else { t.right as f64 / t.found as f64 };
        rows.push(Row {
            section: "7. Redaction",
            measure: format!("`{}` precision ({} found, {} right)", kind.code(), t.found, t.right),
            unit: "share",
            ours: precision,
            baseline: None,
            target: None,
            note: String::new(),
        });
        found += t.found;
        right += t.right;
    }
    rows.push(Row {
        section: "7. Redaction",
        measure: format!("precision over every type ({found} found, {right} right)"),
        unit: "share",
        ours: if found == 0 { 1.0 } else { right as f64 / found as f64 },
        baseline: None,
        target: Some(Target::Above(0.97)),
        note: format!("{MESSAGES} generated messages (seed {SEED}) with hard negatives: order, tracking and ticket numbers, prices, dates, times, versions, postcodes, non-Luhn 16 digits"),
    });
    // Throughput: the whole corpus through one redactor per message, on one core.
    let bytes: usize = corpus.iter().map(|m| m.text.len()).sum();
    let runs = 3;
    let started = Instant::now();
    for _ in 0..runs {
        for m in &corpus {
            let mut r = Redactor::new(&PiiType::ALL, m.region, &m.identity);
            std::hint::black_box(r.redact(&m.text));
        }
    }
    let mb_per_s = (bytes * runs) as f64 / 1e6 / started.elapsed().as_secs_f64();
    rows.push(Row {
        section: "7. Redaction",
        measure: format!("redaction throughput ({:.1} MB of text)", bytes as f64 / 1e6),
        unit: "MB/s",
        ours: mb_per_s,
        baseline: None,
        target: None,
        note: "one core; the export-speed target (≥ 0.9 x without redaction) is in section 3".into(),
    });
    rows
}
