//! Sign-ins through the real pages, as a browser makes them: the app redirects
//! to the authorize endpoint, the username page and its post, the password page
//! and its post, the callback on the app's host (the code exchange inside the
//! service), then the app through the connector. Every sign-in starts with no
//! cookies (a fresh browser), so it is a full sign-in every time.
//!
//! Measured against an [`Installation`] of real processes: sign-ins per second
//! and their latency, CPU per sign-in by process (`utime + stime` from
//! `/proc/<pid>/stat` before and after the measured window) and the processes'
//! resident memory idle and at their peak.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::header::{COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use url::Url;

use super::installation::{APP_HOST, DirectorySide, Installation};
use crate::procfs::{cpu_seconds, processes_under};
use crate::report::{Measured, drive};

/// Longest wait for the first sign-in to go through (agent and tunnel up).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Requests of one sign-in at most before it is called broken.
const MAX_STEPS: usize = 12;

/// What the page-level measurement found.
pub struct PageRun {
    /// Sign-ins per second and latency.
    pub measured: Measured,
    /// CPU per sign-in (ms) by process: serve, agent, connector, the
    /// directory, and this harness (load generator and backend).
    pub cpu_ms: Vec<(String, f64)>,
    /// Resident memory (MiB) of serve, agent and connector: idle before the
    /// load, and their peak (VmHWM) after it.
    pub memory: Vec<(String, f64, f64)>,
}

/// Cookies of one browser, by host.
#[derive(Default)]
struct Cookies(HashMap<String, Vec<(String, String)>>);

