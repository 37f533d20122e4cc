//! A browser stand-in: a real HTTP client with a cookie jar that does not follow
//! redirects by itself, plus just enough HTML reading to fill in the service's
//! forms (which are simple by design: no JavaScript).

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::cookie::Jar;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use reqwest::{Client, StatusCode};
use url::Url;

use crate::totp_code;

/// A fetched page or redirect.
#[derive(Debug, Clone)]
pub struct Page {
    /// The URL fetched.
    pub url: String,
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

/// A form on a page.
#[derive(Debug, Clone)]
pub struct Form {
    /// Absolute URL it posts to.
    pub action: String,
    /// Hidden fields.
    pub hidden: Vec<(String, String)>,
    /// Names of the visible fields.
    pub fields: Vec<String>,
    /// Pre-filled values of the visible fields (name, value).
    pub values: Vec<(String, String)>,
}

fn unescape(s: &str) -> String {
    s.replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

fn capture_all(re: &str, text: &str) -> Vec<Vec<String>> {
    let Ok(re) = regex_lite::Regex::new(re) else {
        return Vec::new();
    };
    re.captures_iter(text)
        .map(|c| {
            c.iter()
                .skip(1)
                .map(|m| m.map(|m| unescape(m.as_str())).unwrap_or_default())
                .collect()
        })
        .collect()
}

impl Page {
    /// The `Location` header of a redirect.
    pub fn location(&self) -> Option<String> {
        let loc = self.headers.get(LOCATION)?.to_str().ok()?;
        Url::parse(&self.url).ok()?.join(loc).ok().map(String::from)
    }

    /// The page's `<h1>`.
    pub fn title(&self) -> String {
        capture_all(r"<h1>(.*?)</h1>", &self.body)
            .first()
            .and_then(|c| c.first().cloned())
            .unwrap_or_default()
    }

    /// The error shown on the page, if any.
    pub fn error(&self) -> Option<String> {
        capture_all(r#"<p class="err" role="alert">(.*?)</p>"#, &self.body)
            .first()
            .and_then(|c| c.first().cloned())
    }

    /// The monospaced codes shown (recovery codes, TOTP secret).
    pub fn codes(&self) -> Vec<String> {
        capture_all(r"<li>([^<]*)</li>", &self.body)
            .into_iter()
            .filter_map(|c| c.into_iter().next())
            .collect()
    }

    /// The page's form.
    pub fn form(&self) -> Result<Form> {
        let action = capture_all(r#"<form method="post" action="([^"]*)">"#, &self.body)
            .first()
            .and_then(|c| c.first().cloned())
            .ok_or_else(|| anyhow!("no form on {} ({}):\n{}", self.url, self.status, self.body))?;
        let action = Url::parse(&self.url)?.join(&action)?.to_string();
        let hidden = capture_all(r#"<input type="hidden" name="([^"]*)" value="([^"]*)">"#, &self.body)
            .into_iter()
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        let visible = capture_all(
            r#"<input id="f-[^"]*" name="([^"]*)" type="[^"]*" value="([^"]*)""#,
            &self.body,
        );
        let fields = visible.iter().map(|c| c[0].clone()).collect();
        let values = visible
            .into_iter()
            .filter(|c| !c[1].is_empty())
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        Ok(Form {
            action,
            hidden,
            fields,
            values,
        })
    }
}

/// Credentials for [`Browser::sign_in`].
#[derive(Debug, Clone)]
pub struct Login {
    /// Sign-in name.
    pub username: String,
    /// Password.
    pub password: String,
    /// TOTP secret (base32) if the account has one; filled in when the service
    /// asks for enrolment.
    pub totp_secret: Option<String>,
    /// The time to compute TOTP codes at (the service clock).
    pub now: postern_time::UnixTime,
    /// A recovery code to answer the second step with instead of TOTP (no need
    /// to wait for a fresh time step).
    pub recovery_code: Option<String>,
}

/// What a browser sends when it navigates: it asks for HTML (the sign-in
/// pages answer scripts, which do not, with JSON).
fn navigation_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    );
    headers
}

/// A cookie-keeping HTTP client that does not follow redirects.
#[derive(Clone)]
pub struct Browser {
    client: Client,
    jar: Arc<Jar>,
    forwarded_for: Option<String>,
    resolved: Vec<(String, std::net::SocketAddr)>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A fresh browser with an empty cookie jar.
    pub fn new() -> Self {
        let jar = Arc::new(Jar::default());
        let client = Client::builder()
            .default_headers(navigation_headers())
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client builds");
        Self {
            client,
            jar,
            forwarded_for: None,
            resolved: Vec::new(),
        }
    }

    /// Resolves `host` to `addr` (published apps live at their own host names,
    /// all served by the service on loopback). Keeps the cookie jar.
    pub fn resolving(mut self, host: &str, addr: std::net::SocketAddr) -> Self {
        self.resolved.push((host.to_owned(), addr));
        let mut builder = Client::builder()
            .default_headers(navigation_headers())
            .cookie_provider(self.jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30));
        for (h, a) in &self.resolved {
            builder = builder.resolve(h, *a);
        }
        self.client = builder.build().expect("client builds");
        self
    }

    /// Makes every request claim to come from `ip` (through a trusted proxy).
    pub fn from_ip(mut self, ip: &str) -> Self {
        self.forwarded_for = Some(ip.to_owned());
        self
    }

    /// The cookie jar.
    pub fn jar(&self) -> &Arc<Jar> {
        &self.jar
    }

    /// The underlying HTTP client (shares the cookie jar).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ip) = &self.forwarded_for
            && let Ok(v) = HeaderValue::from_str(ip)
        {
            h.insert("x-forwarded-for", v);
        }
        h
    }

    async fn page(url: &str, response: reqwest::Response) -> Result<Page> {
        Ok(Page {
            url: url.to_owned(),
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await?,
        })
    }

    /// GET without following redirects.
    pub async fn get(&self, url: &str) -> Result<Page> {
        let r = self.client.get(url).headers(self.headers()).send().await?;
        Self::page(url, r).await
    }

    /// POST a form body without following redirects.
    pub async fn post(&self, url: &str, fields: &[(String, String)]) -> Result<Page> {
        let r = self
            .client
            .post(url)
            .headers(self.headers())
            .form(fields)
            .send()
            .await?;
        Self::page(url, r).await
    }

    /// Submits `form` with its hidden and pre-filled visible fields unless
    /// `fields` gives them (a field is sent once, as a browser sends it),
    /// `fields`, and `action=submit` unless given.
    pub async fn submit(&self, form: &Form, fields: &[(&str, &str)]) -> Result<Page> {
        let given = |k: &String| fields.iter().any(|(name, _)| name == k);
        let mut all: Vec<(String, String)> = form.hidden.iter().filter(|(k, _)| !given(k)).cloned().collect();
        for (k, v) in &form.values {
            if !fields.iter().any(|(name, _)| name == k) {
                all.push((k.clone(), v.clone()));
            }
        }
        for (k, v) in fields {
            all.push(((*k).to_owned(), (*v).to_owned()));
        }
        if !fields.iter().any(|(k, _)| *k == "action") {
            all.push(("action".into(), "submit".into()));
        }
        self.post(&form.action, &all).await
    }

    /// Where a response leads: the page itself, or, for a redirect within
    /// `origin`, the page the redirects end at (see [`Browser::follow`]). Steps
    /// that answer with their next page at once and steps that redirect to it
    /// read the same.
    pub async fn arrive(&self, page: Page, origin: &str) -> Result<Page> {
        match page.location() {
            Some(next) if page.status.is_redirection() && next.starts_with(origin) => self.follow(&next, origin).await,
            _ => Ok(page),
        }
    }

    /// Follows redirects from `url` while they stay on `origin`; returns the first
    /// page that is not a redirect, or the first redirect leaving `origin`.
    pub async fn follow(&self, url: &str, origin: &str) -> Result<Page> {
        let mut page = self.get(url).await?;
        for _ in 0..10 {
            match page.location() {
                Some(next) if page.status.is_redirection() && next.starts_with(origin) => {
                    page = self.get(&next).await?;
                }
                _ => return Ok(page),
            }
        }
        bail!("too many redirects")
    }

    /// Drives the sign-in pages from `start` (an authorize or device URL) with
    /// `login`, answering whatever the service asks (username, password, TOTP,
    /// enrolment, recovery codes) until it redirects away from the service or
    /// shows a page without a form. Returns that final page (or redirect).
    pub async fn sign_in(&self, start: &str, login: &Login) -> Result<Page> {
        let origin = {
            let u = Url::parse(start)?;
            format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default())
                + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
        };
        let mut page = self.follow(start, &origin).await?;
        let mut secret = login.totp_secret.clone();
        for _ in 0..12 {
            if page.status.is_redirection() {
                return Ok(page);
            }
            let Ok(form) = page.form() else {
                return Ok(page);
            };
            if let Some(e) = page.error() {
                // Errors are returned to the caller to assert on.
                return Err(anyhow!("sign-in page error on {:?}: {e}", page.title()));
            }
            let title = page.title();
            let next = if form.fields.contains(&"username".to_owned()) {
                self.submit(&form, &[("username", &login.username)]).await?
            } else if form.fields.contains(&"password".to_owned()) {
                self.submit(&form, &[("password", &login.password)]).await?
            } else if title == "Set up your authenticator" {
                let shown = page.codes().first().cloned().context("no secret shown")?;
                secret = Some(shown.clone());
                let code = totp_code(&shown, login.now)?;
                self.submit(&form, &[("code", &code)]).await?
            } else if title == "Verify your identity" && login.recovery_code.is_some() {
                self.submit(&form, &[("action", "recovery")]).await?
            } else if title == "Use a recovery code" {
                let code = login.recovery_code.clone().context("no recovery code")?;
                self.submit(&form, &[("code", &code)]).await?
            } else if form.fields.contains(&"code".to_owned()) {
                let s = secret
                    .clone()
                    .context("the service asks for a TOTP code but the login has no secret")?;
                let code = totp_code(&s, login.now)?;
                self.submit(&form, &[("code", &code)]).await?
            } else {
                // Recovery codes shown, or a device to approve: continue.
                self.submit(&form, &[]).await?
            };
            page = match next.location() {
                Some(loc) if next.status.is_redirection() && loc.starts_with(&origin) => {
                    self.follow(&loc, &origin).await?
                }
                _ => next,
            };
        }
        bail!("sign-in did not finish")
    }
}
