//! The directory back ends against real directories: an OpenLDAP server with the
//! ppolicy overlay and a Samba AD domain controller started by the harness
//! (`postern_directory::testing`), and the local account file.
//!
//! One test binary on purpose (each `tests/*.rs` is a separate, slow link).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use postern_directory::testing::{SAMBA_PASSWORD, SLAPD_PASSWORD, SambaAd, Slapd, TestPki};
use postern_directory::{
    Directory, LdapConfig, LdapDirectory, LocalFileDirectory, LocalFileError, Outcome, PasswordWarning, SecretString,
    hash_password,
};

fn pw(s: &str) -> SecretString {
    SecretString::from(s)
}

fn success(outcome: Outcome) -> postern_directory::AccountInfo {
    match outcome {
        Outcome::Success(info) => info,
        other => panic!("expected success, got {other:?}"),
    }
}

fn unreachable_reason(outcome: Outcome) -> String {
    match outcome {
        Outcome::DirectoryUnreachable(why) => why,
        other => panic!("expected DirectoryUnreachable, got {other:?}"),
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && s.matches('-').count() == 4
}

/// A loopback port nobody listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

mod openldap {
    use super::*;

    /// An OpenLDAP configuration for `url`, plain LDAP allowed.
    fn openldap_at(url: String) -> LdapConfig {
        LdapConfig {
            allow_plaintext: true,
            ..LdapConfig::new(postern_directory::Flavor::OpenLdap, vec![url], "dc=example,dc=com")
        }
    }

    async fn slapd() -> Slapd {
        Slapd::start()
            .await
            .expect("starting slapd (see crates/directory/scripts/install-test-deps.sh)")
    }

    #[tokio::test]
    async fn success_returns_the_account() {
        let started = Instant::now();
        let slapd = slapd().await;
        eprintln!("slapd up in {:?}", started.elapsed());
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        let info = success(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
        assert_eq!(info.upn, "alice");
        assert_eq!(info.display_name, "Alice Liddell");
        assert_eq!(info.mail.as_deref(), Some("alice@example.com"));
        assert_eq!(info.dn.as_deref(), Some("uid=alice,ou=people,dc=example,dc=com"));
        let mut groups = info.groups.clone();
        groups.sort();
        assert_eq!(groups, vec!["admins", "staff"]);
        assert!(is_uuid(&info.stable_id), "{}", info.stable_id);
        assert_eq!(info.password_warning, None);
        // Stable: the same id on the next sign-in; another account has another.
        let again = success(dir.validate("ALICE", &pw(SLAPD_PASSWORD)).await);
        assert_eq!(again.stable_id, info.stable_id);
        let carol = success(dir.validate("carol", &pw(SLAPD_PASSWORD)).await);
        assert_ne!(carol.stable_id, info.stable_id);
        assert!(carol.groups.is_empty());
    }

    /// The sign-in page sends `name@domain`: the default filter finds the
    /// entry by `mail`, or by `uid` from the part before the `@`.
    #[tokio::test]
    async fn the_default_filter_finds_uid_from_a_name_with_a_domain() {
        let slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        let by_uid = success(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
        let by_mail = success(dir.validate("alice@example.com", &pw(SLAPD_PASSWORD)).await);
        let by_local_part = success(dir.validate("alice@corp.example", &pw(SLAPD_PASSWORD)).await);
        assert_eq!(by_mail.stable_id, by_uid.stable_id);
        assert_eq!(by_local_part.stable_id, by_uid.stable_id);
        assert_eq!(
            dir.validate("alice@corp.example", &pw("wrong")).await,
            Outcome::WrongCredentials
        );
        // Escaped like the rest: a wildcard before the `@` matches no one.
        assert_eq!(
            dir.validate("*@corp.example", &pw(SLAPD_PASSWORD)).await,
            Outcome::WrongCredentials
        );
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user() {
        let slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        assert_eq!(dir.validate("bob", &pw("wrong")).await, Outcome::WrongCredentials);
        assert_eq!(
            dir.validate("nobody", &pw(SLAPD_PASSWORD)).await,
            Outcome::WrongCredentials
        );
    }

    #[tokio::test]
    async fn password_policy_outcomes() {
        let slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        assert_eq!(
            dir.validate("expired", &pw(SLAPD_PASSWORD)).await,
            Outcome::PasswordExpired
        );
        assert_eq!(
            dir.validate("reset", &pw(SLAPD_PASSWORD)).await,
            Outcome::MustChangePassword
        );
        let grace = success(dir.validate("grace", &pw(SLAPD_PASSWORD)).await);
        assert!(
            matches!(grace.password_warning, Some(PasswordWarning::GraceLoginsRemaining(n)) if n < 3),
            "{grace:?}"
        );
        let warned = success(dir.validate("warned", &pw(SLAPD_PASSWORD)).await);
        assert!(
            matches!(warned.password_warning, Some(PasswordWarning::ExpiresIn(d)) if d > Duration::from_secs(86_400)),
            "{warned:?}"
        );
        // A wrong password for an expired account says nothing about the account.
        assert_eq!(dir.validate("expired", &pw("wrong")).await, Outcome::WrongCredentials);
    }

    #[tokio::test]
    async fn three_bad_passwords_lock_the_account() {
        let slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        for _ in 0..3 {
            assert_eq!(dir.validate("lockme", &pw("wrong")).await, Outcome::WrongCredentials);
        }
        assert_eq!(
            dir.validate("lockme", &pw(SLAPD_PASSWORD)).await,
            Outcome::AccountLocked
        );
        // Others are not affected.
        success(dir.validate("bob", &pw(SLAPD_PASSWORD)).await);
    }

    /// The unit tests of the ppolicy decoder use these bytes; here slapd sends them.
    #[tokio::test]
    async fn ppolicy_response_bytes_are_what_the_decoder_expects() {
        let slapd = slapd().await;
        let value = |uid: &'static str| {
            let url = slapd.url();
            async move {
                let (conn, mut ldap) = ldap3::LdapConnAsync::new(&url).await.unwrap();
                tokio::spawn(async move { conn.drive().await });
                let control = ldap3::controls::RawControl {
                    ctype: "1.3.6.1.4.1.42.2.27.8.5.1".into(),
                    crit: false,
                    val: None,
                };
                let dn = format!("uid={uid},ou=people,dc=example,dc=com");
                let result = ldap
                    .with_controls(control)
                    .simple_bind(&dn, SLAPD_PASSWORD)
                    .await
                    .unwrap();
                let value = result.ctrls.iter().find_map(|c| c.1.val.clone());
                (result.rc, value)
            }
        };
        assert_eq!(value("expired").await, (49, Some(vec![0x30, 0x03, 0x81, 0x01, 0x00])));
        assert_eq!(value("reset").await, (0, Some(vec![0x30, 0x03, 0x81, 0x01, 0x02])));
    }

    #[tokio::test]
    async fn ldaps_and_starttls_with_the_ca() {
        let slapd = slapd().await;
        for config in [slapd.ldaps_config(), slapd.starttls_config()] {
            let dir = LdapDirectory::new(&config).unwrap();
            let info = success(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
            assert_eq!(info.mail.as_deref(), Some("alice@example.com"));
            assert_eq!(dir.validate("alice", &pw("wrong")).await, Outcome::WrongCredentials);
        }
    }

    #[tokio::test]
    async fn tls_with_the_wrong_ca_is_unreachable_not_a_wrong_password() {
        let slapd = slapd().await;
        let other = tempfile::tempdir().unwrap();
        let wrong_ca = TestPki::unrelated_ca(&other.path().join("other-ca.pem")).unwrap();
        for config in [slapd.ldaps_config(), slapd.starttls_config()] {
            let config = LdapConfig {
                ca_file: Some(wrong_ca.clone()),
                ..config
            };
            let dir = LdapDirectory::new(&config).unwrap();
            let started = Instant::now();
            let why = unreachable_reason(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
            assert!(started.elapsed() < Duration::from_secs(2));
            assert!(why.contains("TLS") || why.contains("certificate"), "{why}");
        }
        // No CA configured: the system roots do not know the test CA either.
        let config = LdapConfig {
            ca_file: None,
            ..slapd.ldaps_config()
        };
        let dir = LdapDirectory::new(&config).unwrap();
        unreachable_reason(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
    }

    /// Without escaping, each of these would match exactly alice and sign in with her
    /// password under another name.
    #[tokio::test]
    async fn filter_injection_is_wrong_credentials() {
        let slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        for username in [
            "*",
            "ali*",
            "*)(uid=*",
            "alice)(|(uid=*",
            "alice)(uid=alice",
            "al\\2aice",
            "a*e",
        ] {
            assert_eq!(
                dir.validate(username, &pw(SLAPD_PASSWORD)).await,
                Outcome::WrongCredentials,
                "{username:?}"
            );
        }
        success(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
    }

    #[tokio::test]
    async fn unusable_passwords_are_refused_before_any_network_call() {
        // Nothing listens here: an attempt to connect would be DirectoryUnreachable.
        let config = openldap_at(format!("ldap://127.0.0.1:{}", dead_port()));
        let dir = LdapDirectory::new(&config).unwrap();
        let long = "x".repeat(257);
        for password in ["", "a\0b", long.as_str()] {
            assert_eq!(dir.validate("alice", &pw(password)).await, Outcome::WrongCredentials);
        }
        assert_eq!(dir.validate("", &pw("something")).await, Outcome::WrongCredentials);
        assert_eq!(dir.pool_stats().peak_open, 0);
        // And the same with a live server.
        let slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        assert_eq!(dir.validate("alice", &pw("")).await, Outcome::WrongCredentials);
        assert_eq!(dir.pool_stats().peak_open, 0);
    }

    #[tokio::test]
    async fn directory_down_is_unreachable_within_a_second() {
        let config = openldap_at(format!("ldap://127.0.0.1:{}", dead_port()));
        let dir = LdapDirectory::new(&config).unwrap();
        let started = Instant::now();
        let why = unreachable_reason(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(why.contains("connection refused"), "{why}");
    }

    /// A server that accepts connections and never answers: the operation deadline
    /// (plain) or the connect deadline (TLS handshake) ends the wait.
    #[tokio::test]
    async fn a_silent_server_is_unreachable_by_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        for (url, starttls) in [
            (format!("ldap://127.0.0.1:{port}"), false),
            (format!("ldaps://127.0.0.1:{port}"), false),
            (format!("ldap://127.0.0.1:{port}"), true),
        ] {
            let config = LdapConfig {
                starttls,
                connect_timeout_ms: Some(400),
                operation_timeout_ms: Some(400),
                ..openldap_at(url.clone())
            };
            let dir = LdapDirectory::new(&config).unwrap();
            let started = Instant::now();
            let why = unreachable_reason(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
            let took = started.elapsed();
            assert!(took < Duration::from_millis(1500), "{url} took {took:?}: {why}");
        }
        accepted.abort();
    }

    #[tokio::test]
    async fn survives_a_directory_restart_and_reports_it_down() {
        let mut slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        success(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
        assert_eq!(dir.pool_stats().idle, 1);

        slapd.stop();
        let started = Instant::now();
        unreachable_reason(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
        assert!(started.elapsed() < Duration::from_secs(1));

        slapd.restart().await.unwrap();
        // The pooled connection died with the old server; a fresh one is opened.
        success(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
        assert!(dir.pool_stats().open <= 1);
    }

    #[tokio::test]
    async fn user_bind_connections_are_reused_without_carrying_identity() {
        let slapd = slapd().await;
        let dir = LdapDirectory::new(&slapd.config()).unwrap();
        let accepted_before = slapd.connections_accepted().await.unwrap();
        // Alternate users and outcomes on the same bind connection: each bind's
        // answer is its own, whatever the connection was bound as before.
        // (bob and dave take turns with the wrong password: three in a row would
        // lock an account under the test ppolicy.)
        for round in 0..4 {
            success(dir.validate("alice", &pw(SLAPD_PASSWORD)).await);
            let wrong = ["bob", "dave"][round % 2];
            assert_eq!(dir.validate(wrong, &pw("wrong")).await, Outcome::WrongCredentials);
            let carol = success(dir.validate("carol", &pw(SLAPD_PASSWORD)).await);
            assert_eq!(carol.upn.split('@').next(), Some("carol"), "{carol:?}");
            assert_eq!(dir.validate("alice", &pw("")).await, Outcome::WrongCredentials);
        }
        // One search connection and one bind connection (and the counter's own
        // connection), not one per sign-in.
        let accepted = slapd.connections_accepted().await.unwrap() - accepted_before;
        assert!(accepted <= 3, "{accepted} connections accepted for 16 sign-ins");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_search_pool_stays_bounded_under_load() {
        let slapd = slapd().await;
        let config = LdapConfig {
            pool_size: Some(2),
            max_concurrent_binds: Some(4),
            ..slapd.config()
        };
        let dir = std::sync::Arc::new(LdapDirectory::new(&config).unwrap());
        let users = ["alice", "bob", "carol", "dave"];

        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            let slapd = &slapd;
            let mut peak = 0;
            async move {
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(n) = slapd.connections().await {
                        peak = peak.max(n);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await; // sampling interval
                }
                peak
            }
        };
        let load = async {
            let started = Instant::now();
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    let dir = dir.clone();
                    tokio::spawn(async move { dir.validate(users[i % users.len()], &pw(SLAPD_PASSWORD)).await })
                })
                .collect();
            for task in tasks {
                success(task.await.unwrap());
            }
            let took = started.elapsed();
            sampling.store(false, std::sync::atomic::Ordering::Relaxed);
            took
        };
        let (took, server_peak) = tokio::join!(load, sampler);
        let stats = dir.pool_stats();
        eprintln!("100 concurrent sign-ins in {took:?}; pool {stats:?}; slapd saw at most {server_peak} connections");
        assert!(stats.peak_open <= 2, "{stats:?}");
        assert!(stats.open <= 2, "{stats:?}");
        // 2 search connections + 4 user binds; closing ones may linger a moment.
        assert!(server_peak <= 2 + 4 + 2, "slapd saw {server_peak} connections");
    }

    /// Sign-ins per second through the whole back end (search + fresh-connection bind),
    /// next to raw binds on one connection; printed for the benchmarks, loosely checked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throughput() {
        let slapd = slapd().await;
        let config = LdapConfig {
            pool_size: Some(4),
            ..slapd.config()
        };
        let dir = std::sync::Arc::new(LdapDirectory::new(&config).unwrap());
        let count = 2_000;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..16 {
            let dir = dir.clone();
            tasks.spawn(async move {
                for _ in 0..count / 16 {
                    let user = ["alice", "bob", "carol", "dave"][worker % 4];
                    success(dir.validate(user, &pw(SLAPD_PASSWORD)).await);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let rate = f64::from(count) / started.elapsed().as_secs_f64();

        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.unwrap();
        tokio::spawn(async move { conn.drive().await });
        let binds = 2_000;
        let started = Instant::now();
        for _ in 0..binds {
            let r = ldap
                .simple_bind("uid=bob,ou=people,dc=example,dc=com", SLAPD_PASSWORD)
                .await
                .unwrap();
            assert_eq!(r.rc, 0);
        }
        let raw = f64::from(binds) / started.elapsed().as_secs_f64();
        eprintln!(
            "OpenLDAP: {rate:.0} sign-ins/s through LdapDirectory (16 concurrent); {raw:.0} raw binds/s on one connection"
        );
        assert!(rate > 50.0, "{rate:.0} sign-ins/s");
    }
}

mod active_directory {
    use super::*;

    async fn samba() -> SambaAd {
        let started = Instant::now();
        let samba = SambaAd::start()
            .await
            .expect("starting Samba AD (see crates/directory/scripts/install-test-deps.sh)");
        eprintln!("Samba AD ready in {:?}", started.elapsed());
        samba
    }

    #[tokio::test]
    async fn success_in_every_username_form() {
        let samba = samba().await;
        let dir = LdapDirectory::new(&samba.config()).unwrap();
        let mut ids = Vec::new();
        for username in [
            "alice",
            "alice@EXAMPLE.TEST",
            "alice@example.test",
            "EXAMPLE\\alice",
            "example\\ALICE",
        ] {
            let info = success(dir.validate(username, &pw(SAMBA_PASSWORD)).await);
            assert_eq!(info.upn, "alice@example.test", "{username}");
            assert_eq!(info.display_name, "Alice Liddell");
            assert_eq!(info.mail.as_deref(), Some("alice@example.test"));
            assert_eq!(info.dn.as_deref(), Some("CN=Alice Liddell,CN=Users,DC=example,DC=test"));
            assert_eq!(info.groups, vec!["Staff"]);
            assert!(is_uuid(&info.stable_id), "{}", info.stable_id);
            ids.push(info.stable_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one account, one stable id");
        // Another NetBIOS domain is not this directory.
        assert_eq!(
            dir.validate("OTHER\\alice", &pw(SAMBA_PASSWORD)).await,
            Outcome::WrongCredentials
        );
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user() {
        let samba = samba().await;
        let dir = LdapDirectory::new(&samba.config()).unwrap();
        assert_eq!(dir.validate("wendy", &pw("wrong")).await, Outcome::WrongCredentials);
        // The right password afterwards resets wendy's bad-password count.
        success(dir.validate("wendy", &pw(SAMBA_PASSWORD)).await);
        assert_eq!(
            dir.validate("nobody", &pw(SAMBA_PASSWORD)).await,
            Outcome::WrongCredentials
        );
        assert_eq!(
            dir.validate("nobody@example.test", &pw(SAMBA_PASSWORD)).await,
            Outcome::WrongCredentials
        );
    }

    #[tokio::test]
    async fn account_states_map_to_outcomes() {
        let samba = samba().await;
        let dir = LdapDirectory::new(&samba.config()).unwrap();
        for (user, outcome) in [
            ("disabled", Outcome::AccountDisabled),
            ("acctexpired", Outcome::AccountExpired),
            ("mustchange", Outcome::MustChangePassword),
            ("pwdexpired", Outcome::PasswordExpired),
        ] {
            assert_eq!(dir.validate(user, &pw(SAMBA_PASSWORD)).await, outcome, "{user}");
        }
    }

    #[tokio::test]
    async fn three_bad_passwords_lock_the_account() {
        let samba = samba().await;
        let dir = LdapDirectory::new(&samba.config()).unwrap();
        // On an instance reused from an earlier run lockme is already locked, and AD
        // then answers 775 whatever the password.
        for _ in 0..3 {
            let outcome = dir.validate("lockme", &pw("wrong")).await;
            assert!(
                matches!(outcome, Outcome::WrongCredentials | Outcome::AccountLocked),
                "{outcome:?}"
            );
        }
        assert_eq!(
            dir.validate("lockme", &pw(SAMBA_PASSWORD)).await,
            Outcome::AccountLocked
        );
    }

    /// Windows AD takes a simple bind with an empty password as an anonymous *success*
    /// (RFC 4513 "unauthenticated bind"); the agent must refuse it itself. (Samba 4.17
    /// answers 49; the raw result is printed.)
    #[tokio::test]
    async fn empty_password_is_refused_by_the_agent() {
        let samba = samba().await;
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&samba.ldap_url()).await.unwrap();
        tokio::spawn(async move { conn.drive().await });
        let raw = ldap
            .simple_bind("CN=Alice Liddell,CN=Users,DC=example,DC=test", "")
            .await
            .unwrap();
        eprintln!("raw empty-password bind to Samba AD: rc {}", raw.rc);

        let dir = LdapDirectory::new(&samba.config()).unwrap();
        assert_eq!(dir.validate("alice", &pw("")).await, Outcome::WrongCredentials);
        assert_eq!(dir.pool_stats().peak_open, 0, "no connection was opened");
    }

    #[tokio::test]
    async fn ldaps_with_the_domain_controllers_ca() {
        let samba = samba().await;
        let dir = LdapDirectory::new(&samba.ldaps_config()).unwrap();
        let info = success(dir.validate("EXAMPLE\\alice", &pw(SAMBA_PASSWORD)).await);
        assert_eq!(info.upn, "alice@example.test");
        assert_eq!(
            dir.validate("disabled", &pw(SAMBA_PASSWORD)).await,
            Outcome::AccountDisabled
        );

        let other = tempfile::tempdir().unwrap();
        let config = LdapConfig {
            ca_file: Some(TestPki::unrelated_ca(&other.path().join("other.pem")).unwrap()),
            ..samba.ldaps_config()
        };
        let dir = LdapDirectory::new(&config).unwrap();
        unreachable_reason(dir.validate("alice", &pw(SAMBA_PASSWORD)).await);
    }

    /// Sign-ins per second through the back end against Samba, beside raw binds on one
    /// connection; printed for the benchmarks, loosely checked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throughput() {
        let samba = samba().await;
        let dir = std::sync::Arc::new(LdapDirectory::new(&samba.config()).unwrap());
        let count = 400;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let dir = dir.clone();
            tasks.spawn(async move {
                for _ in 0..count / 8 {
                    success(dir.validate("alice", &pw(SAMBA_PASSWORD)).await);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let rate = f64::from(count) / started.elapsed().as_secs_f64();

        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&samba.ldap_url()).await.unwrap();
        tokio::spawn(async move { conn.drive().await });
        let binds = 400;
        let started = Instant::now();
        for _ in 0..binds {
            let r = ldap.simple_bind("alice@example.test", SAMBA_PASSWORD).await.unwrap();
            assert_eq!(r.rc, 0);
        }
        let raw = f64::from(binds) / started.elapsed().as_secs_f64();
        eprintln!(
            "Samba AD: {rate:.0} sign-ins/s through LdapDirectory (8 concurrent); {raw:.0} raw binds/s on one connection"
        );
        assert!(rate > 10.0, "{rate:.0} sign-ins/s");
    }

    #[tokio::test]
    async fn a_wrong_service_password_is_unreachable_not_wrong_credentials() {
        let samba = samba().await;
        let config = LdapConfig {
            bind_password: Some(pw("not the service password")),
            ..samba.config()
        };
        let dir = LdapDirectory::new(&config).unwrap();
        let why = unreachable_reason(dir.validate("alice", &pw(SAMBA_PASSWORD)).await);
        assert!(why.contains("service account"), "{why}");
        assert!(!why.contains("not the service password"), "{why}");
    }
}

mod local_file {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_file(dir: &std::path::Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("accounts");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[tokio::test]
    async fn sign_ins() {
        let tmp = tempfile::tempdir().unwrap();
        let alice = hash_password(&pw("alice-Pass-1")).unwrap();
        let bob = hash_password(&pw("bob-Pass-1")).unwrap();
        let path = write_file(
            tmp.path(),
            &format!("# demo accounts\nalice:{alice}:Alice Liddell:staff,admins\nbob:{bob}\n"),
            0o600,
        );
        let dir = LocalFileDirectory::load(&path).unwrap();
        assert_eq!(dir.len(), 2);

        let info = success(dir.validate("Alice", &pw("alice-Pass-1")).await);
        assert_eq!(info.upn, "alice");
        assert_eq!(info.display_name, "Alice Liddell");
        assert_eq!(info.groups, vec!["staff", "admins"]);
        assert!(is_uuid(&info.stable_id));
        assert_eq!(
            success(dir.validate("alice", &pw("alice-Pass-1")).await).stable_id,
            info.stable_id
        );
        assert_eq!(
            success(dir.validate("bob", &pw("bob-Pass-1")).await).display_name,
            "bob"
        );

        let started = Instant::now();
        assert_eq!(dir.validate("alice", &pw("wrong")).await, Outcome::WrongCredentials);
        let known = started.elapsed();
        let started = Instant::now();
        assert_eq!(dir.validate("nobody", &pw("wrong")).await, Outcome::WrongCredentials);
        let unknown = started.elapsed();
        // Unknown users are checked against a dummy hash: the same order of time.
        assert!(
            unknown * 3 > known && known * 3 > unknown,
            "known {known:?}, unknown {unknown:?}"
        );
        assert_eq!(dir.validate("alice", &pw("")).await, Outcome::WrongCredentials);

        // Reload picks up a new account.
        let carol = hash_password(&pw("carol-Pass-1")).unwrap();
        write_file(tmp.path(), &format!("alice:{alice}\ncarol:{carol}\n"), 0o600);
        assert_eq!(dir.reload().unwrap(), 2);
        success(dir.validate("carol", &pw("carol-Pass-1")).await);
        assert_eq!(dir.validate("bob", &pw("bob-Pass-1")).await, Outcome::WrongCredentials);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let hash = hash_password(&pw("alice-Pass-1")).unwrap();
        for mode in [0o644, 0o604, 0o660, 0o666] {
            let path = write_file(tmp.path(), &format!("alice:{hash}\n"), mode);
            let err = LocalFileDirectory::load(&path).unwrap_err();
            assert!(matches!(err, LocalFileError::Permissions { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        // Readable by the agent's group is fine (SEC-11: root-owned, group postern).
        let path = write_file(tmp.path(), &format!("alice:{hash}\n"), 0o640);
        assert!(LocalFileDirectory::load(&path).is_ok());
    }

    #[test]
    fn malformed_lines_are_reported_with_line_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let hash = hash_password(&pw("alice-Pass-1")).unwrap();
        let path = write_file(
            tmp.path(),
            &format!("alice:{hash}\n\n# comment\nbob\ncarol:not-a-hash\nalice:{hash}\n"),
            0o600,
        );
        let err = LocalFileDirectory::load(&path).unwrap_err();
        let LocalFileError::Malformed { problems, .. } = &err else {
            panic!("{err}")
        };
        let lines: Vec<usize> = problems.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![4, 5, 6], "{err}");
        let text = err.to_string();
        assert!(
            text.contains("line 4") && text.contains("line 5") && text.contains("line 6"),
            "{text}"
        );
        assert!(!text.contains(&hash), "{text}");
    }
}
