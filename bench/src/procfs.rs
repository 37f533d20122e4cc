//! What `/proc` says about the processes a benchmark measures.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// `VmRSS` of `pid`, KiB (0 if it cannot be read).
pub fn resident_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// `RssAnon` of `pid`, KiB: the resident memory that is the process's own
/// (heap, stacks), without the pages of its binary and libraries, which the
/// page cache holds and processes of the same binary share.
pub fn anonymous_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

/// A `kB` figure of `/proc/PID/status` (0 if it cannot be read).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU seconds of `pid` so far (all its threads).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("an unexpected /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after ')'.
    let ticks = |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("a short /proc stat")?.parse()?) };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second() as f64)
}

/// `getconf CLK_TCK` (100 on Linux, whatever the kernel's HZ).
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Processes whose command line mentions `marker` (the directory's
/// processes, started with their state directory on the command line), and
/// every process descended from one of them: Samba's processes set their own
/// titles, so they are found through the watchdog that started them.
pub fn processes_under(marker: &Path) -> Vec<u32> {
    let marker = marker.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = std::collections::BTreeSet::new();
    let mut parents = Vec::new();
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker)) {
            found.insert(pid);
        }
        if let Some(ppid) = parent_of(pid) {
            parents.push((pid, ppid));
        }
    }
    // Descendants, one generation per pass.
    loop {
        let before = found.len();
        for (pid, ppid) in &parents {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            return found.into_iter().collect();
        }
    }
}

/// The parent process of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Pins every thread of `pid` to the CPUs `cpus` (a list as `taskset` takes
/// it: `1`, `0-2`); threads it starts later inherit the pinning.
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["--all-tasks", "--pid", "--cpu-list", cpus, &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(
        out.status.success(),
        "taskset could not pin process {pid} to CPUs {cpus}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_has_used_cpu() {
        let me = std::process::id();
        assert!(resident_kib(me) > 0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_seconds(me).unwrap() > 0.0);
        assert_eq!(resident_kib(u32::MAX), 0, "no such process");
        assert!(cpu_seconds(u32::MAX).is_err());
    }
}
