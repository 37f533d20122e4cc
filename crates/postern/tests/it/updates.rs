//! Issue 12: signed automatic updates (PTA-8, SEC-11). The real service on
//! loopback (system clock: the connectors run as processes), real connectors
//! (`postern connector run`, started from a binary in a temporary directory
//! by the updater's process supervisor, which the test records), the real
//! updater in-process, releases published through the admin API and signed
//! with a test key that the updater trusts through a root-owned override file.
//!
//! "The new version" is the real `postern` binary behind a two-line wrapper
//! script that sets `POSTERN_REPORTED_VERSION`, so the component comes back
//! reporting the release's version; a release that never calls in is a script
//! that only sleeps.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_client::AdminClient;
use postern_client::wire::{PublishRelease, ReleaseView, SetUpdatePolicy};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_release::{MANIFEST_FORMAT, Manifest, SecretKey, TrustedKey};
use postern_testkit::{TenantFixture, TestService};
use postern_updater::{Outcome, ProcessSupervisor, Supervisor, Updater, UpdaterError, UpdaterOptions};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, UplinkError};

use crate::common::{precondition_missing, running_as_root};

const REAL: &str = env!("CARGO_BIN_EXE_postern");

/// What the test supervisor saw: (component, "stop"|"start", when).
type Events = Arc<Mutex<Vec<(String, &'static str, Instant)>>>;

/// The updater's process supervisor, recording every stop and start.
struct Recording {
    name: String,
    inner: ProcessSupervisor,
    events: Events,
}

#[async_trait::async_trait]
impl Supervisor for Recording {
    async fn stop(&self) -> Result<(), UpdaterError> {
        self.inner.stop().await?;
        self.events
            .lock()
            .unwrap()
            .push((self.name.clone(), "stop", Instant::now()));
        Ok(())
    }

    async fn start(&self) -> Result<(), UpdaterError> {
        self.events
            .lock()
            .unwrap()
            .push((self.name.clone(), "start", Instant::now()));
        self.inner.start().await
    }
}

/// One connector on its "host": state, installed binary, updater.
struct Host {
    name: String,
    component_id: String,
    state: StateDir,
    binary: PathBuf,
    supervisor: Arc<Recording>,
    updater: Updater,
}

impl Host {
    fn events(&self) -> Vec<&'static str> {
        self.supervisor
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| *n == self.name)
            .map(|(_, e, _)| *e)
            .collect()
    }
}

struct Fx {
    svc: TestService,
    t: TenantFixture,
    dir: tempfile::TempDir,
    admin: AdminClient,
    key: SecretKey,
    trusted: TrustedKey,
    events: Events,
}

/// The installed ("old") binary: the real one, reporting its own version.
fn old_binary() -> Vec<u8> {
    format!("#!/bin/sh\nunset POSTERN_REPORTED_VERSION\nexec {REAL} \"$@\"\n").into_bytes()
}

/// The real binary reporting `version`; `pad` bytes of comment make it span
/// several upload chunks.
fn new_binary(version: &str, pad: usize) -> Vec<u8> {
    format!(
        "#!/bin/sh\n# {}\nPOSTERN_REPORTED_VERSION={version} exec {REAL} \"$@\"\n",
        "x".repeat(pad)
    )
    .into_bytes()
}

/// A release that starts and never calls in.
fn silent_binary() -> Vec<u8> {
    b"#!/bin/sh\nexec sleep 600\n".to_vec()
}

async fn fixture() -> Option<Fx> {
    fixture_on(postern_store::Backend::Sqlite).await
}

