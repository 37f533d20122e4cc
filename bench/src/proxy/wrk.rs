//! The external load generator: runs `wrk --latency` and reads its report.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

/// One `wrk` run.
#[derive(Clone, Debug)]
pub struct Load<'a> {
    /// `http://127.0.0.1:port/`.
    pub url: String,
    /// A `Host` header other than the URL's (for name-based routing).
    pub host: Option<&'a str>,
    /// A `Cookie` header (a signed-in session).
    pub cookie: Option<&'a str>,
    /// Send `Connection: close`: one TCP connection per request.
    pub close: bool,
    /// wrk threads.
    pub threads: usize,
    /// Connections kept busy.
    pub connections: usize,
    /// Seconds of load.
    pub seconds: u64,
}

/// What `wrk --latency` reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkReport {
    /// Responses of any status per second (`Requests/sec`).
    pub rate: f64,
    /// Responses received.
    pub requests: u64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Socket errors: connect, read, write and timeout together.
    pub socket_errors: u64,
    /// Responses with a status other than 2xx or 3xx.
    pub non_2xx: u64,
}

impl WrkReport {
    /// Failed requests: socket errors and non-2xx/3xx responses.
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }

    /// Responses that succeeded, per second.
    pub fn ok_rate(&self) -> f64 {
        if self.non_2xx == 0 {
            return self.rate;
        }
        if self.requests == 0 {
            return 0.0;
        }
        let ok = self.requests.saturating_sub(self.non_2xx) as f64;
        self.rate * ok / self.requests as f64
    }
}

/// Runs `wrk` (at `program`) and parses its report. The run is killed if it
/// overruns its duration by half a minute.
pub async fn run(program: &Path, load: &Load<'_>) -> anyhow::Result<WrkReport> {
    let mut command = tokio::process::Command::new(program);
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .arg("--latency");
    if let Some(host) = load.host {
        command.arg("-H").arg(format!("Host: {host}"));
    }
    if let Some(cookie) = load.cookie {
        command.arg("-H").arg(format!("Cookie: {cookie}"));
    }
    if load.close {
        command.arg("-H").arg("Connection: close");
    }
    command.arg(&load.url).kill_on_drop(true);
    let deadline = Duration::from_secs(load.seconds + 30);
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .with_context(|| format!("wrk did not finish within {deadline:?}"))?
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {} {}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse(&stdout).with_context(|| format!("reading wrk's report:\n{stdout}"))
}

/// Parses the report of `wrk --latency`.
pub fn parse(text: &str) -> anyhow::Result<WrkReport> {
    let mut report = WrkReport::default();
    let (mut rate, mut p50, mut p99, mut requests) = (None, None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rate = Some(value.parse::<f64>().context("Requests/sec")?),
            ["50%", value] => p50 = Some(duration(value)?),
            ["99%", value] => p99 = Some(duration(value)?),
            [count, "requests", "in", ..] => requests = Some(count.parse::<u64>().context("request count")?),
            ["Socket", "errors:", rest @ ..] => {
                // connect N, read N, write N, timeout N
                for pair in rest.chunks(2) {
                    if let [_, n] = pair {
                        report.socket_errors += n.trim_end_matches(',').parse::<u64>().context("socket errors")?;
                    }
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => report.non_2xx = n.parse().context("non-2xx count")?,
            _ => {}
        }
    }
    report.rate = rate.context("no Requests/sec line")?;
    report.p50 = p50.context("no 50% line (was --latency given?)")?;
    report.p99 = p99.context("no 99% line (was --latency given?)")?;
    report.requests = requests.context("no request count")?;
    Ok(report)
}

/// A wrk time such as `534.00us`, `1.37ms`, `2.00s` or `1.50m`.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| format!("bad number in {text:?}"))?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("unknown unit {other:?} in {text:?}"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("bad time {text:?}");
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP_ALIVE: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   571.38us  227.65us   7.31ms   81.97%
    Req/Sec    43.67k     3.13k   49.46k    74.50%
  Latency Distribution
     50%  534.00us
     75%  656.00us
     90%  806.00us
     99%    1.37ms
  869214 requests in 10.00s, 1.01GB read
Requests/sec:  86914.61
Transfer/sec:    103.15MB
";

    const FAILING: &str = "Running 2s test @ http://127.0.0.1:9000/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20s   300.00ms   2.00s    70.00%
    Req/Sec     0.50      1.00     3.00     90.00%
  Latency Distribution
     50%    1.10s 
     75%    1.50s 
     90%    1.90s 
     99%    1.50m 
  20 requests in 2.00s, 3.00KB read
  Socket errors: connect 3, read 4, write 0, timeout 12
  Non-2xx or 3xx responses: 20
Requests/sec:     10.00
Transfer/sec:      1.50KB
";

    #[test]
    fn reads_rate_percentiles_and_errors() {
        let r = parse(KEEP_ALIVE).unwrap();
        assert_eq!(r.rate, 86914.61);
        assert_eq!(r.requests, 869_214);
        assert_eq!(r.p50, Duration::from_micros(534));
        assert_eq!(r.p99, Duration::from_micros(1370));
        assert_eq!(r.errors(), 0);
        assert_eq!(r.ok_rate(), r.rate);

        let r = parse(FAILING).unwrap();
        assert_eq!(r.p50, Duration::from_millis(1100));
        assert_eq!(r.p99, Duration::from_secs(90));
        assert_eq!(r.socket_errors, 19);
        assert_eq!(r.non_2xx, 20);
        assert_eq!(r.errors(), 39);
        assert_eq!(r.ok_rate(), 0.0);
    }

    #[test]
    fn refuses_reports_without_latency_or_with_odd_units() {
        assert!(parse("Requests/sec: 5.0\n  10 requests in 2.00s, 1KB read\n").is_err());
        assert!(duration("12.00xs").is_err());
        assert!(duration("12").is_err());
        assert!(duration("us").is_err());
        assert_eq!(duration("0.00us").unwrap(), Duration::ZERO);
    }
}
