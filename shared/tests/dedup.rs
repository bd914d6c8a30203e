//! Dedup (shared::exports::dedup): normalisation, MinHash estimates against exact Jaccard,
//! verdicts, and a journal that replays into the state one pass reaches, at any mark.

use std::collections::HashSet;

use shared::exports::dedup::{normalise, signature, similarity, Dedup, Deduper, Verdict, SHINGLE_WORDS};

fn text(words: &[String]) -> String {
    normalise([("user", words.join(" ").as_str())])
}

/// Exact Jaccard similarity of two texts' word 5-gram sets.
fn jaccard(a: &str, b: &str) -> f64 {
    let shingles = |t: &str| -> HashSet<Vec<String>> {
        let w: Vec<String> = t.split_whitespace().map(str::to_string).collect();
        w.windows(SHINGLE_WORDS).map(<[String]>::to_vec).collect()
    };
    let (x, y) = (shingles(a), shingles(b));
    x.intersection(&y).count() as f64 / x.union(&y).count() as f64
}

/// A seeded word stream (no two runs alike).
fn words(seed: u64, n: usize) -> Vec<String> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            format!("w{}", (s >> 33) % 5000)
        })
        .collect()
}

#[test]
fn normalising_ignores_case_and_whitespace_but_not_roles_or_words() {
    let a = normalise([("user", "Where is  my\nORDER?"), ("assistant", "It ships today.")]);
    let b = normalise([("user", " where is my order? "), ("assistant", "it   ships today.")]);
    assert_eq!(a, b);
    assert_ne!(a, normalise([("assistant", "where is my order?"), ("user", "it ships today.")]));
    assert_ne!(a, normalise([("user", "where is my parcel?"), ("assistant", "it ships today.")]));
}

#[test]
fn minhash_estimates_the_jaccard_similarity_of_word_shingles() {
    for (seed, changed) in [(1u64, 1usize), (2, 3), (3, 8), (4, 20), (5, 60)] {
        let base = words(seed, 200);
        let mut other = base.clone();
        for i in 0..changed {
            other[(i * 37 + 11) % 200] = format!("x{i}");
        }
        let (a, b) = (text(&base), text(&other));
        let (exact, estimate) = (jaccard(&a, &b), similarity(&signature(&a), &signature(&b)));
        assert!((exact - estimate).abs() < 0.12, "{changed} changed: exact {exact:.3}, estimated {estimate:.3}");
    }
    assert_eq!(similarity(&signature("a b c"), &signature("a b c")), 1.0);
}

#[test]
fn verdicts_keep_the_first_and_name_it_for_each_duplicate() {
    let mut d = Deduper::new(Dedup::Near);
    let base = words(9, 120);
    let mut near = base.clone();
    near[60] = "different".into();
    let examples =
        [("a", text(&base)), ("b", text(&base).to_uppercase()), ("c", text(&near)), ("d", text(&words(10, 120)))];
    let mut kept = Vec::new();
    for (id, t) in &examples {
        match d.check(&normalise([("user", t.as_str())])) {
            Verdict::Unique(fp) => {
                d.keep(id, fp).unwrap();
                kept.push(*id);
            }
            Verdict::Duplicate { kept, similarity, .. } => d.removed(kept, id, similarity),
        }
    }
    assert_eq!(kept, ["a", "d"]);
    assert_eq!(d.kept(), 2, "only kept examples are remembered");
    let sample: Vec<(&str, &str)> = d.sample().iter().map(|p| (p.kept.as_str(), p.removed.as_str())).collect();
    assert_eq!(sample, [("a", "b"), ("a", "c")]);
    assert_eq!(d.sample()[0].similarity, 1.0);
    assert!(d.sample()[1].similarity >= 0.8 && d.sample()[1].similarity < 1.0);

    // Exact mode leaves the near duplicate.
    let mut d = Deduper::new(Dedup::Exact);
    let verdicts: Vec<bool> = examples
        .iter()
        .map(|(id, t)| match d.check(&normalise([("user", t.as_str())])) {
            Verdict::Unique(fp) => {
                d.keep(id, fp).unwrap();
                true
            }
            Verdict::Duplicate { .. } => false,
        })
        .collect();
    assert_eq!(verdicts, [true, false, true, true]);
}

fn step(d: &mut Deduper, i: usize, t: &str, kept: &mut Vec<usize>) {
    match d.check(t) {
        Verdict::Unique(fp) => {
            d.keep(&i.to_string(), fp).unwrap();
            kept.push(i);
        }
        Verdict::Duplicate { kept, similarity, .. } => d.removed(kept, &i.to_string(), similarity),
    }
}

