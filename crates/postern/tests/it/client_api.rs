//! `postern-client` against the real STS and admin API served on 127.0.0.1:0
//! (here, not in the client's crate, so the client's own dependencies stay
//! free of the server's): the
//! device flow end to end, every typed admin call (on-prem components
//! included) deserializing the real answers, errors keeping the service's message, and stored credentials
//! refreshed when they expire.

use std::sync::Arc;
use std::time::Duration;

use postern_client::wire::{
    AuditQuery, ClientType, ComponentStatus, CreateClient, CreateConnectorGroup, CreateGroup, CreateRegistrationToken,
    CreateTenant, CreateUser, SigninQuery, UpdateTenantSettings, UpdateUser,
};
use postern_client::{AdminClient, ClientError, CredentialFile, Credentials, Issuer, PublicClient};
use postern_keyring::Keyring;
use postern_store::testing::TestDatabase;
use postern_store::{
    Backend, CertRecord, Component, ComponentKind, DomainAuthMode, NewComponent, RefreshToken, Role, Tenant, User,
};
use postern_sts::{NewTenantRequest, Sts, StsConfig};
use postern_time::{ManualClock, UnixTime};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The service's STS and admin API on a loopback port, with an operator.
struct Service {
    _db: TestDatabase,
    sts: Arc<Sts>,
    clock: Arc<ManualClock>,
    url: String,
    ops: Tenant,
    admin: User,
}

impl Service {
    async fn start() -> Self {
        let db = TestDatabase::new(Backend::Sqlite).await.unwrap();
        let store = db.store().await.unwrap();
        let keyring = Arc::new(Keyring::from_text(Keyring::generate_entry(1).unwrap().expose()).unwrap());
        let clock = ManualClock::starting_now();
        // Bound first, so the issuer URL names the real port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = StsConfig::new(url.parse().unwrap());
        config.device_poll_interval = Duration::from_secs(1);
        let sts = Sts::new(store.clone(), keyring, clock.clone(), config).await.unwrap();
        let (ops, admin, _) = sts
            .create_tenant(
                NewTenantRequest {
                    name: "ops".into(),
                    display_name: "Operations".into(),
                    domain: "ops.test".into(),
                    admin_username: "root@ops.test".into(),
                    admin_password: "operator passphrase".into(),
                    is_system: true,
                    admin_totp: None,
                },
                "test",
            )
            .await
            .unwrap();
        let admin_api = postern_admin_api::AdminState::new(store, clock.clone(), sts.clone());
        let app = sts.router().merge(postern_admin_api::router(admin_api));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            _db: db,
            sts,
            clock,
            url,
            ops,
            admin,
        }
    }

    async fn admin_client(&self) -> AdminClient {
        let token = self
            .sts
            .mint_access_token_for_tests(&self.ops, &self.admin, "openid postern:admin")
            .await
            .unwrap();
        AdminClient::new(&self.url, token.into(), TIMEOUT).unwrap()
    }
}

