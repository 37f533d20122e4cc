//! Issue 3: PKI, enrolment and the control plane, with real TLS on loopback. The
//! components are the real `postern-uplink` client; time is the service's manual
//! clock, shared with the components, so 180-day and 30-day rules run at once.

use std::time::Duration;

use postern_keyring::SecretString;
use postern_pki::{CaKind, KeyAlg};
use postern_proto::ComponentKind;
use postern_store::{NewUser, Role, SerialStatus};
use postern_testkit::{TenantFixture, TestService};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, UplinkError, register};

struct Fixture {
    svc: TestService,
    t: TenantFixture,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    Fixture {
        svc,
        t,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Fixture {
    fn options(&self, kind: ComponentKind, token: &str) -> RegisterOptions {
        RegisterOptions {
            server_url: self.svc.url(),
            kind,
            credential: Credential::AccessToken(SecretString::from(token)),
            name: format!("{kind}-host"),
            version: "0.1.0".into(),
            group: None,
            tenant: None,
            key_alg: KeyAlg::recommended(kind),
            server_ca_pem: None,
        }
    }

    /// `user`'s approval of registering a `kind` named as [`Fixture::options`] names it.
    async fn approval(&self, user: &postern_store::User, kind: ComponentKind) -> String {
        self.svc
            .registration_token(&self.t.tenant, user, kind, &format!("{kind}-host"))
            .await
            .unwrap()
    }

    fn state(&self, name: &str) -> StateDir {
        StateDir::new(self.dir.path().join(name))
    }

    async fn register(&self, kind: ComponentKind, name: &str) -> ControlClient {
        let state = self.state(name);
        let token = self.approval(&self.t.admin, kind).await;
        register(&self.options(kind, &token), &state)
            .await
            .expect("registration");
        ControlClient::load(state, self.svc.shared_clock()).unwrap()
    }

    async fn user_with_role(&self, name: &str, role: Option<Role>) -> postern_store::User {
        let user = self
            .svc
            .store()
            .create_user(
                &self.t.tenant.id,
                NewUser::cloud(&format!("{name}@acme.test"), name, None),
                self.svc.now(),
            )
            .await
            .unwrap();
        if let Some(r) = role {
            self.svc.store().assign_role(&user.id, r, self.svc.now()).await.unwrap();
        }
        user
    }
}

fn read_cert(dir: &StateDir) -> postern_pki::CertInfo {
    let cert = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
    postern_pki::cert_info(cert.as_bytes()).unwrap()
}

#[tokio::test]
async fn connector_registers_and_calls_over_mtls() {
    let f = fixture().await;
    let mut client = f.register(ComponentKind::Connector, "c1").await;
    let info = read_cert(&f.state("c1"));
    // The service chose the subject (the tenant ID) and bound the component in.
    assert_eq!(info.subject_cn.as_deref(), Some(f.t.tenant.id.as_str()));
    let binding = info.component.clone().unwrap();
    assert_eq!(
        (binding.kind, binding.tenant_id.as_str()),
        (ComponentKind::Connector, f.t.tenant.id.as_str())
    );
    assert_eq!(
        info.issuer_cn.as_deref(),
        Some(CaKind::Connectors.common_name().as_str())
    );
    assert_eq!(info.not_after.secs() - f.svc.now().secs(), 365 * 86_400);

    let me = client.whoami().await.unwrap();
    assert_eq!(
        (me.component_id.as_str(), me.kind),
        (binding.component_id.as_str(), ComponentKind::Connector)
    );
    let config = client.connector_config("0.1.0").await.unwrap();
    assert_eq!(config.group.name, "Default");
    assert!(!config.renew_requested);
    let stored = f.svc.store().component(&f.t.tenant.id, &me.component_id).await.unwrap();
    assert_eq!(stored.serial, info.serial);
    assert!(stored.last_seen_at.is_some(), "calls update last-seen");
    let audit = f.svc.store().audit_entries(&f.t.tenant.id, 0, 100).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "connector.register"));

