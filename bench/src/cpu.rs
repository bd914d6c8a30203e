//! Section 9, export CPU: the process CPU (user + system) an export invocation costs per
//! 1,000 snapshots, per format, against the CPU of the same reads done alone with the raw SDK.
//!
//! CPU rather than wall time: the emulator serialises and dominates the wall time, whereas on
//! Lambda, where CPU scales with memory (512 MB is about 0.3 vCPU), the export is CPU-bound and
//! CPU is what a user pays for.

use std::sync::Arc;

use shared::AppState;

use crate::{check, event, export_log, median, raw_read, token, Res, Row, Settings, Target};

/// Every training format; `jsonl` first (the others are compared with it).
const FORMATS: [&str; 7] = ["jsonl", "json", "openai", "csv", "bedrock", "vertex", "sharegpt"];
/// The target for `jsonl`.
const JSONL_TARGET: f64 = 80.0;

/// CPU time (user + system, every thread) of process `pid` so far, in milliseconds.
pub fn process_cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) close with ')': utime and stime are the
    // 12th and 13th after it, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) * 10.0
}

/// The CPU per 1,000 snapshots of reading `org`'s snapshots alone, in this process.
async fn read_floor(state: &AppState, org: &str) -> Res<f64> {
    let before = process_cpu_ms("self");
    let read = raw_read(state, org).await?;
    let cpu = process_cpu_ms("self") - before;
    Ok(cpu / read.snapshots.max(1) as f64 * 1000.0)
}

pub async fn export_cpu(settings: &Settings, state: &Arc<AppState>, secret: &str, org: &str) -> Res<Vec<Row>> {
    let tok = token(secret, org)?;
    let count = settings.export_snapshots;
    let mut floor = Vec::new();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); FORMATS.len()];
    let mut peak: Vec<Vec<f64>> = vec![Vec::new(); FORMATS.len()];
    // BENCH_CPU_FORMATS=jsonl (say, under a profiler) measures only those formats.
    let only = std::env::var("BENCH_CPU_FORMATS").unwrap_or_default();
    let measured = |f: &str| only.is_empty() || only.split(',').any(|o| o == f);
    for run in 0..settings.runs {
        floor.push(read_floor(state, org).await?);
        for (i, format) in FORMATS.iter().enumerate().filter(|(_, f)| measured(f)) {
            let (event, _) = event("GET", &format!("/api/training/export?format={format}&delivery=url"), &tok, None)?;
            let result = crate::run_export(settings, &state.config.table_name, &event).await?;
            check(result.status, 303, result.body.to_string().as_bytes(), "export-training")?;
            let log = export_log(&result.logs).ok_or("export-training logged no `export finished` line")?;
            let items = log["items"].as_u64().unwrap_or(0) + log["skipped"].as_u64().unwrap_or(0);
            if items as usize != count {
                return Err(format!("`{format}` exported {items} of {count} snapshots").into());
            }
            let per_1000 = result.cpu_ms / count as f64 * 1000.0;
            eprintln!(
                "   run {}: `{format}` {:.0} CPU-ms ({per_1000:.1} per 1,000), {:.1} s, peak RSS {:.1} MiB",
                run + 1,
                result.cpu_ms,
                result.response.as_secs_f64(),
                result.peak_rss as f64 / (1 << 20) as f64
            );
            crate::drop_exports(state, org).await?;
            cpu[i].push(per_1000);
            peak[i].push(result.peak_rss as f64 / (1 << 20) as f64);
        }
    }
    let floor = median(floor);
    let jsonl = median(cpu[0].clone());
    let mut rows = vec![Row {
        section: "9. Export CPU",
        measure: format!(
            "`jsonl`: CPU-ms per 1,000 snapshots ({count} × {} messages; baseline: reads alone)",
            settings.messages
        ),
        unit: "CPU-ms",
        ours: jsonl,
        baseline: Some(floor),
        target: Some(Target::NoMore(JSONL_TARGET)),
        note: format!(
            "process CPU of the invocation (cold start included), peak RSS {:.1} MiB",
            median(peak[0].clone())
        ),
    }];
    for (i, format) in FORMATS.iter().enumerate().skip(1).filter(|(_, f)| measured(f)) {
        rows.push(Row {
            section: "9. Export CPU",
            measure: format!("`{format}`: CPU-ms per 1,000 snapshots (baseline: `jsonl`)"),
            unit: "CPU-ms",
            ours: median(cpu[i].clone()),
            baseline: Some(jsonl),
            target: Some(Target::AtMost(1.3)),
            note: format!("peak RSS {:.1} MiB", median(peak[i].clone())),
        });
    }
    Ok(rows)
}
