//! Measuring and reporting: latency summaries, a closed-loop load driver, and
//! writing a section of `docs/benchmarks.md`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The result of driving an operation for a while.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl Measured {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The `q`-quantile latency (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// Runs `op` from `concurrency` loops for `duration` (after `warmup`), each loop
/// starting the next operation when the previous one ends (closed loop).
pub async fn drive<F, Fut>(concurrency: usize, warmup: Duration, duration: Duration, op: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let start_at = Instant::now() + warmup;
    let end_at = start_at + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = worker as u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end_at {
                    break;
                }
                let ok = op(i).await;
                i += concurrency as u64;
                if t0 >= start_at {
                    latencies.push(t0.elapsed());
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    latencies.sort();
    Measured {
        ops: latencies.len() as u64,
        errors,
        elapsed: duration,
        latencies,
    }
}

/// A millisecond figure for a table.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Replaces the section between `<!-- begin NAME -->` and `<!-- end NAME -->` in
/// `file` (appending it if missing).
pub fn write_section(file: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- begin {name} -->");
    let end = format!("<!-- end {name} -->");
    let current = std::fs::read_to_string(file).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{begin}\n{body}\n{end}");
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &current[..b], section, &current[e + end.len()..]),
        _ => format!("{}\n{}\n", current.trim_end(), section),
    };
    std::fs::write(file, updated)?;
    Ok(())
}

/// A benchmark's result: written into `file`'s section `name` first, if asked
/// (a closed standard output must not lose it), then printed.
#[allow(clippy::print_stdout)] // The table on standard output is the benchmark's result.
pub fn publish(name: &str, body: &str, file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(file) = file {
        write_section(file, name, body)?;
        eprintln!("wrote the {name} section of {}", file.display());
    }
    println!("\n{body}");
    Ok(())
}