async fn fixture_on(backend: postern_store::Backend) -> Option<Fx> {
    if !running_as_root() {
        // The override key file must be root-owned, and the connector refuses
        // root unless told: both need root to test for real.
        precondition_missing("updates", "the updater's tests need root");
        return None;
    }
    let svc = TestService::builder()
        .backend(backend)
        .system_clock()
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    let admin = AdminClient::new(&svc.url(), SecretString::from(token), Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The test key reaches the updater the way an operator's would: a
    // root-owned 0644 file, checked before it is trusted.
    let key = SecretKey::generate().unwrap();
    let key_file = dir.path().join("release-key.pub");
    std::fs::write(&key_file, key.public_key_text().unwrap()).unwrap();
    set_mode(&key_file, 0o644);
    let (trusted, source) = postern_release::trust::publisher_key(&key_file).unwrap();
    assert!(matches!(source, postern_release::trust::KeySource::Override(_)));
    Some(Fx {
        svc,
        t,
        dir,
        admin,
        key,
        trusted,
        events: Events::default(),
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Fx {
    /// Registers a connector named `name` (in `group`, by name).
    async fn register(&self, name: &str, kind: ComponentKind, group: Option<&str>) -> StateDir {
        let state = StateDir::new(self.dir.path().join(name).join("state"));
        let token = self
            .svc
            .registration_token(&self.t.tenant, &self.t.admin, kind, name)
            .await
            .unwrap();
        let options = RegisterOptions {
            server_url: self.svc.url(),
            kind,
            credential: Credential::AccessToken(SecretString::from(token)),
            name: name.into(),
            version: "0.1.0".into(),
            group: group.map(str::to_owned),
            tenant: None,
            key_alg: KeyAlg::recommended(kind),
            server_ca_pem: None,
        };
        postern_uplink::register(&options, &state).await.unwrap();
        state
    }

    /// A connector host: registered, its binary installed, running under the
    /// recording supervisor, with its updater; returns once the service has
    /// seen the connector's tunnel.
    async fn host(&self, name: &str, group: Option<&str>, health_timeout: Duration) -> Host {
        let state = self.register(name, ComponentKind::Connector, group).await;
        let component_id = ControlClient::load(state.clone(), self.svc.shared_clock())
            .unwrap()
            .enrolment()
            .component_id
            .clone();
        let bin_dir = self.dir.path().join(name).join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let binary = bin_dir.join("postern");
        std::fs::write(&binary, old_binary()).unwrap();
        set_mode(&binary, 0o755);
        let inner = ProcessSupervisor::new(
            &binary,
            [
                "connector".into(),
                "run".into(),
                "--allow-root".into(),
                "--state-dir".into(),
                state.path().as_os_str().to_owned(),
            ],
        )
        .env("RUST_LOG", "warn")
        .grace(Duration::from_secs(15));
        let supervisor = Arc::new(Recording {
            name: name.into(),
            inner,
            events: self.events.clone(),
        });
        supervisor.inner.start().await.unwrap();
        let mut options = UpdaterOptions::new(
            state.clone(),
            binary.clone(),
            self.dir.path().join(name).join("updater"),
            self.trusted.clone(),
        );
        options.fallback_version = "0.1.0".into();
        options.health_timeout = health_timeout;
        options.health_poll = Duration::from_millis(200);
        options.stall_timeout = Duration::from_secs(10);
        let updater = Updater::new(options, supervisor.clone(), self.svc.shared_clock());
        let host = Host {
            name: name.into(),
            component_id,
            state,
            binary,
            supervisor,
            updater,
        };
        self.wait_for_tunnel(&host, 0).await;
        host
    }

    async fn group_id(&self, host: &Host) -> String {
        let c = self
            .svc
            .store()
            .component(&self.t.tenant.id, &host.component_id)
            .await
            .unwrap();
        match c.group_id {
            Some(g) => g,
            None => {
                self.svc
                    .store()
                    .default_connector_group(&self.t.tenant.id, self.svc.now())
                    .await
                    .unwrap()
                    .id
            }
        }
    }

    /// The newest tunnel ID of `host`'s connector, once one newer than `after`
    /// is open (the connector runs and the service accepted it).
    async fn wait_for_tunnel(&self, host: &Host, after: u64) -> u64 {
        let group = self.group_id(host).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let newest = self
                .svc
                .control()
                .tunnels()
                .tunnels(&self.t.tenant.id, &group)
                .into_iter()
                .filter(|t| t.connector_id == host.component_id)
                .map(|t| t.id)
                .max();
            if let Some(id) = newest.filter(|id| *id > after) {
                return id;
            }
            assert!(Instant::now() < deadline, "{} opened no tunnel", host.name);
            postern_testkit::poll_pause(Duration::from_millis(100)).await;
        }
    }

    async fn newest_tunnel(&self, host: &Host) -> u64 {
        self.wait_for_tunnel(host, 0).await
    }

    async fn version_of(&self, host: &Host) -> String {
        self.svc
            .store()
            .component(&self.t.tenant.id, &host.component_id)
            .await
            .unwrap()
            .version
    }

    /// Signs a manifest for `binary` as `version` with `key` and publishes it
    /// (manifest, chunks, complete).
    async fn publish_signed(&self, version: &str, binary: &[u8], key: &SecretKey) -> ReleaseView {
        let (sha256, size) = {
            let mut h = postern_release::artifact::Sha256Stream::default();
            h.update(binary);
            h.finish()
        };
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: version.into(),
            target: postern_release::BUILD_TARGET.into(),
            sha256,
            size,
            min_upgrade_from: "0.0.1".into(),
            notes_url: format!("https://example.com/notes/{version}"),
        };
        let bytes = manifest.to_bytes().unwrap();
        let signature = postern_release::sign(&bytes, key, &format!("postern {version}")).unwrap();
        let release = self
            .admin
            .publish_release(&PublishRelease {
                manifest: String::from_utf8(bytes).unwrap(),
                signature,
                channel: "stable".into(),
            })
            .await
            .unwrap();
        for (seq, chunk) in binary.chunks(postern_client::RELEASE_CHUNK).enumerate() {
            self.admin
                .upload_release_chunk(&release.id, seq as u64, chunk.to_vec())
                .await
                .unwrap();
        }
        self.admin.complete_release(&release.id).await.unwrap()
    }

    async fn publish(&self, version: &str, binary: &[u8]) -> ReleaseView {
        self.publish_signed(version, binary, &self.key).await
    }

    async fn sql(&self, sql: &'static str, binds: &[&str]) {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        q.execute(self.svc.store().pool()).await.unwrap();
    }

    async fn latest_update(&self, host: &Host) -> postern_store::ComponentUpdate {
        self.svc
            .store()
            .component_updates(&self.t.tenant.id, Some(&host.component_id), 1)
            .await
            .unwrap()
            .remove(0)
    }
}

/// Nothing of the installation changed: the same bytes, no staging file, the
/// component never stopped, still on its version.
async fn assert_untouched(fx: &Fx, host: &Host, tunnel_before: u64) {
    assert_eq!(
        std::fs::read(&host.binary).unwrap(),
        old_binary(),
        "the binary was replaced"
    );
    assert!(
        !host.binary.with_file_name("postern.new").exists(),
        "a staging file was left"
    );
    assert!(!host.binary.with_file_name("postern.previous").exists());
    assert!(
        host.events().is_empty(),
        "the component was restarted: {:?}",
        host.events()
    );
    assert_eq!(fx.version_of(host).await, "0.1.0");
    assert_eq!(fx.newest_tunnel(host).await, tunnel_before, "the connector reconnected");
}

#[tokio::test]
async fn a_good_update_is_installed_and_the_component_comes_back_on_the_new_version() {
    let Some(fx) = fixture().await else { return };
    let host = fx.host("gw-1", None, Duration::from_secs(60)).await;
    let tunnel_before = fx.newest_tunnel(&host).await;
    let new = new_binary("0.2.0", 0);
    let release = fx.publish("0.2.0", &new).await;
    assert!(release.ready);

    let outcome = host.updater.run_once().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Updated {
            from: "0.1.0".into(),
            to: "0.2.0".into()
        }
    );
    // The new binary is in place, the old one kept for a rollback, and the
    // component was stopped once and started once.
    assert_eq!(std::fs::read(&host.binary).unwrap(), new);
    assert_eq!(
        std::fs::read(host.binary.with_file_name("postern.previous")).unwrap(),
        old_binary()
    );
    assert_eq!(host.events(), ["stop", "start"]);
    // It came back, on the new version: a new tunnel, and the service saw 0.2.0.
    fx.wait_for_tunnel(&host, tunnel_before).await;
    assert_eq!(fx.version_of(&host).await, "0.2.0");
    let update = fx.latest_update(&host).await;
    assert_eq!(
        (update.state.as_str(), update.to_version.as_str()),
        ("succeeded", "0.2.0")
    );
    assert!(update.finished_at.is_some());
    // The lease is given back: nobody holds the group's.
    let group = fx.group_id(&host).await;
    let holder = fx
        .svc
        .store()
        .update_lease_holder(&fx.t.tenant.id, &format!("group:{group}"), fx.svc.now())
        .await
        .unwrap();
    assert_eq!(holder, None);

    // The admin API shows the version, the update and the history, and the
    // versions in the field.
    let overview = fx.admin.updates().await.unwrap();
    let c = overview.components.iter().find(|c| c.id == host.component_id).unwrap();
    assert_eq!(c.version, "0.2.0");
    assert_eq!(c.latest_update.as_ref().unwrap().state, "succeeded");
    let history = fx.admin.update_history(Some(&host.component_id)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].from_version, "0.1.0");
    let field = fx.admin.field_versions().await.unwrap();
    assert!(
        field
            .iter()
            .any(|v| v.kind == "connector" && v.version == "0.2.0" && v.components == 1),
        "{field:?}"
    );

    // Next round: nothing newer, nothing touched.
    let again = host.updater.run_once().await.unwrap();
    assert!(matches!(again, Outcome::UpToDate { .. }), "{again:?}");
    assert_eq!(host.events(), ["stop", "start"]);
    host.supervisor.stop().await.unwrap();
}