type Outcome = (Vec<usize>, Vec<(String, String)>);

/// Runs `texts` as a job does: the producer runs two items ahead of the checkpoints, which
/// journal up to the mark of each item in `cuts`. With `die_at`, the invocation dies before that
/// item and a new one replays the journal of its last checkpoint and continues after it.
fn run(texts: &[String], cuts: &[usize], die_at: Option<usize>) -> Outcome {
    let (mut d, mut segments, mut marks, mut kept) = (Deduper::new(Dedup::Near), Vec::new(), Vec::new(), Vec::new());
    let mut checkpoint: Option<(usize, usize)> = None; // (item, segments)
    for (i, t) in texts.iter().enumerate() {
        if Some(i) == die_at {
            let (from, n) = checkpoint.map_or((0, 0), |(c, n)| (c + 1, n));
            let mut d = Deduper::replay(Dedup::Near, usize::MAX, &segments[..n]).unwrap();
            kept.retain(|k| *k < from);
            for (j, t) in texts.iter().enumerate().skip(from) {
                step(&mut d, j, t, &mut kept);
            }
            return (kept, d.sample().iter().map(|p| (p.kept.clone(), p.removed.clone())).collect());
        }
        step(&mut d, i, t, &mut kept);
        marks.push(d.mark());
        if let Some(c) = i.checked_sub(2).filter(|c| cuts.contains(c)) {
            if let Some(segment) = d.segment(marks[c]) {
                segments.push(segment);
            }
            checkpoint = Some((c, segments.len()));
        }
    }
    (kept, d.sample().iter().map(|p| (p.kept.clone(), p.removed.clone())).collect())
}

#[test]
fn a_journal_replayed_at_any_checkpoint_dedups_as_one_pass() {
    // 60 examples: every third repeats or paraphrases an earlier one.
    let texts: Vec<String> = (0..60)
        .map(|i| {
            let mut w = words(100 + (if i % 3 == 2 { i / 3 } else { i }) as u64, 80);
            if i % 6 == 5 {
                w[40] = "changed".into();
            }
            text(&w)
        })
        .collect();
    let one_pass = run(&texts, &[], None);
    assert!(one_pass.0.len() < 50, "duplicates were removed: {}", one_pass.0.len());
    for cuts in [vec![4], vec![0, 9, 10, 30], vec![17, 41, 56]] {
        for die_at in [3, 12, 20, 42, 59] {
            assert_eq!(run(&texts, &cuts, Some(die_at)), one_pass, "cuts {cuts:?}, died at {die_at}");
        }
    }
    assert!(Deduper::replay(Dedup::Near, usize::MAX, &[b"nope".to_vec()]).is_err(), "a damaged segment is an error");
}

#[test]
fn memory_grows_with_kept_examples_only_within_the_documented_bound() {
    let mut d = Deduper::new(Dedup::Near);
    let long: Vec<String> = (0..2_000).map(|i| text(&words(i, 300))).collect();
    for (i, t) in long.iter().enumerate() {
        if let Verdict::Unique(fp) = d.check(t) {
            d.keep(&format!("{:024x}", i), fp).unwrap();
        }
        let _ = d.segment(d.mark()); // a checkpoint empties the journal
    }
    assert_eq!(d.kept(), 2_000);
    let per_example = d.footprint() as f64 / 2_000.0;
    eprintln!("{per_example:.0} bytes per kept example");
    assert!(per_example < 1024.0, "{per_example:.0} bytes per kept example");
    // A thousand duplicates of kept examples add (almost) nothing: the first ten go to the sample.
    let before = d.footprint();
    for t in long.iter().take(1_000) {
        if let Verdict::Duplicate { kept, similarity, .. } = d.check(t) {
            d.removed(kept, "dup", similarity);
        }
    }
    assert_eq!(d.kept(), 2_000);
    assert!(d.footprint() - before < 2_000, "{} bytes added by duplicates", d.footprint() - before);
    // Past its limit, dedup refuses to keep more (a 400 naming `dedup`) instead of growing.
    let mut small = Deduper::new(Dedup::Exact).with_limit(1);
    for (i, t) in long.iter().take(2).enumerate() {
        let Verdict::Unique(fp) = small.check(t) else { panic!("unique") };
        let kept = small.keep(&i.to_string(), fp);
        assert_eq!(kept.is_ok(), i == 0);
    }
}