    // Config refresh: a change wakes the watch at once.
    let mut watcher = tokio::spawn({
        let client = ControlClient::load(f.state("c1"), f.svc.shared_clock()).unwrap();
        let v = config.config_version;
        async move { client.watch_config(v).await }
    });
    // Without a change the watch holds (an absence, so a window).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut watcher)
            .await
            .is_err(),
        "the watch answered without a change"
    );
    let new_version = f
        .svc
        .store()
        .bump_group_config(&f.t.tenant.id, &config.group.id)
        .await
        .unwrap();
    // Sooner than the watch's own re-read of the store (every 5 s): woken.
    let seen = tokio::time::timeout(Duration::from_secs(4), watcher)
        .await
        .expect("watch answers promptly")
        .unwrap()
        .unwrap();
    assert_eq!(seen, new_version);
}

#[tokio::test]
async fn registration_is_refused_without_the_role_and_nothing_is_created() {
    let f = fixture().await;
    let nobody = f.user_with_role("nobody", None).await;
    let app_admin = f.user_with_role("apps", Some(Role::ApplicationAdministrator)).await;
    let hybrid = f
        .user_with_role("hybrid", Some(Role::HybridIdentityAdministrator))
        .await;
    for (user, kind, ok) in [
        (&nobody, ComponentKind::Connector, false),
        (&nobody, ComponentKind::Agent, false),
        (&app_admin, ComponentKind::Agent, false),
        (&hybrid, ComponentKind::Connector, false),
        (&app_admin, ComponentKind::Connector, true),
        (&hybrid, ComponentKind::Agent, true),
    ] {
        // The role check holds even for an approval the account gave.
        let token = f.approval(user, kind).await;
        let state = f.state(&format!("{kind}-{}", user.id));
        let result = register(&f.options(kind, &token), &state).await;
        match (ok, result) {
            (true, Ok(_)) => assert!(state.is_registered()),
            (
                false,
                Err(UplinkError::Refused {
                    status: 403, message, ..
                }),
            ) => {
                assert!(message.contains("role"), "{message}");
                assert!(!state.is_registered(), "nothing written on refusal");
            }
            (ok, other) => panic!("{kind} expected ok={ok}, got {other:?}"),
        }
    }
    // Exactly the two allowed registrations exist.
    let store = f.svc.store();
    assert_eq!(
        store
            .components(&f.t.tenant.id, ComponentKind::Connector)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .components(&f.t.tenant.id, ComponentKind::Agent)
            .await
            .unwrap()
            .len(),
        1
    );
    // An expired or garbage token is refused too.
    let err = register(&f.options(ComponentKind::Agent, "not.a.token"), &f.state("garbage"))
        .await
        .unwrap_err();
    assert!(matches!(err, UplinkError::Refused { status: 401, .. }), "{err:?}");
}