#[tokio::test]
async fn device_flow_against_the_real_sts() {
    let service = Service::start().await;
    let issuer = Issuer::new(&service.url, "ops").unwrap();
    let oauth = PublicClient::new(issuer.clone(), "postern-cli", TIMEOUT).unwrap();
    let auth = oauth
        .start_device_authorization("openid profile offline_access postern:admin")
        .await
        .unwrap();
    assert!(auth.verification_url().contains("/t/ops/device?user_code="));
    assert_eq!(auth.interval, Some(1));

    // The user approves (what the device page does after sign-in).
    let now = service.sts.now();
    let digest = postern_keyring::digest(auth.device_code.expose());
    let approved = service
        .sts
        .store()
        .decide_device_code(&digest, Some((&service.admin.id, now, "pwd")), now)
        .await
        .unwrap();
    assert!(approved);
    let tokens = oauth
        .wait_for_device_tokens(&auth, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(tokens.refresh_token.is_some());
    assert!(tokens.scope.contains("postern:admin"));

    // The tokens work with the admin API and refresh.
    let client = AdminClient::new(&service.url, tokens.access_token.clone(), TIMEOUT).unwrap();
    assert_eq!(client.me().await.unwrap().user.username, "root@ops.test");
    let refreshed = oauth.refresh(tokens.refresh_token.as_ref().unwrap()).await.unwrap();
    assert_ne!(refreshed.refresh_token, tokens.refresh_token, "refresh tokens rotate");
    oauth.revoke(refreshed.refresh_token.as_ref().unwrap()).await.unwrap();
    let err = oauth
        .refresh(refreshed.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_grant"));

    // A code used once is spent.
    let err = oauth
        .wait_for_device_tokens(&auth, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_grant"));

    // Another request that nobody approves runs out at the caller's limit.
    let auth = oauth.start_device_authorization("openid postern:admin").await.unwrap();
    let err = oauth
        .wait_for_device_tokens(&auth, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TimedOut), "{err:?}");
}

#[tokio::test]
async fn every_typed_call_reads_the_real_answers() {
    let service = Service::start().await;
    let client = service.admin_client().await;

    let me = client.me().await.unwrap();
    assert!(me.operator);
    assert_eq!(me.roles, [Role::GlobalAdministrator]);

    // Tenants.
    let created = client
        .create_tenant(&CreateTenant {
            name: "acme".into(),
            display_name: "Acme".into(),
            domain: "acme.test".into(),
            admin_username: "boss@acme.test".into(),
            admin_password: "the chief executive passphrase".into(),
        })
        .await
        .unwrap();
    assert_eq!(created.admin.username, "boss@acme.test");
    assert_eq!(client.tenants().await.unwrap().len(), 2);
    let tenant = client
        .update_tenant(&UpdateTenantSettings {
            lockout_threshold: Some(7),
            ..UpdateTenantSettings::default()
        })
        .await
        .unwrap();
    assert_eq!(tenant.lockout_threshold, 7);
    assert_eq!(client.tenant().await.unwrap().lockout_threshold, 7);

    // Domains.
    let domain = client.create_domain("Corp.Test").await.unwrap();
    assert!(domain.dns_txt_record.unwrap().starts_with("postern-verify="));
    assert!(client.domain("corp.test").await.unwrap().dns_txt_record.is_some());
    // An operator verifying its own tenant's domain vouches for it directly.
    assert!(client.verify_domain("corp.test").await.unwrap().verified);
    let domain = client
        .set_domain_auth_mode("corp.test", DomainAuthMode::Passthrough)
        .await
        .unwrap();
    assert_eq!(domain.auth_mode, DomainAuthMode::Passthrough);
    assert_eq!(client.domains().await.unwrap().len(), 2);
    client.delete_domain("corp.test").await.unwrap();
    let acme_domain = client.verify_tenant_domain("acme", "acme.test").await.unwrap();
    assert!(acme_domain.verified);

    // Users, roles, groups.
    let user = client
        .create_user(&CreateUser {
            username: "jo@ops.test".into(),
            display_name: Some("Jo".into()),
            email: Some("jo@ops.test".into()),
            password: Some("a long passphrase for j".into()),
            mfa_required: false,
        })
        .await
        .unwrap();
    assert!(user.has_password);
    let user = client
        .update_user(
            &user.id,
            &UpdateUser {
                email: Some(None),
                ..UpdateUser::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(user.email, None);
    assert_eq!(client.user(&user.id).await.unwrap().display_name, "Jo");
    assert_eq!(client.users().await.unwrap().len(), 2);
    client
        .set_password(&user.id, "another long passphrase".into())
        .await
        .unwrap();
    client.reset_mfa(&user.id).await.unwrap();
    let roles = client
        .assign_role(&user.id, Role::ApplicationAdministrator)
        .await
        .unwrap();
    assert_eq!(roles.roles, [Role::ApplicationAdministrator]);
    assert_eq!(client.user_roles(&user.id).await.unwrap().roles.len(), 1);
    assert!(
        client
            .revoke_role(&user.id, Role::ApplicationAdministrator)
            .await
            .unwrap()
            .roles
            .is_empty()
    );
    let group = client
        .create_group(&CreateGroup {
            name: "ops team".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(client.group(&group.id).await.unwrap().name, "ops team");
    client.add_member(&group.id, &user.id).await.unwrap();
    assert_eq!(client.group_members(&group.id).await.unwrap()[0].id, user.id);
    client.remove_member(&group.id, &user.id).await.unwrap();
    assert_eq!(client.groups().await.unwrap().len(), 1);
    client.delete_group(&group.id).await.unwrap();

    // Clients: the secret once.
    let created = client
        .create_client(&CreateClient {
            name: "Wiki".into(),
            client_type: ClientType::Confidential,
            redirect_uris: vec!["https://wiki.ops.test/cb".into()],
            post_logout_redirect_uris: vec![],
            grant_types: vec!["authorization_code".into()],
            scopes: vec![],
        })
        .await
        .unwrap();
    let secret = created.client_secret.as_ref().unwrap();
    assert!(!format!("{created:?}").contains(secret.expose()));
    assert_eq!(client.client(&created.client.client_id).await.unwrap().name, "Wiki");
    // The built-in clients of the CLI and the console, and Wiki.
    assert_eq!(client.clients().await.unwrap().len(), 3);
    client.delete_client(&created.client.client_id).await.unwrap();

    // Logs and the installation.
    assert!(client.signins(&SigninQuery::default()).await.unwrap().is_empty());
    let audit = client
        .audit(&AuditQuery {
            after: None,
            limit: Some(1000),
        })
        .await
        .unwrap();
    assert!(audit.iter().any(|e| e.action == "user.create"));
    assert!(client.verify_audit().await.unwrap().intact);
    assert!(!client.rotate_signing_key().await.unwrap().kid.is_empty());
    client.delete_user(&user.id).await.unwrap();
    client.delete_tenant("acme").await.unwrap();
}

/// A component of the operator's tenant registered directly in the store
/// (connectors in the default group).
async fn register(service: &Service, kind: ComponentKind, name: &str) -> Component {
    let store = service.sts.store();
    let now = service.sts.now();
    let group_id = match kind {
        ComponentKind::Connector => Some(store.default_connector_group(&service.ops.id, now).await.unwrap().id),
        ComponentKind::Agent => None,
    };
    let serial = uuid::Uuid::new_v4().simple().to_string();
    let new = NewComponent {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: service.ops.id.clone(),
        kind,
        name: name.into(),
        group_id,
        cert: CertRecord {
            key_id: format!("key-{}", &serial[..8]),
            serial,
            public_key: vec![0x30, 0x00],
            issued_at: now,
            not_after: now + Duration::from_secs(90 * 86_400),
        },
        version: "0.1.0".into(),
        registered_by: "test".into(),
    };
    store.register_component(&new, now).await.unwrap()
}

#[tokio::test]
async fn component_calls_read_the_real_answers() {
    let service = Service::start().await;
    let client = service.admin_client().await;
    let connector = register(&service, ComponentKind::Connector, "gw1.ops.internal").await;
    let agent = register(&service, ComponentKind::Agent, "dc1.ops.internal").await;

    // Connectors and their groups.
    let listed = client.connectors().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, ComponentStatus::Inactive);
    assert_eq!(listed[0].serial, connector.serial);
    assert_eq!(listed[0].group.as_ref().unwrap().name, "Default");
    let edge = client
        .create_connector_group(&CreateConnectorGroup {
            name: "edge".into(),
            description: "the second site".into(),
        })
        .await
        .unwrap();
    assert_eq!(edge.connector_count, 0);
    let moved = client.move_connector(&connector.id, "edge").await.unwrap();
    assert_eq!(moved.group.unwrap().id, edge.id);
    assert_eq!(client.connector(&connector.id).await.unwrap().name, "gw1.ops.internal");
    let detail = client.connector_group(&edge.id).await.unwrap();
    assert_eq!(detail.group.connector_count, 1);
    assert_eq!(detail.connectors[0].id, connector.id);
    let groups = client.connector_groups().await.unwrap();
    assert_eq!(groups.len(), 2);
    let err = client.delete_connector_group(&edge.id).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    client.move_connector(&connector.id, "Default").await.unwrap();
    client.delete_connector_group(&edge.id).await.unwrap();

    // Agents.
    let agents = client.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(
        client.agent(&agent.id).await.unwrap().key_id,
        Some(agent.key_id.clone())
    );
    client.delete_agent(&agent.id).await.unwrap();
    assert_eq!(client.agent(&agent.id).await.unwrap_err().status(), Some(404));
    client.delete_connector(&connector.id).await.unwrap();
    assert!(client.connectors().await.unwrap().is_empty());

    // Registration tokens: shown once, masked in Debug output.
    let created = client
        .create_registration_token(&CreateRegistrationToken {
            kind: ComponentKind::Connector,
            group: Some("Default".into()),
            ttl_secs: Some(600),
            uses: Some(2),
        })
        .await
        .unwrap();
    assert!(created.token.expose().starts_with("ptr_"));
    assert!(!format!("{created:?}").contains(created.token.expose()));
    assert_eq!(created.uses, 2);
    assert_eq!(created.group.unwrap().name, "Default");
    let err = client
        .create_registration_token(&CreateRegistrationToken {
            kind: ComponentKind::Agent,
            group: None,
            ttl_secs: Some(0),
            uses: Some(1000),
        })
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, problems, .. } => {
            assert_eq!(status, 400);
            assert_eq!(problems.len(), 2, "{problems:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refusals_keep_the_services_message() {
    let service = Service::start().await;
    let client = service.admin_client().await;
    let err = client
        .create_user(&CreateUser {
            username: "nobody@elsewhere.test".into(),
            display_name: None,
            email: Some("no".into()),
            password: Some("short".into()),
            mfa_required: false,
        })
        .await
        .unwrap_err();
    match &err {
        ClientError::Api {
            status,
            error,
            problems,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(error, "invalid_request");
            assert_eq!(problems.len(), 3);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("not a domain of this tenant"), "{err}");

    let err = client.user("no-such-user").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    let err = client.delete_client("postern-cli").await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("built-in"));

    // An expired token is a 401 the caller can tell apart.
    service.clock.advance(Duration::from_secs(11 * 60));
    let err = client.me().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("expired"));

    // Nothing listening: a transport error naming the URL.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let gone = AdminClient::new(&format!("http://{addr}"), "token".into(), TIMEOUT).unwrap();
    let err = gone.me().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()));
}

#[tokio::test]
async fn stored_credentials_refresh_when_expired() {
    let service = Service::start().await;
    let store = service.sts.store();
    let now = service.sts.now();
    // A refresh token as the device flow would have issued it.
    let refresh_token = postern_keyring::random_token().unwrap();
    store
        .create_refresh_token(
            &postern_keyring::digest(refresh_token.expose()),
            &RefreshToken {
                family_id: "family-1".into(),
                tenant_id: service.ops.id.clone(),
                client_id: "postern-cli".into(),
                user_id: service.admin.id.clone(),
                session_id: None,
                scope: "openid offline_access postern:admin".into(),
                auth_time: now,
                amr: "pwd".into(),
                expires_at: now + Duration::from_secs(3600),
                family_expires_at: now + Duration::from_secs(7200),
            },
            now,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = CredentialFile::in_dir(dir.path());
    file.save(&Credentials {
        server: service.url.clone(),
        tenant: "ops".into(),
        client_id: "postern-cli".into(),
        access_token: "expired-access-token".into(),
        refresh_token: Some(refresh_token.clone()),
        expires_at: UnixTime::from_secs(now.secs() - 1),
    })
    .unwrap();

    let client = file.admin_client(now, TIMEOUT).await.unwrap();
    assert_eq!(client.me().await.unwrap().user.username, "root@ops.test");
    let stored = file.load().unwrap().unwrap();
    assert_ne!(stored.access_token.expose(), "expired-access-token");
    assert_ne!(
        stored.refresh_token.as_ref(),
        Some(&refresh_token),
        "the refresh token rotated"
    );
    assert!(stored.expires_at > now);

    // Fresh credentials are used as they are.
    let again = file.admin_client(now, TIMEOUT).await.unwrap();
    assert!(again.me().await.is_ok());
    assert_eq!(file.load().unwrap().unwrap().access_token, stored.access_token);

    // Once the session is gone, the command line says to sign in again.
    let later = now + Duration::from_secs(3600);
    store.revoke_refresh_family("family-1", now).await.unwrap();
    let err = file.admin_client(later, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, ClientError::NotSignedIn(_)), "{err:?}");
    assert!(err.to_string().contains("postern admin login"));
    file.remove().unwrap();
    let err = file.admin_client(later, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, ClientError::NotSignedIn(_)));
}