impl Cookies {
    fn header(&self, url: &Url) -> Option<String> {
        let jar = self.0.get(&host_of(url))?;
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn store(&mut self, url: &Url, headers: &HeaderMap) {
        let jar = self.0.entry(host_of(url)).or_default();
        for value in headers.get_all(SET_COOKIE) {
            let Some((pair, attributes)) = value.to_str().ok().map(|v| v.split_once(';').unwrap_or((v, ""))) else {
                continue;
            };
            let Some((name, val)) = pair.split_once('=') else {
                continue;
            };
            jar.retain(|(k, _)| k != name.trim());
            let expired = val.is_empty() || attributes.to_ascii_lowercase().contains("max-age=0");
            if !expired {
                jar.push((name.trim().to_owned(), val.trim().to_owned()));
            }
        }
    }
}

fn host_of(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The value of the hidden field `name` in a sign-in page.
fn hidden(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

/// Every hidden field of a sign-in page, in order, as a browser posts them
/// (the flow, its CSRF token, and whatever else the page carries, such as the
/// name the password page was shown for).
fn hidden_fields(body: &str) -> Vec<(String, String)> {
    const START: &str = "<input type=\"hidden\" name=\"";
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find(START) {
        rest = &rest[at + START.len()..];
        let Some((name, after)) = rest.split_once("\" value=\"") else {
            break;
        };
        let Some((value, after)) = after.split_once('"') else {
            break;
        };
        fields.push((unescape(name), unescape(value)));
        rest = after;
    }
    fields
}

/// The few entities the pages' escaping writes.
fn unescape(value: &str) -> String {
    value
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `action` of the page's form.
fn action(body: &str) -> Option<String> {
    let start = body.find("<form method=\"post\" action=\"")? + 28;
    let end = body[start..].find('"')? + start;
    Some(body[start..end].replace("&amp;", "&"))
}

/// One full sign-in from a fresh browser; `Ok` once the app's page arrives.
pub async fn sign_in(client: &reqwest::Client, app_url: &str, username: &str, password: &str) -> anyhow::Result<()> {
    let signed_in = sign_in_to(client, app_url, username, password).await?;
    anyhow::ensure!(
        signed_in.page.contains("Signed in."),
        "unexpected page at {}",
        signed_in.url
    );
    Ok(())
}

/// Where a sign-in ended: the app's first page, and the browser's cookies for it.
pub struct SignedIn {
    /// The app's URL the sign-in ended at.
    pub url: Url,
    /// The body of the app's page there.
    pub page: String,
    /// The `Cookie` header the browser sends to the app from now on.
    pub cookie: Option<String>,
}

/// One full sign-in from a fresh browser to `app_url`, whatever the app's page
/// holds: the first successful answer that is not a sign-in page ends it.
pub async fn sign_in_to(
    client: &reqwest::Client,
    app_url: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<SignedIn> {
    let mut cookies = Cookies::default();
    let mut url = Url::parse(app_url)?;
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..MAX_STEPS {
        let mut request = match &form {
            Some(fields) => client.post(url.clone()).form(fields),
            None => client.get(url.clone()),
        };
        if let Some(c) = cookies.header(&url) {
            request = request.header(COOKIE, c);
        }
        let response = request.send().await?;
        cookies.store(&url, response.headers());
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .context("a redirect without Location")?
                .to_owned();
            url = url.join(&location)?;
            form = None;
            continue;
        }
        let body = response.text().await?;
        if !status.is_success() {
            bail!("{status} from {url}");
        }
        if hidden(&body, "flow").is_none() || hidden(&body, "csrf").is_none() {
            // Not a sign-in page: the app itself.
            let cookie = cookies.header(&url);
            return Ok(SignedIn {
                url,
                page: body,
                cookie,
            });
        }
        let mut fields = hidden_fields(&body);
        fields.push(("action".to_owned(), "submit".to_owned()));
        if body.contains("name=\"username\"") {
            fields.push(("username".to_owned(), username.to_owned()));
        } else if body.contains("name=\"password\"") {
            if body.contains("class=\"err\"") {
                bail!("the password was refused at {url}");
            }
            fields.push(("password".to_owned(), password.to_owned()));
        } else {
            bail!("a sign-in page without a username or password field at {url}");
        }
        url = Url::parse(&action(&body).context("a sign-in page without a form")?)?;
        form = Some(fields);
    }
    bail!("no app page after {MAX_STEPS} requests")
}

/// Resident memory of `pid` now and at its peak (VmRSS, VmHWM), MiB.
fn resident_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Every measured process: name, pids.
fn processes(installation: &Installation, directory_marker: Option<&Path>) -> Vec<(String, Vec<u32>)> {
    let mut all: Vec<(String, Vec<u32>)> = installation
        .pids()
        .into_iter()
        .map(|(name, pid)| (name.to_owned(), vec![pid]))
        .collect();
    if let Some(marker) = directory_marker {
        all.push(("directory".into(), processes_under(marker)));
    }
    all.push(("harness (load, backend)".into(), vec![std::process::id()]));
    all
}

fn cpu_now(processes: &[(String, Vec<u32>)]) -> Vec<f64> {
    processes
        .iter()
        .map(|(_, pids)| pids.iter().map(|p| cpu_seconds(*p).unwrap_or(0.0)).sum())
        .collect()
}

/// The page-level measurement: an installation of `postern` (release binary)
/// against the directory, `concurrency` browsers signing in for `seconds`.
pub async fn measure(
    postern: &Path,
    directory: &DirectorySide<'_>,
    directory_marker: Option<&Path>,
    users: &[String],
    password: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<PageRun> {
    let mut installation = Installation::start(postern, directory).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(APP_HOST, installation.addr)
        .timeout(Duration::from_secs(30))
        .build()?;
    let app_url = installation.app_url.clone();
    let ready = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        installation.check_alive()?;
        match sign_in(&client, &app_url, &users[0], password).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() > ready => {
                bail!(
                    "no sign-in went through within {READY_WITHIN:?}: {e} (logs in {})",
                    installation.dir().display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle: Vec<(String, f64)> = installation
        .pids()
        .into_iter()
        .map(|(name, pid)| (name.to_owned(), resident_mib(pid).0))
        .collect();

    let users: Arc<Vec<String>> = Arc::new(users.to_vec());
    let password: Arc<str> = Arc::from(password);
    let op = {
        let (client, app_url) = (client.clone(), app_url.clone());
        move |i: u64| {
            let (client, app_url, users, password) = (client.clone(), app_url.clone(), users.clone(), password.clone());
            async move {
                let user = &users[(i as usize) % users.len()];
                sign_in(&client, &app_url, user, &password).await.is_ok()
            }
        }
    };
    // Warm up (connections, caches, the agent's pool), then measure.
    drive(concurrency, Duration::ZERO, Duration::from_secs(2), op.clone()).await;
    let measured_processes = processes(&installation, directory_marker);
    let before = cpu_now(&measured_processes);
    let measured = drive(concurrency, Duration::ZERO, Duration::from_secs(seconds), op).await;
    let after = cpu_now(&measured_processes);
    installation.check_alive()?;
    let signins = (measured.ops.saturating_sub(measured.errors)).max(1) as f64;
    let cpu_ms = measured_processes
        .iter()
        .zip(before.iter().zip(after.iter()))
        .map(|((name, _), (b, a))| (name.clone(), (a - b) * 1000.0 / signins))
        .collect();
    let memory = installation
        .pids()
        .into_iter()
        .zip(idle)
        .map(|((name, pid), (_, idle))| (name.to_owned(), idle, resident_mib(pid).1))
        .collect();
    Ok(PageRun {
        measured,
        cpu_ms,
        memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_of_the_sign_in_pages() {
        let body = r#"<form method="post" action="http://127.0.0.1:1/t/acme/signin">
<input type="hidden" name="flow" value="F1">
<input type="hidden" name="csrf" value="C2">"#;
        assert_eq!(hidden(body, "flow").as_deref(), Some("F1"));
        assert_eq!(hidden(body, "csrf").as_deref(), Some("C2"));
        assert_eq!(action(body).as_deref(), Some("http://127.0.0.1:1/t/acme/signin"));
        assert_eq!(hidden(body, "code"), None);
        let page = r#"<input type="hidden" name="flow" value="F1">
<input type="hidden" name="csrf" value="C2">
<input type="hidden" name="account" value="o&#39;neil&amp;co@example.com">
<input type="hidden" name="other" value="x">"#;
        let owned = |(k, v): (&str, &str)| (k.to_owned(), v.to_owned());
        assert_eq!(
            hidden_fields(page),
            [
                ("flow", "F1"),
                ("csrf", "C2"),
                ("account", "o'neil&co@example.com"),
                ("other", "x")
            ]
            .map(owned)
        );
    }

    #[test]
    fn cookies_go_to_their_host_and_expire() {
        let mut jar = Cookies::default();
        let app = Url::parse("http://wiki.acme.test:8080/").unwrap();
        let sts = Url::parse("http://127.0.0.1:8080/t/acme/authorize").unwrap();
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, "a=1; Path=/; HttpOnly".parse().unwrap());
        headers.append(SET_COOKIE, "b=2".parse().unwrap());
        jar.store(&app, &headers);
        assert_eq!(jar.header(&app).as_deref(), Some("a=1; b=2"));
        assert_eq!(jar.header(&sts), None);
        let mut gone = HeaderMap::new();
        gone.append(SET_COOKIE, "a=; Max-Age=0".parse().unwrap());
        jar.store(&app, &gone);
        assert_eq!(jar.header(&app).as_deref(), Some("b=2"));
    }
}
