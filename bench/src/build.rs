//! Section 11, build time: what `scripts/bench.sh` measured of its own release build (passed in
//! `BENCH_BUILD_*`), with the release profile of `Cargo.toml`.

use crate::{Row, Target};

fn seconds(name: &str) -> Option<f64> {
    std::env::var(name).ok()?.parse().ok()
}

/// The rows, when the build was timed (a whole run of `scripts/bench.sh`).
pub fn build_time() -> Vec<Row> {
    let (Some(build), Some(rebuild)) = (seconds("BENCH_BUILD_SECONDS"), seconds("BENCH_REBUILD_SECONDS")) else {
        return Vec::new();
    };
    let cold = std::env::var("BENCH_BUILD_COLD").as_deref() == Ok("1");
    let functions = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../functions"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.path().is_dir()).count())
        .unwrap_or(16);
    let row = |measure: String, ours: f64, target: Option<Target>, note: String| Row {
        section: "11. Build",
        measure,
        unit: "min",
        ours,
        baseline: None,
        target,
        note,
    };
    let mut rows = vec![row(
        format!("release build of the {functions} functions, the bench and its baseline, one cargo invocation"),
        build / 60.0,
        None,
        if cold {
            "cold: a fresh target, every dependency built".into()
        } else {
            "warm target: not a cold build".into()
        },
    )];
    rows.push(row(
        "one function rebuilt after a change to it".into(),
        rebuild / 60.0,
        None,
        "what each further function of `sam build` adds (one cargo-lambda build each)".into(),
    ));
    if cold {
        rows.push(row(
            format!(
                "`sam build` of the {functions} functions, estimated: the cold build + {} × one function",
                functions - 1
            ),
            (build + (functions - 1) as f64 * rebuild) / 60.0,
            Some(Target::NoMore(20.0)),
            "an upper bound: the cold build already holds every function".into(),
        ));
    }
    rows
}
