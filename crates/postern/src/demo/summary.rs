//! What the demo tells the person who started it, on standard output (logs go
//! to a file in the state directory): a line per step while it starts, then
//! the URLs, the accounts with their passwords, the administrator's sign-in,
//! and how to stop. Printing never fails the demo: a closed terminal must not
//! stop it.

use std::fmt::Write as _;
use std::io::Write as _;

use super::record::DemoRecord;

/// The line the summary ends with; tests wait for it.
pub(crate) const READY_LINE: &str = "Press Ctrl-C to stop the demo";

/// Prints `text` and a newline to standard output.
pub(crate) fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// A finished step: `  ✓ what`.
pub(crate) fn done(what: &str) {
    say(&format!("  ✓ {what}"));
}

/// Something the user should know (a port taken, a registration made anew).
pub(crate) fn note(what: &str) {
    say(&format!("  ! {what}"));
}

/// Everything the summary shows.
pub(crate) struct Summary<'a> {
    /// What was made, with the passwords.
    pub(crate) record: &'a DemoRecord,
    /// The state directory.
    pub(crate) dir: String,
    /// `https://localhost:PORT`.
    pub(crate) service_url: String,
    /// The pre-authenticated app.
    pub(crate) wiki_url: String,
    /// The passthrough app.
    pub(crate) public_url: String,
    /// The directory the agent checks, in words.
    pub(crate) directory: String,
    /// The self-signed certificate's file.
    pub(crate) certificate: String,
    /// Its SHA-256 fingerprint, as browsers show it.
    pub(crate) fingerprint: String,
    /// The administrator's code now, and for how many seconds more.
    pub(crate) admin_code: (String, i64),
    /// The `otpauth://` URI of the administrator's authenticator.
    pub(crate) otpauth_uri: String,
    /// The log file.
    pub(crate) log: String,
    /// The group that may use the wiki.
    pub(crate) wiki_group: &'a str,
}

impl Summary<'_> {
    /// The whole text.
    pub(crate) fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "\nThe Postern demo is running. Its state is in {}", self.dir);
        let _ = writeln!(
            t,
            "(run the same command again to get the same organisation, users and apps back).\n"
        );
        self.apps(&mut t);
        self.users(&mut t);
        self.admin(&mut t);
        let _ = writeln!(t, "  Around it");
        let _ = writeln!(t, "    service          {}", self.service_url);
        let _ = writeln!(t, "    OpenID Connect   {}/t/{}", self.service_url, self.record.tenant);
        let _ = writeln!(t, "    certificate      {}", self.certificate);
        let _ = writeln!(t, "    SHA-256          {}", self.fingerprint);
        let _ = writeln!(t, "    logs             {}\n", self.log);
        let _ = writeln!(t, "{READY_LINE} (it stops the service, connector, agent and apps).");
        t
    }

    fn apps(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "  Open in Chromium, Chrome or Firefox (*.localhost names lead to this machine; accept the\n  \
             self-signed certificate once per name, comparing its SHA-256 with the one below):"
        );
        let _ = writeln!(t, "    {:<40} pre-authenticated: sign in as a demo user", self.wiki_url);
        let _ = writeln!(t, "    {:<40} passthrough: no sign-in", self.public_url);
        let _ = writeln!(
            t,
            "  Each shows the request headers and the identity it received, /events (server-sent\n  \
             events) and /ws (a WebSocket echo).\n"
        );
    }

    fn users(&self, t: &mut String) {
        let _ = writeln!(t, "  Demo users, checked by the agent against {}:", self.directory);
        for user in &self.record.users {
            let may = if user.groups.iter().any(|g| g == self.wiki_group) {
                "may use the wiki"
            } else {
                "not assigned to the wiki: is refused"
            };
            let _ = writeln!(
                t,
                "    {:<24} password {}   groups {:<20} {may}",
                user.username,
                user.password.expose(),
                user.groups.join(", ")
            );
        }
        t.push('\n');
    }

    fn admin(&self, t: &mut String) {
        let admin = &self.record.admin;
        let (code, left) = &self.admin_code;
        let _ = writeln!(
            t,
            "  Administrator (a cloud account; administrators always use an authenticator):"
        );
        let _ = writeln!(t, "    {:<24} password {}", admin.username, admin.password.expose());
        let _ = writeln!(t, "    TOTP secret              {}", admin.totp_secret.expose());
        let _ = writeln!(t, "    otpauth URI              {}", self.otpauth_uri);
        let _ = writeln!(
            t,
            "    code now                 {code} (for {left} s more; `postern demo --admin-code --dir {}` prints the current one)",
            self.dir
        );
        let _ = writeln!(
            t,
            "    admin console            {}/admin/login?tenant={}",
            self.service_url, self.record.tenant
        );
        let _ = writeln!(
            t,
            "    admin CLI                SSL_CERT_FILE={} postern admin login --server {} --tenant {}\n",
            self.certificate, self.service_url, self.record.tenant
        );
    }
}