#[tokio::test]
async fn bad_signature_wrong_hash_truncated_download_and_downgrade_replace_nothing() {
    let Some(fx) = fixture().await else { return };
    let host = fx.host("gw-1", None, Duration::from_secs(60)).await;
    let tunnel = fx.newest_tunnel(&host).await;

    // 1. Signed by another key.
    let other = SecretKey::generate().unwrap();
    fx.publish_signed("0.2.0", &new_binary("0.2.0", 0), &other).await;
    let outcome = host.updater.run_once().await.unwrap();
    let Outcome::Refused { why, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(why.contains("signature"), "{why}");
    assert_untouched(&fx, &host, tunnel).await;
    let update = fx.latest_update(&host).await;
    assert_eq!(update.state, "refused");
    assert!(update.detail.contains("signature"), "{}", update.detail);

    // 2. A binary whose bytes changed in the store after publication (same
    // size): the SHA-256 does not match the signed manifest.
    let release = fx.publish("0.3.0", &new_binary("0.3.0", 0)).await;
    let mut tampered = new_binary("0.3.0", 0);
    let at = tampered.len() - 2;
    tampered[at] = b'X';
    sqlx::query("UPDATE release_chunks SET data = $1 WHERE release_id = $2 AND seq = 0")
        .bind(tampered)
        .bind(&release.id)
        .execute(fx.svc.store().pool())
        .await
        .unwrap();
    let outcome = host.updater.run_once().await.unwrap();
    let Outcome::Refused { why, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(why.contains("SHA-256"), "{why}");
    assert_untouched(&fx, &host, tunnel).await;

    // 3. A download cut short: the second of two chunks is gone, so the
    // service's response ends before its Content-Length.
    let big = new_binary("0.4.0", 300 * 1024);
    let release = fx.publish("0.4.0", &big).await;
    fx.sql(
        "DELETE FROM release_chunks WHERE release_id = $1 AND seq = 1",
        &[&release.id],
    )
    .await;
    let outcome = host.updater.run_once().await.unwrap();
    let Outcome::Failed { why, .. } = outcome else {
        panic!("{outcome:?}")
    };
    // The service resets the HTTP/2 stream when the chunk is missing; the
    // reset may reach the updater before the response head it follows.
    assert!(
        why.contains("broke off") || why.contains("truncated") || why.contains("stream error"),
        "{why}"
    );
    assert_untouched(&fx, &host, tunnel).await;
    assert_eq!(fx.latest_update(&host).await.state, "failed");
    fx.admin.delete_release(&release.id).await.unwrap();

    // 4. A downgrade: an old release, validly signed, relabelled as new in the
    // service's database. The updater goes by the signed manifest.
    let old = fx.publish("0.0.9", &new_binary("0.0.9", 0)).await;
    let check = ControlClient::load_for_updater(host.state.clone(), fx.svc.shared_clock())
        .unwrap()
        .update_check("0.1.0", postern_release::BUILD_TARGET)
        .await
        .unwrap();
    assert!(check.update.is_none(), "an honest service never offers a downgrade");
    fx.sql("UPDATE releases SET version = '9.9.9' WHERE id = $1", &[&old.id])
        .await;
    let outcome = host.updater.run_once().await.unwrap();
    let Outcome::Refused { version, why } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(version, "9.9.9");
    assert!(why.contains("downgrade") && why.contains("0.0.9"), "{why}");
    assert_untouched(&fx, &host, tunnel).await;

    // Refused releases are not offered to this component again.
    let outcome = host.updater.run_once().await.unwrap();
    assert!(matches!(outcome, Outcome::UpToDate { .. }), "{outcome:?}");
    let states: Vec<String> = fx
        .admin
        .update_history(Some(&host.component_id))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.state)
        .collect();
    assert_eq!(states, ["refused", "failed", "refused", "refused"]);
    host.supervisor.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_version_that_does_not_call_in_is_rolled_back() {
    let Some(fx) = fixture().await else { return };
    let host = fx.host("gw-1", None, Duration::from_secs(5)).await;
    let tunnel_before = fx.newest_tunnel(&host).await;
    fx.publish("0.2.0", &silent_binary()).await;

    let outcome = host.updater.run_once().await.unwrap();
    let Outcome::RolledBack { version, why } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(version, "0.2.0");
    assert!(why.contains("did not call in"), "{why}");
    // The previous binary is back and running: stopped for the update,
    // started, stopped again, started on the old binary, which calls in.
    assert_eq!(std::fs::read(&host.binary).unwrap(), old_binary());
    assert_eq!(host.events(), ["stop", "start", "stop", "start"]);
    fx.wait_for_tunnel(&host, tunnel_before).await;
    assert_eq!(fx.version_of(&host).await, "0.1.0");
    let update = fx.latest_update(&host).await;
    assert_eq!(update.state, "rolled_back");
    assert!(update.detail.contains("did not call in"), "{}", update.detail);
    // The failed release is not offered to this component again, and its
    // group's lease is free.
    let outcome = host.updater.run_once().await.unwrap();
    assert!(matches!(outcome, Outcome::UpToDate { .. }), "{outcome:?}");
    assert_eq!(host.events().len(), 4);
    host.supervisor.stop().await.unwrap();
}

#[tokio::test]
async fn two_connectors_of_one_group_never_update_at_the_same_moment() {
    let Some(fx) = fixture().await else { return };
    let a = fx.host("gw-a", None, Duration::from_secs(60)).await;
    let b = fx.host("gw-b", None, Duration::from_secs(60)).await;
    assert_eq!(fx.group_id(&a).await, fx.group_id(&b).await);
    fx.publish("0.2.0", &new_binary("0.2.0", 0)).await;

    // Both ask at once: one updates, the other is told to wait its turn.
    let (ra, rb) = tokio::join!(a.updater.run_once(), b.updater.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let (first, second, waiting) = match (&ra, &rb) {
        (Outcome::Updated { .. }, Outcome::UpToDate { reason, .. }) => (&a, &b, reason.clone()),
        (Outcome::UpToDate { reason, .. }, Outcome::Updated { .. }) => (&b, &a, reason.clone()),
        other => panic!("{other:?}"),
    };
    assert!(waiting.contains("one at a time"), "{waiting}");
    assert!(second.events().is_empty());
    assert_eq!(fx.version_of(second).await, "0.1.0");

    // Its turn comes once the first has called in on the new version.
    let outcome = second.updater.run_once().await.unwrap();
    assert!(matches!(outcome, Outcome::Updated { .. }), "{outcome:?}");
    assert_eq!(fx.version_of(first).await, "0.2.0");
    assert_eq!(fx.version_of(second).await, "0.2.0");

    // The two were never down together: the second stopped after the first
    // had started again.
    let events = fx.events.lock().unwrap().clone();
    let at = |name: &str, what: &str| {
        events
            .iter()
            .find(|(n, e, _)| n == name && *e == what)
            .map(|(_, _, t)| *t)
            .unwrap()
    };
    assert!(at(&first.name, "start") < at(&second.name, "stop"), "{events:?}");
    a.supervisor.stop().await.unwrap();
    b.supervisor.stop().await.unwrap();
}

/// The lease's scope and the tenant's policy, through the updater's calls
/// (no processes): connectors of another group and a tenant's agents, a pin,
/// a pause; publication refused when the binary does not match; another
/// tenant's certificate gets nothing.
#[tokio::test]
async fn leases_are_per_group_and_per_tenants_agents_and_policies_pin_and_pause_on_sqlite() {
    leases_and_policies(postern_store::Backend::Sqlite).await;
}

#[tokio::test]
async fn leases_are_per_group_and_per_tenants_agents_and_policies_pin_and_pause_on_postgres() {
    leases_and_policies(postern_store::Backend::Postgres).await;
}

async fn leases_and_policies(backend: postern_store::Backend) {
    let Some(fx) = fixture_on(backend).await else { return };
    fx.svc
        .store()
        .create_connector_group(&fx.t.tenant.id, "branch", "", false, fx.svc.now())
        .await
        .unwrap();
    let client = |state: &StateDir| ControlClient::load_for_updater(state.clone(), fx.svc.shared_clock()).unwrap();
    let target = postern_release::BUILD_TARGET;
    let c1 = client(&fx.register("c1", ComponentKind::Connector, None).await);
    let c2 = client(&fx.register("c2", ComponentKind::Connector, None).await);
    let c3 = client(&fx.register("c3", ComponentKind::Connector, Some("branch")).await);
    let a1 = client(&fx.register("a1", ComponentKind::Agent, None).await);
    let a2 = client(&fx.register("a2", ComponentKind::Agent, None).await);

    // A binary that does not match its manifest is never offered.
    let r2 = fx.publish("0.2.0", &new_binary("0.2.0", 0)).await;
    let bytes = new_binary("0.9.0", 0);
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: "0.9.0".into(),
        target: target.into(),
        sha256: "00".repeat(32),
        size: bytes.len() as u64,
        min_upgrade_from: "0.1.0".into(),
        notes_url: "https://example.com/n".into(),
    }
    .to_bytes()
    .unwrap();
    let bad = fx
        .admin
        .publish_release(&PublishRelease {
            manifest: String::from_utf8(manifest.clone()).unwrap(),
            signature: postern_release::sign(&manifest, &fx.key, "x").unwrap(),
            channel: "stable".into(),
        })
        .await
        .unwrap();
    fx.admin.upload_release_chunk(&bad.id, 0, bytes).await.unwrap();
    let err = fx.admin.complete_release(&bad.id).await.unwrap_err().to_string();
    assert!(err.contains("SHA-256"), "{err}");
    let err = fx
        .admin
        .publish_release(&PublishRelease {
            manifest: "{}".into(),
            signature: "nonsense".into(),
            channel: "nightly".into(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest") && err.contains("signature") && err.contains("channel"),
        "{err}"
    );

    // One connector per group, one agent per tenant.
    assert_eq!(offered(&c1).await.update.unwrap().release_id, r2.id);
    let waiting = offered(&c2).await;
    assert!(
        waiting.update.is_none() && waiting.reason.contains("connector group"),
        "{waiting:?}"
    );
    assert!(
        offered(&c3).await.update.is_some(),
        "another group updates independently"
    );
    assert!(offered(&a1).await.update.is_some());
    let waiting = offered(&a2).await;
    assert!(
        waiting.update.is_none() && waiting.reason.contains("another agent"),
        "{waiting:?}"
    );
    // Asking again keeps the offer (same lease).
    assert_eq!(offered(&c1).await.update.unwrap().release_id, r2.id);
    // Only the lease holder downloads.
    let err = c2.update_download(&r2.id).await.unwrap_err();
    assert!(matches!(err, UplinkError::Refused { status: 403, .. }), "{err:?}");
    // c1 gives up (refused): the lease is free for c2.
    c1.update_report(&r2.id, postern_proto::updates::UpdateOutcome::Refused, "test")
        .await
        .unwrap();
    assert!(offered(&c2).await.update.is_some());

    // A pin holds the tenant at 0.2.0 when 0.3.0 exists; a pause stops all.
    fx.publish("0.3.0", &new_binary("0.3.0", 0)).await;
    let pin = |v: Option<&str>, paused: bool| SetUpdatePolicy {
        channel: "stable".into(),
        pinned_version: v.map(str::to_owned),
        paused,
    };
    assert_eq!(offered(&a2).await.update, None, "a1 still holds the agents' lease");
    a1.update_report(
        &offered(&a1).await.update.unwrap().release_id,
        postern_proto::updates::UpdateOutcome::Failed,
        "test",
    )
    .await
    .unwrap();
    assert_eq!(offered(&a2).await.update.unwrap().version, "0.3.0");
    a2.update_report(
        &offered(&a2).await.update.unwrap().release_id,
        postern_proto::updates::UpdateOutcome::Failed,
        "test",
    )
    .await
    .unwrap();
    fx.admin.set_update_policy(&pin(Some("0.2.0"), false)).await.unwrap();
    assert_eq!(offered(&a2).await.update.unwrap().version, "0.2.0");
    let pinned = a2.update_check("0.2.0", target).await.unwrap();
    assert!(
        pinned.update.is_none() && pinned.reason.contains("pins 0.2.0"),
        "{pinned:?}"
    );
    fx.admin.set_update_policy(&pin(None, true)).await.unwrap();
    let paused = offered(&a1).await;
    assert!(
        paused.update.is_none() && paused.reason.contains("paused"),
        "{paused:?}"
    );
    let err = fx
        .admin
        .set_update_policy(&pin(Some("latest"), false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pinned_version"), "{err}");
    let overview = fx.admin.updates().await.unwrap();
    assert!(overview.policy.paused);
    assert_eq!(overview.components.len(), 5);

    // This tenant's certificate on another tenant's path is refused (SEC-6).
    let wrong_path = c1
        .request(
            reqwest::Method::POST,
            &postern_proto::updates::update_check_path("not-my-tenant"),
        )
        .json(&postern_proto::updates::UpdateCheckRequest {
            protocol: postern_proto::PROTOCOL_VERSION,
            installed_version: "0.1.0".into(),
            target: target.into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_path.status(), 403);
}

/// What the service offers an updater with 0.1.0 installed.
async fn offered(c: &ControlClient) -> postern_proto::updates::UpdateCheck {
    c.update_check("0.1.0", postern_release::BUILD_TARGET).await.unwrap()
}

/// A component older than the configured minimum is refused on every call
/// with the release to install named; its updater is not refused.
#[tokio::test]
async fn a_component_older_than_the_minimum_is_refused_naming_the_release() {
    if !running_as_root() {
        precondition_missing("updates", "the updater's tests need root");
        return;
    }
    let svc = TestService::builder()
        .control(|c| c.minimum_component_version = Some("0.2.0".into()))
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    let admin = AdminClient::new(&svc.url(), SecretString::from(token), Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fx = Fx {
        svc,
        t,
        dir,
        admin,
        key: SecretKey::generate().unwrap(),
        trusted: TrustedKey::from_text(postern_release::trust::PUBLISHER_KEY).unwrap(),
        events: Events::default(),
    };
    fx.publish("0.2.1", &new_binary("0.2.1", 0)).await;
    let state = fx.register("gw-1", ComponentKind::Connector, None).await;

    // The component (reporting 0.1.0, this build's version) is refused.
    let component = ControlClient::load(state.clone(), fx.svc.shared_clock()).unwrap();
    let err = component.whoami().await.unwrap_err();
    let UplinkError::Refused { status, code, message } = err else {
        panic!("{err:?}")
    };
    assert_eq!((status, code.as_str()), (426, postern_proto::updates::OUTDATED));
    assert!(message.contains("0.1.0") && message.contains("0.2.0"), "{message}");
    assert!(message.contains("install release 0.2.1"), "{message}");
    assert!(message.contains(postern_release::BUILD_TARGET), "{message}");

    // Its updater may still ask, and is offered the release.
    let updater = ControlClient::load_for_updater(state, fx.svc.shared_clock()).unwrap();
    let check = updater
        .update_check("0.1.0", postern_release::BUILD_TARGET)
        .await
        .unwrap();
    assert_eq!(check.update.unwrap().version, "0.2.1");
}

/// Runs the real binary (without blocking the service in this process);
/// returns success and standard error.
async fn postern(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = tokio::process::Command::new(REAL)
        .args(args)
        .env_remove("POSTERN_REPORTED_VERSION")
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `postern release keygen|sign|verify` and `postern updater run --once`, as a
/// publisher and an on-prem host run them.
#[tokio::test]
async fn the_release_and_updater_commands() {
    let Some(fx) = fixture().await else { return };
    let dir = fx.dir.path();
    let p = |name: &str| dir.join(name).into_os_string();
    let s = |s: &str| std::ffi::OsString::from(s);
    let (ok, err) = postern(&[
        &s("release"),
        &s("keygen"),
        &s("--secret-key"),
        &p("release.key"),
        &s("--public-key"),
        &p("release.pub"),
    ])
    .await;
    assert!(ok, "{err}");
    std::fs::write(dir.join("bin"), b"the binary").unwrap();
    let (ok, err) = postern(&[
        &s("release"),
        &s("sign"),
        &s("--secret-key"),
        &p("release.key"),
        &s("--binary"),
        &p("bin"),
        &s("--version"),
        &s("0.2.0"),
        &s("--min-upgrade-from"),
        &s("0.1.0"),
        &s("--notes-url"),
        &s("https://example.com/notes/0.2.0"),
        &s("--out"),
        &p("m.json"),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(dir.join("m.json.minisig").exists());
    let verify = async |key: &str| {
        postern(&[
            &s("release"),
            &s("verify"),
            &s("--manifest"),
            &p("m.json"),
            &s("--binary"),
            &p("bin"),
            &s("--public-key"),
            &p(key),
        ])
        .await
    };
    let (ok, err) = verify("release.pub").await;
    assert!(ok && err.contains("OK: 0.2.0"), "{err}");
    if let Ok(out) = std::process::Command::new("minisign")
        .args(["-V", "-H", "-p"])
        .arg(dir.join("release.pub"))
        .arg("-m")
        .arg(dir.join("m.json"))
        .output()
    {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Another key, then a changed binary: refused.
    std::fs::write(
        dir.join("other.pub"),
        SecretKey::generate().unwrap().public_key_text().unwrap(),
    )
    .unwrap();
    let (ok, err) = verify("other.pub").await;
    assert!(!ok && err.contains("signature"), "{err}");
    std::fs::write(dir.join("bin"), b"the binarY").unwrap();
    let (ok, err) = verify("release.pub").await;
    assert!(!ok && err.contains("SHA-256"), "{err}");

    // The updater, one round, trusting the override key file: nothing to do.
    let state = fx.register("gw-cli", ComponentKind::Connector, None).await;
    let key_file = dir.join("release-key.pub");
    let updater = async |key: &Path| {
        postern(&[
            &s("updater"),
            &s("run"),
            &s("--once"),
            &s("--component"),
            &s("connector"),
            &s("--state-dir"),
            state.path().as_os_str(),
            &s("--binary"),
            &p("bin"),
            &s("--work-dir"),
            &p("updater-work"),
            &s("--publisher-key"),
            key.as_os_str(),
        ])
        .await
    };
    let (ok, err) = updater(&key_file).await;
    assert!(ok, "{err}");
    assert!(err.contains("no update") && err.contains("Override"), "{err}");
    // A key file others may write is refused, naming what is wrong.
    set_mode(&key_file, 0o664);
    let (ok, err) = updater(&key_file).await;
    assert!(!ok && err.contains("0644 or 0600"), "{err}");
}