#[tokio::test]
async fn weak_keys_bad_csrs_and_foreign_subjects_are_refused() {
    let f = fixture().await;
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/../pki/testdata");
    let connector_token = f.approval(&f.t.admin, ComponentKind::Connector).await;
    let agent_token = f.approval(&f.t.admin, ComponentKind::Agent).await;
    let post = |kind: &str, csr: String| {
        let name = format!("{kind}-host");
        let body = serde_json::json!({
            "protocol": postern_proto::PROTOCOL_VERSION, "kind": kind, "csr_pem": csr, "name": name, "version": "1",
        });
        let token = if kind == "agent" {
            agent_token.clone()
        } else {
            connector_token.clone()
        };
        let url = format!("{}/v1/register", f.svc.url());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body)
        }
    };
    // RSA-1024 (too weak), exponent 3, SHA-1 signatures.
    for file in ["rsa1024.csr", "rsa2048_e3.csr", "rsa2048_sha1.csr"] {
        let csr = std::fs::read_to_string(format!("{testdata}/{file}")).unwrap();
        let (status, body) = post("agent", csr).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_csr")),
            "{file}: {body}"
        );
    }
    // ECDSA for an agent (agents need RSA: the STS encrypts passwords to their key).
    let ec = postern_pki::generate_key(KeyAlg::EcdsaP256).unwrap();
    let (status, _) = post("agent", postern_pki::make_csr(&ec).unwrap()).await;
    assert_eq!(status, 400);
    // A broken signature.
    let good = postern_pki::make_csr(&postern_pki::generate_key(KeyAlg::Rsa(2048)).unwrap()).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(good.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'static>| d.as_ref().to_vec())
        .unwrap();
    let mut broken = der.clone();
    let last = broken.len() - 5;
    broken[last] ^= 0x55;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_lines(&broken)
    );
    let (status, body) = post("agent", pem).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_csr")), "{body}");
    // A CSR asking for another tenant as subject: refused; the service picks the subject.
    let (status, body) = post(
        "connector",
        csr_with_subject(&format!("other-tenant-{}", f.t.tenant.id)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        f.svc
            .store()
            .components(&f.t.tenant.id, ComponentKind::Agent)
            .await
            .unwrap()
            .is_empty()
    );
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A CSR (from openssl) whose subject names a tenant of the requester's choosing.
fn csr_with_subject(cn: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
        ])
        .arg(&key)
        .args(["-subj", &format!("/CN={cn}/O=Postern")])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_certificate_is_refused_for_another_tenants_endpoints() {
    let f = fixture().await;
    let client = f.register(ComponentKind::Connector, "c1").await;
    let (b, _, _) = f
        .svc
        .sts()
        .create_tenant(
            postern_sts::NewTenantRequest {
                name: "beta".into(),
                display_name: "Beta".into(),
                domain: "beta.test".into(),
                admin_username: "admin@beta.test".into(),
                admin_password: "correct horse for beta".into(),
                is_system: false,
                admin_totp: None,
            },
            "test",
        )
        .await
        .unwrap();
    let body = serde_json::json!({ "protocol": postern_proto::PROTOCOL_VERSION, "version": "1" });
    let path = postern_proto::control::connector_config_path(&b.id);
    let r = client
        .request(reqwest::Method::POST, &path)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let own = postern_proto::control::connector_config_path(&f.t.tenant.id);
    assert_eq!(
        client
            .request(reqwest::Method::POST, &own)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // An agent's certificate is refused on connector endpoints of its own tenant.
    let agent = f.register(ComponentKind::Agent, "a1").await;
    assert_eq!(
        agent
            .request(reqwest::Method::POST, &own)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test]
async fn removal_revokes_at_once_and_the_crl_lists_it() {
    let f = fixture().await;
    let client = f.register(ComponentKind::Connector, "c1").await;
    let me = client.whoami().await.unwrap();
    f.svc
        .store()
        .delete_component(&f.t.tenant.id, &me.component_id, "removed", f.svc.now())
        .await
        .unwrap();
    let err = client.whoami().await.unwrap_err();
    assert!(err.needs_registration(), "{err:?}");
    assert!(matches!(err, UplinkError::Revoked(_)));

    // The CRL (plain HTTP) lists the serial, and openssl reads both encodings.
    let dir = tempfile::tempdir().unwrap();
    for (file, inform) in [("connectors.crl.pem", "PEM"), ("connectors.crl", "DER")] {
        let bytes = reqwest::get(format!("{}/pki/{file}", f.svc.url()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let path = dir.path().join(file);
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["crl", "-inform", inform, "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_uppercase();
        assert!(
            text.contains(&me.serial.to_uppercase()),
            "serial {} missing in:\n{text}",
            me.serial
        );
    }
    assert_eq!(
        reqwest::get(format!("{}/pki/nope.crl", f.svc.url()))
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn connector_renews_after_180_days_with_a_new_key() {
    let f = fixture().await;
    let mut client = f.register(ComponentKind::Connector, "c1").await;
    let before = read_cert(&f.state("c1"));
    assert!(!client.connector_config("0.1.0").await.unwrap().renew_requested);

    f.svc.advance(Duration::from_secs(181 * 86_400));
    let config = client.connector_config("0.1.0").await.unwrap();
    assert!(
        config.renewed_certificate_pem.is_some(),
        "renewed in the config exchange"
    );
    let after = read_cert(&f.state("c1"));
    assert_ne!(after.serial, before.serial);
    assert_ne!(after.key_id, before.key_id, "a fresh key");
    assert_eq!(
        after.not_before.secs(),
        f.svc.now().secs() - 300,
        "issued now (less the skew allowance)"
    );
    let me = client.whoami().await.unwrap();
    assert_eq!(me.serial, after.serial, "the client switched to the new certificate");
    // The old certificate still works during the grace period, then not.
    let (_, status) = f
        .svc
        .store()
        .component_by_serial(&before.serial, f.svc.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, SerialStatus::Previous);
    f.svc.advance(Duration::from_secs(3601));
    assert!(
        f.svc
            .store()
            .component_by_serial(&before.serial, f.svc.now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(!client.connector_config("0.1.0").await.unwrap().renew_requested);
}

#[tokio::test]
async fn agent_renews_29_days_before_expiry_and_the_old_key_dies() {
    let f = fixture().await;
    let mut agent = f.register(ComponentKind::Agent, "a1").await;
    let old_state = f.dir.path().join("a1-old");
    copy_dir(f.state("a1").path(), &old_state);
    let before = read_cert(&f.state("a1"));
    assert!(before.public_key_spki_der.len() > 200, "RSA key");
    assert!(!agent.agent_renewal_check().await.unwrap().renew, "not due at first");

    // 29 days before expiry (180-day certificates).
    f.svc.advance(Duration::from_secs((180 - 29) * 86_400));
    let check = agent.agent_renewal_check().await.unwrap();
    assert!(check.renew, "{}", check.reason);
    agent.agent_renew(KeyAlg::Rsa(2048)).await.unwrap();
    let after = read_cert(&f.state("a1"));
    assert_ne!(after.key_id, before.key_id);
    let stored = f
        .svc
        .store()
        .component(&f.t.tenant.id, &agent.whoami().await.unwrap().component_id)
        .await
        .unwrap();
    assert_eq!(
        stored.public_key, after.public_key_spki_der,
        "the new public key is stored"
    );
    assert_eq!(stored.key_id, after.key_id);
    // The old certificate and key no longer work, at once.
    let old = ControlClient::load(StateDir::new(&old_state), f.svc.shared_clock()).unwrap();
    assert!(matches!(old.whoami().await, Err(UplinkError::Revoked(_))));
    let crl = f.svc.store().revoked_certificates("agents", f.svc.now()).await.unwrap();
    assert!(crl.iter().any(|r| r.serial == before.serial));
}

#[tokio::test]
async fn agents_due_together_renew_one_after_the_other() {
    let f = fixture().await;
    let mut a = f.register(ComponentKind::Agent, "a").await;
    let mut b = f.register(ComponentKind::Agent, "b").await;
    f.svc.advance(Duration::from_secs(160 * 86_400));
    assert!(a.agent_renewal_check().await.unwrap().renew);
    let waiting = b.agent_renewal_check().await.unwrap();
    assert!(
        !waiting.renew && waiting.reason.contains("one at a time"),
        "{waiting:?}"
    );
    let refused = b.agent_renew(KeyAlg::Rsa(2048)).await.unwrap_err();
    assert!(
        matches!(refused, UplinkError::Refused { status: 409, .. }),
        "{refused:?}"
    );
    a.agent_renew(KeyAlg::Rsa(2048)).await.unwrap();
    assert!(b.agent_renewal_check().await.unwrap().renew, "b's turn once a is done");
    b.agent_renew(KeyAlg::Rsa(2048)).await.unwrap();
    assert!(!a.agent_renewal_check().await.unwrap().renew);
}

#[tokio::test]
async fn an_expired_agent_is_removed_and_says_so() {
    let f = fixture().await;
    let agent = f.register(ComponentKind::Agent, "a1").await;
    let id = agent.whoami().await.unwrap().component_id;
    f.svc.advance(Duration::from_secs(181 * 86_400));
    // The TLS layer (with the service clock) refuses the expired certificate...
    assert!(agent.whoami().await.is_err());
    // ...maintenance removes the agent, and loading its state says what to do.
    assert_eq!(f.svc.control().maintain().await.unwrap(), 1);
    assert!(f.svc.store().component(&f.t.tenant.id, &id).await.is_err());
    let err = ControlClient::load(f.state("a1"), f.svc.shared_clock()).unwrap_err();
    assert!(matches!(err, UplinkError::CertificateExpired(_)));
    assert!(err.to_string().contains("register it again"));
}

#[tokio::test]
async fn registration_tokens_work_once_and_the_private_key_never_travels() {
    let f = fixture().await;
    let token = "ptr_test-token-0123456789abcdefghijklmnopqrstuvw";
    f.svc
        .store()
        .create_registration_token(
            &postern_keyring::digest(token),
            &f.t.tenant.id,
            ComponentKind::Connector,
            None,
            &format!("user:{}", f.t.admin.id),
            1,
            f.svc.now(),
            f.svc.now() + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    // Register through a recording proxy to see every byte sent.
    let (proxy_url, recorded) = recording_proxy(f.svc.local_addr_for_tests()).await;
    let mut options = f.options(ComponentKind::Connector, token);
    options.credential = Credential::RegistrationToken(SecretString::from(token));
    options.server_url = proxy_url;
    let state = f.state("tok");
    register(&options, &state).await.expect("registration with a token");
    let key_pem = std::fs::read_to_string(state.path().join("key.pem")).unwrap();
    let key = postern_pki::ComponentKey::from_pkcs8_pem(&key_pem).unwrap();
    let sent = recorded.lock().unwrap().clone();
    assert!(sent.len() > 200, "the registration request was recorded");
    let body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!contains(&sent, body.as_bytes()), "the PEM key body was sent");
    assert!(!contains(&sent, &key.pkcs8_der()[..64]), "key bytes were sent");
    // The token works once.
    let again = register(&options, &f.state("tok2")).await.unwrap_err();
    assert!(matches!(again, UplinkError::Refused { status: 401, .. }), "{again:?}");

    // A token stops working when its creator loses the role to register.
    let apps = f
        .svc
        .store()
        .create_user(
            &f.t.tenant.id,
            NewUser::cloud("apps@acme.test", "Apps", None),
            f.svc.now(),
        )
        .await
        .unwrap();
    f.svc
        .store()
        .assign_role(&apps.id, Role::ApplicationAdministrator, f.svc.now())
        .await
        .unwrap();
    let token2 = "ptr_test-token-9876543210abcdefghijklmnopqrstuvw";
    f.svc
        .store()
        .create_registration_token(
            &postern_keyring::digest(token2),
            &f.t.tenant.id,
            ComponentKind::Connector,
            None,
            &format!("user:{}", apps.id),
            5,
            f.svc.now(),
            f.svc.now() + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    f.svc
        .store()
        .revoke_role(&apps.id, Role::ApplicationAdministrator)
        .await
        .unwrap();
    options.credential = Credential::RegistrationToken(SecretString::from(token2));
    options.server_url = f.svc.url();
    let refused = register(&options, &f.state("tok3")).await.unwrap_err();
    assert!(
        matches!(refused, UplinkError::Refused { status: 403, .. }),
        "{refused:?}"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(to.join(e.file_name()), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// A TCP proxy to `target` that records what clients send.
async fn recording_proxy(target: std::net::SocketAddr) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = recorded.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let up = tokio::spawn(async move {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let _ = tokio::io::copy(&mut ur, &mut cw).await;
                let _ = up.await;
            });
        }
    });
    (url, recorded)
}
