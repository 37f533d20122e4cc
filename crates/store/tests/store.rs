//! The store's behaviour, run identically against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use postern_store::testing::TestDatabase;
use postern_store::*;
use postern_time::UnixTime;

const T0: UnixTime = UnixTime::from_secs(1_700_000_000);

fn at(secs: i64) -> UnixTime {
    UnixTime::from_secs(T0.secs() + secs)
}

async fn store(backend: Backend) -> (TestDatabase, Store) {
    let db = TestDatabase::new(backend).await.expect("test database");
    let store = db.store().await.expect("connect and migrate");
    assert_eq!(store.backend(), backend);
    (db, store)
}

fn tenant(name: &str) -> NewTenant {
    NewTenant {
        name: name.into(),
        display_name: name.to_uppercase(),
        is_system: false,
        settings: TenantSettings::default(),
    }
}

async fn tenant_with_admin(store: &Store, name: &str, domain: &str) -> (Tenant, User) {
    let admin = NewUser::cloud(&format!("Admin@{domain}"), "Admin", Some("$argon2id$fake".into()));
    store
        .create_tenant_with_admin(tenant(name), domain, admin, None, T0)
        .await
        .expect("create tenant")
}

/// Generates one test per backend from an `async fn(Backend)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(postern_store::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(postern_store::Backend::Postgres).await })*
        }
    };
}

on_both!(
    migrations_are_idempotent,
    tenants_and_first_admin,
    setup_code_creates_one_tenant,
    verified_domain_belongs_to_one_tenant,
    a_host_name_is_claimed_by_one_tenant,
    users_are_scoped_to_their_tenant,
    groups_and_memberships,
    roles,
    mfa_state,
    oauth_clients,
    auth_code_is_single_use,
    refresh_rotation_and_reuse_detection,
    refresh_lookup_spends_nothing,
    device_code_lifecycle,
    flows_expire,
    sessions_end_with_their_tokens,
    signing_key_rotation,
    lockout_counters,
    password_check_reads_account_and_lockout_together,
    lockout_reservations_hold_under_concurrency,
    audit_chain_detects_tampering,
    audit_appends_at_once_all_land,
    audit_chain_names_what_broke,
    signin_log,
    export_follows_both_logs_in_order,
    export_cursor_claims_each_event_once,
    purge_expired_records,
    certificate_authorities,
    connector_groups,
    component_lifecycle_and_revocation,
    renewal_lease_one_at_a_time,
    registration_tokens,
    tenant_deletion_revokes_components,
    revocations_are_announced_once_committed,
    last_global_admin_is_kept,
    directory_accounts_are_provisioned_just_in_time,
    published_apps_and_assignments,
    conditional_access_records,
    signin_reads_follow_every_change,
    signin_reads_follow_other_instances,
);

async fn migrations_are_idempotent(backend: Backend) {
    let (db, store) = store(backend).await;
    tenant_with_admin(&store, "acme", "acme.test").await;
    // Connecting again runs the migrator again: nothing changes, nothing is lost.
    let again = db.store().await.unwrap();
    assert_eq!(again.tenants().await.unwrap().len(), 1);
    again.ping().await.unwrap();
}

async fn tenants_and_first_admin(backend: Backend) {
    let (_db, store) = store(backend).await;
    assert!(!store.has_tenants().await.unwrap());
    let (t, admin) = tenant_with_admin(&store, "acme", "acme.test").await;
    assert!(store.has_tenants().await.unwrap());
    assert_eq!(admin.username, "admin@acme.test", "usernames are normalized");
    assert_eq!(
        store.user_roles(&admin.id).await.unwrap(),
        vec![Role::GlobalAdministrator]
    );
    assert_eq!(store.tenant_by_name("acme").await.unwrap(), t);
    assert_eq!(t.lockout_threshold, 10);
    let d = store.domain(&t.id, "acme.test").await.unwrap();
    assert!(d.verified);
    assert_eq!(d.auth_mode, DomainAuthMode::Cloud);

    let dup = store
        .create_tenant_with_admin(
            tenant("acme"),
            "other.test",
            NewUser::cloud("a@other.test", "A", None),
            None,
            T0,
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // The failed transaction left nothing behind.
    assert!(
        store
            .domains(&t.id)
            .await
            .unwrap()
            .iter()
            .all(|d| d.name != "other.test")
    );
    assert_eq!(store.tenants().await.unwrap().len(), 1);

    let settings = TenantSettings {
        lockout_threshold: 3,
        lockout_seconds: 30,
        require_mfa: true,
    };
    store.update_tenant_settings(&t.id, settings).await.unwrap();
    let t2 = store.tenant(&t.id).await.unwrap();
    assert_eq!(
        (t2.lockout_threshold, t2.lockout_seconds, t2.require_mfa),
        (3, 30, true)
    );

    store.delete_tenant(&t.id, T0).await.unwrap();
    assert!(matches!(store.user(&t.id, &admin.id).await, Err(StoreError::NotFound)));
}

async fn setup_code_creates_one_tenant(backend: Backend) {
    let (_db, store) = store(backend).await;
    let code = b"digest-of-code".to_vec();
    store.create_setup_code(&code, T0, at(600)).await.unwrap();
    assert!(store.setup_code_valid(&code, at(1)).await.unwrap());
    assert!(!store.setup_code_valid(&code, at(601)).await.unwrap(), "expired");

    let mk = |n: &str| NewTenant {
        is_system: true,
        ..tenant(n)
    };
    store
        .create_tenant_with_admin(
            mk("first"),
            "first.test",
            NewUser::cloud("a@first.test", "A", None),
            Some(&code),
            at(5),
        )
        .await
        .unwrap();
    let second = store
        .create_tenant_with_admin(
            mk("second"),
            "second.test",
            NewUser::cloud("a@second.test", "A", None),
            Some(&code),
            at(6),
        )
        .await;
    assert!(
        matches!(second, Err(StoreError::NotFound)),
        "a used code is refused: {second:?}"
    );
    assert!(!store.setup_code_valid(&code, at(7)).await.unwrap());
    assert!(store.tenant_by_name("second").await.is_err());

    let system = store.tenant_by_name("first").await.unwrap();
    assert!(system.is_system);
    assert!(
        matches!(store.delete_tenant(&system.id, T0).await, Err(StoreError::NotFound)),
        "system tenant is not deletable"
    );
}

async fn verified_domain_belongs_to_one_tenant(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    // B may not even add a.test while A has verified it, nor a name above or
    // below it (SEC-12: a host lies under one tenant's verified domains).
    for name in ["A.test", "x.a.test", "deep.x.a.test"] {
        assert!(
            matches!(store.add_domain(&b.id, name, "tok", T0).await, Err(StoreError::Conflict(m)) if m.contains("another organisation")),
            "{name}"
        );
    }
    // Unverified names may be shared; the first to be verified wins, and then
    // neither the same name nor an overlapping one verifies for another tenant.
    let claim = store.add_domain(&b.id, "Shared.test", "tok", T0).await.unwrap();
    assert_eq!(claim.name, "shared.test");
    assert!(!claim.verified);
    store.add_domain(&a.id, "shared.test", "tok3", T0).await.unwrap();
    store.add_domain(&a.id, "eu.shared.test", "tok4", T0).await.unwrap();
    store.verify_domain(&a.id, "eu.shared.test").await.unwrap();
    for name in ["shared.test"] {
        assert!(
            matches!(store.verify_domain(&b.id, name).await, Err(StoreError::Conflict(m)) if m.contains("overlaps eu.shared.test")),
            "{name}"
        );
    }
    assert!(!store.domain(&b.id, "shared.test").await.unwrap().verified);
    // Nor does a new tenant whose first domain overlaps one of A's.
    assert!(matches!(
        store
            .create_tenant_with_admin(
                tenant("c"),
                "x.a.test",
                NewUser::cloud("admin@x.a.test", "A", None),
                None,
                T0
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A new domain verifies; removing it works while unused, not while in use.
    store.add_domain(&a.id, "new.test", "tok2", T0).await.unwrap();
    store.verify_domain(&a.id, "new.test").await.unwrap();
    store
        .set_domain_auth_mode(&a.id, "new.test", DomainAuthMode::Passthrough)
        .await
        .unwrap();
    assert_eq!(
        store.domain(&a.id, "new.test").await.unwrap().auth_mode,
        DomainAuthMode::Passthrough
    );
    store
        .create_user(&a.id, NewUser::cloud("x@new.test", "X", None), T0)
        .await
        .unwrap();
    assert!(matches!(
        store.remove_domain(&a.id, "new.test").await,
        Err(StoreError::Conflict(_))
    ));
    store.remove_domain(&b.id, "shared.test").await.unwrap();
    assert_eq!(store.domains(&b.id).await.unwrap().len(), 1);
}

async fn a_host_name_is_claimed_by_one_tenant(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let a_group = store.default_connector_group(&a.id, T0).await.unwrap();
    let b_group = store.default_connector_group(&b.id, T0).await.unwrap();
    let wiki = store
        .create_app(
            &a.id,
            &app_spec("wiki", "apps.a.test", "/wiki/", &a_group.id),
            "c-wiki",
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        store.host_owner("apps.a.test").await.unwrap().as_deref(),
        Some(a.id.as_str())
    );
    // The store refuses B on the same name at any prefix or port, whatever the
    // caller checked before (a race between two tenants ends here).
    for host in ["apps.a.test", "apps.a.test:8443"] {
        let clash = store
            .create_app(&b.id, &app_spec("x", host, "/b/", &b_group.id), "c-x", T0)
            .await;
        assert!(
            matches!(&clash, Err(StoreError::Conflict(m)) if m.contains("another organisation")),
            "{host}: {clash:?}"
        );
    }
    let mine = store
        .create_app(&b.id, &app_spec("x", "x.b.test", "/", &b_group.id), "c-x", T0)
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_app(
                &b.id,
                &mine.id,
                &app_spec("x", "apps.a.test:8443", "/x/", &b_group.id),
                T0
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.app(&b.id, &mine.id).await.unwrap(), mine, "untouched");
    // A second app of A on the name keeps the claim when the first moves away;
    // the claim goes with the last one.
    let root = store
        .create_app(
            &a.id,
            &app_spec("root", "apps.a.test:8443", "/", &a_group.id),
            "c-root",
            T0,
        )
        .await
        .unwrap();
    store
        .update_app(&a.id, &wiki.id, &app_spec("wiki", "wiki.a.test", "/", &a_group.id), T0)
        .await
        .unwrap();
    assert_eq!(
        store.host_owner("apps.a.test").await.unwrap().as_deref(),
        Some(a.id.as_str())
    );
    store.delete_app(&a.id, &root.id).await.unwrap();
    assert_eq!(store.host_owner("apps.a.test").await.unwrap(), None);
    store
        .update_app(&b.id, &mine.id, &app_spec("x", "apps.a.test", "/x/", &b_group.id), T0)
        .await
        .unwrap();
    assert_eq!(
        store.host_owner("apps.a.test").await.unwrap().as_deref(),
        Some(b.id.as_str())
    );
    assert_eq!(store.host_owner("x.b.test").await.unwrap(), None, "released on move");
    // Apps from before claims existed: the oldest app of a name claims it.
    sqlx::query("DELETE FROM app_hosts")
        .execute(store.pool())
        .await
        .unwrap();
    store.claim_hosts_of_existing_apps().await.unwrap();
    store.claim_hosts_of_existing_apps().await.unwrap();
    assert_eq!(
        store.host_owner("apps.a.test").await.unwrap().as_deref(),
        Some(b.id.as_str())
    );
    assert_eq!(
        store.host_owner("wiki.a.test").await.unwrap().as_deref(),
        Some(a.id.as_str())
    );
    // The rules, through the store: A's host is not B's, and B's app on a name
    // under A's domain is a violation.
    let rules = HostRules::default();
    assert_eq!(store.host_refusal(&rules, &a.id, "wiki.a.test").await.unwrap(), None);
    assert!(matches!(
        store.host_refusal(&rules, &b.id, "wiki.a.test").await.unwrap(),
        Some(HostRefusal::NotVerified { .. })
    ));
    let found = store.host_violations(&rules, None).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].app.id, mine.id);
    // A domain with apps under it stays.
    store.add_domain(&a.id, "extra.test", "tok", T0).await.unwrap();
    store.verify_domain(&a.id, "extra.test").await.unwrap();
    let extra = store
        .create_app(
            &a.id,
            &app_spec("extra", "x.extra.test", "/", &a_group.id),
            "c-extra",
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.remove_domain(&a.id, "extra.test").await,
        Err(StoreError::Conflict(m)) if m.contains("extra")
    ));
    store.delete_app(&a.id, &extra.id).await.unwrap();
    store.remove_domain(&a.id, "extra.test").await.unwrap();
    // Deleting a tenant releases its names.
    store.delete_tenant(&b.id, T0).await.unwrap();
    assert_eq!(store.host_owner("apps.a.test").await.unwrap(), None);
}

async fn users_are_scoped_to_their_tenant(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let u = store
        .create_user(&a.id, NewUser::cloud(" Bob@A.test ", "Bob", Some("h1".into())), T0)
        .await
        .unwrap();
    assert_eq!(u.username, "bob@a.test");
    assert!(u.enabled);
    assert_eq!(store.user_by_username(&a.id, "BOB@a.test").await.unwrap().id, u.id);
    // Tenant B cannot see, change or delete A's user.
    assert!(matches!(store.user(&b.id, &u.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.user_by_username(&b.id, "bob@a.test").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_user(&b.id, &u.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_password_hash(&b.id, &u.id, "h2", T0).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .update_user(&b.id, &u.id, &UserUpdate::default(), T0)
            .await
            .is_err()
    );

    let dup = store
        .create_user(&a.id, NewUser::cloud("bob@a.test", "Bob 2", None), T0)
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    // The same name in another tenant is a different account.
    store
        .create_user(&b.id, NewUser::cloud("bob@a.test", "Other Bob", None), T0)
        .await
        .unwrap();

    let updated = store
        .update_user(
            &a.id,
            &u.id,
            &UserUpdate {
                display_name: Some("Robert".into()),
                email: Some(Some("r@a.test".into())),
                enabled: Some(false),
                mfa_required: Some(true),
            },
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            updated.display_name.as_str(),
            updated.email.as_deref(),
            updated.enabled,
            updated.mfa_required
        ),
        ("Robert", Some("r@a.test"), false, true)
    );
    assert_eq!(updated.updated_at, at(10));
    store.set_password_hash(&a.id, &u.id, "h2", T0).await.unwrap();
    assert_eq!(
        store.user(&a.id, &u.id).await.unwrap().password_hash.as_deref(),
        Some("h2")
    );
    assert_eq!(store.users(&a.id).await.unwrap().len(), 2);
    store.delete_user(&a.id, &u.id).await.unwrap();
    assert_eq!(store.users(&a.id).await.unwrap().len(), 1);
    // The Debug form of a user never shows its password hash or TOTP seed.
    let admin = store.users(&a.id).await.unwrap().remove(0);
    assert!(!format!("{admin:?}").contains("argon2"));
}

async fn groups_and_memberships(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, alice) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, bob) = tenant_with_admin(&store, "b", "b.test").await;
    let g = store.create_group(&a.id, "staff", "All staff", T0).await.unwrap();
    assert!(matches!(
        store.create_group(&a.id, "staff", "", T0).await,
        Err(StoreError::Conflict(_))
    ));
    store.add_member(&a.id, &g.id, &alice.id).await.unwrap();
    store.add_member(&a.id, &g.id, &alice.id).await.unwrap(); // idempotent
    // At once too: two sign-ins of one directory user add the same groups.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, a, g, alice) = (store.clone(), a.id.clone(), g.id.clone(), alice.id.clone());
            tokio::spawn(async move { store.add_member(&a, &g, &alice).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.group_members(&a.id, &g.id).await.unwrap().len(), 1);
    assert_eq!(store.user_groups(&a.id, &alice.id).await.unwrap(), vec![g.clone()]);
    // No cross-tenant membership, in either direction.
    assert!(matches!(
        store.add_member(&a.id, &g.id, &bob.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.add_member(&b.id, &g.id, &bob.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.group_members(&b.id, &g.id).await,
        Err(StoreError::NotFound)
    ));
    store.remove_member(&a.id, &g.id, &alice.id).await.unwrap();
    assert!(matches!(
        store.remove_member(&a.id, &g.id, &alice.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_group(&a.id, &g.id).await.unwrap();
    assert!(store.groups(&a.id).await.unwrap().is_empty());
}

async fn roles(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, admin) = tenant_with_admin(&store, "a", "a.test").await;
    let u = store
        .create_user(&a.id, NewUser::cloud("u@a.test", "U", None), T0)
        .await
        .unwrap();
    store
        .assign_role(&u.id, Role::ApplicationAdministrator, T0)
        .await
        .unwrap();
    store
        .assign_role(&u.id, Role::ApplicationAdministrator, T0)
        .await
        .unwrap();
    store
        .assign_role(&u.id, Role::HybridIdentityAdministrator, T0)
        .await
        .unwrap();
    assert_eq!(store.user_roles(&u.id).await.unwrap().len(), 2);
    assert_eq!(
        store
            .count_role_holders(&a.id, Role::GlobalAdministrator)
            .await
            .unwrap(),
        1
    );
    store.revoke_role(&u.id, Role::ApplicationAdministrator).await.unwrap();
    assert!(matches!(
        store.revoke_role(&u.id, Role::ApplicationAdministrator).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.user_roles(&u.id).await.unwrap(),
        vec![Role::HybridIdentityAdministrator]
    );
    // A disabled admin does not count as a holder.
    store.assign_role(&u.id, Role::GlobalAdministrator, T0).await.unwrap();
    assert_eq!(
        store
            .count_role_holders(&a.id, Role::GlobalAdministrator)
            .await
            .unwrap(),
        2
    );
    let disable = UserUpdate {
        enabled: Some(false),
        ..Default::default()
    };
    store.update_user(&a.id, &admin.id, &disable, T0).await.unwrap();
    assert_eq!(
        store
            .count_role_holders(&a.id, Role::GlobalAdministrator)
            .await
            .unwrap(),
        1
    );
}

async fn mfa_state(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    let codes = vec![b"c1".to_vec(), b"c2".to_vec()];
    store.enroll_totp(&u.id, b"sealed", 100, &codes, at(1)).await.unwrap();
    let got = store.user(&a.id, &u.id).await.unwrap();
    assert_eq!(got.totp_sealed.as_deref(), Some(&b"sealed"[..]));
    assert_eq!(got.totp_enrolled_at, Some(at(1)));
    // Steps only move forward: a replayed or older step is refused.
    assert!(!store.advance_totp_step(&u.id, 100).await.unwrap());
    assert!(!store.advance_totp_step(&u.id, 99).await.unwrap());
    assert!(store.advance_totp_step(&u.id, 101).await.unwrap());
    // Recovery codes work once.
    assert_eq!(store.recovery_codes_left(&u.id).await.unwrap(), 2);
    assert!(store.use_recovery_code(&u.id, b"c1", at(2)).await.unwrap());
    assert!(!store.use_recovery_code(&u.id, b"c1", at(3)).await.unwrap());
    assert!(!store.use_recovery_code(&u.id, b"nope", at(3)).await.unwrap());
    assert_eq!(store.recovery_codes_left(&u.id).await.unwrap(), 1);
    store.reset_mfa(&a.id, &u.id, at(4)).await.unwrap();
    let got = store.user(&a.id, &u.id).await.unwrap();
    assert!(got.totp_sealed.is_none() && got.totp_last_step.is_none());
    assert_eq!(store.recovery_codes_left(&u.id).await.unwrap(), 0);
}

fn client(id: &str) -> NewOAuthClient {
    NewOAuthClient {
        client_id: id.into(),
        name: "App".into(),
        secret_digest: Some(vec![1, 2, 3]),
        redirect_uris: vec!["https://app.test/cb".into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scopes: vec![],
        builtin: false,
    }
}

async fn oauth_clients(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let c = store.create_client(&a.id, &client("app"), T0).await.unwrap();
    assert!(c.is_confidential() && c.allows_grant("refresh_token") && !c.allows_grant("password"));
    assert_eq!(c.redirect_uris, vec!["https://app.test/cb".to_string()]);
    assert!(matches!(
        store.create_client(&a.id, &client("app"), T0).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(store.client(&b.id, "app").await, Err(StoreError::NotFound)));
    let builtin = NewOAuthClient {
        builtin: true,
        secret_digest: None,
        ..client("cli")
    };
    store.create_client(&a.id, &builtin, T0).await.unwrap();
    assert!(
        matches!(store.delete_client(&a.id, "cli").await, Err(StoreError::NotFound)),
        "builtin clients stay"
    );
    assert!(matches!(
        store.delete_client(&b.id, "app").await,
        Err(StoreError::NotFound)
    ));
    store.delete_client(&a.id, "app").await.unwrap();
    assert_eq!(store.clients(&a.id).await.unwrap().len(), 1);
}

fn code_for(t: &Tenant, u: &User, family: &str) -> AuthCode {
    AuthCode {
        tenant_id: t.id.clone(),
        client_id: "app".into(),
        user_id: u.id.clone(),
        session_id: None,
        redirect_uri: "https://app.test/cb".into(),
        scope: "openid".into(),
        nonce: Some("n".into()),
        code_challenge: "ch".into(),
        auth_time: T0,
        amr: "pwd".into(),
        family_id: family.into(),
        expires_at: at(60),
    }
}

fn refresh_for(t: &Tenant, u: &User, family: &str) -> RefreshToken {
    RefreshToken {
        family_id: family.into(),
        tenant_id: t.id.clone(),
        client_id: "app".into(),
        user_id: u.id.clone(),
        session_id: None,
        scope: "openid offline_access".into(),
        auth_time: T0,
        amr: "pwd".into(),
        expires_at: at(1000),
        family_expires_at: at(5000),
    }
}

async fn auth_code_is_single_use(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    store
        .create_auth_code(b"code", &code_for(&a, &u, "fam1"), T0)
        .await
        .unwrap();
    assert!(matches!(
        store.redeem_auth_code(&b.id, b"code", at(1)).await.unwrap(),
        CodeRedemption::Unknown
    ));
    let CodeRedemption::Redeemed(code) = store.redeem_auth_code(&a.id, b"code", at(1)).await.unwrap() else {
        panic!("first redemption must succeed")
    };
    assert_eq!(code.nonce.as_deref(), Some("n"));
    // Tokens issued from the code are revoked when the code is replayed.
    store
        .create_refresh_token(b"rt1", &refresh_for(&a, &u, "fam1"), at(1))
        .await
        .unwrap();
    assert!(matches!(
        store.redeem_auth_code(&a.id, b"code", at(2)).await.unwrap(),
        CodeRedemption::Replayed
    ));
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"rt1", b"rt2", at(1000), at(3))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    ));
    assert!(matches!(
        store.redeem_auth_code(&a.id, b"nope", at(2)).await.unwrap(),
        CodeRedemption::Unknown
    ));
}

async fn refresh_rotation_and_reuse_detection(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    store
        .create_refresh_token(b"r1", &refresh_for(&a, &u, "fam"), T0)
        .await
        .unwrap();
    // Another client cannot use it (and does not burn it).
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "other", b"r1", b"x", at(9999), at(1))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    ));
    let RefreshRotation::Rotated(old) = store
        .rotate_refresh_token(&a.id, "app", b"r1", b"r2", at(9999), at(1))
        .await
        .unwrap()
    else {
        panic!("rotation must succeed")
    };
    assert_eq!(old.family_id, "fam");
    // The new token is capped at the family's end and works once.
    let RefreshRotation::Rotated(second) = store
        .rotate_refresh_token(&a.id, "app", b"r2", b"r3", at(1000), at(2))
        .await
        .unwrap()
    else {
        panic!("second rotation must succeed")
    };
    assert_eq!(second.expires_at, at(5000), "capped at the family's end");
    // Reusing r2 (already rotated) revokes the family: r3 is dead too.
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"r2", b"r4", at(1000), at(3))
            .await
            .unwrap(),
        RefreshRotation::Reused
    ));
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"r3", b"r5", at(1000), at(4))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    ));
    // Expiry is enforced.
    store
        .create_refresh_token(b"e1", &refresh_for(&a, &u, "fam2"), T0)
        .await
        .unwrap();
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"e1", b"e2", at(9999), at(1001))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    ));
    // Revocation (RFC 7009) kills the family.
    store
        .create_refresh_token(b"v1", &refresh_for(&a, &u, "fam3"), T0)
        .await
        .unwrap();
    store.revoke_refresh_token(&a.id, "app", b"v1", at(1)).await.unwrap();
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"v1", b"v2", at(9999), at(2))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    ));
}

fn device_request<'a>(device: &'a [u8], user: &'a [u8], tenant_id: &'a str) -> NewDeviceCode<'a> {
    NewDeviceCode {
        device_code_digest: device,
        user_code_digest: user,
        tenant_id,
        client_id: "cli",
        scope: "openid",
        component_name: Some("gw-1"),
        requested_from: "192.0.2.7",
        interval_secs: 5,
        expires_at: at(600),
    }
}

/// A refresh token is looked up (so the request can be checked) without being
/// spent; only rotation spends it, and a spent one looked up again is reuse.
async fn refresh_lookup_spends_nothing(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    store
        .create_refresh_token(b"r1", &refresh_for(&a, &u, "fam"), T0)
        .await
        .unwrap();
    // Another client or tenant sees nothing.
    for (tenant, client) in [(&a.id, "other"), (&b.id, "app")] {
        assert!(matches!(
            store.refresh_token_for_use(tenant, client, b"r1", at(1)).await.unwrap(),
            RefreshLookup::Invalid
        ));
    }
    // Looking twice changes nothing: the grant both times, then it rotates.
    for _ in 0..2 {
        let RefreshLookup::Usable(grant) = store.refresh_token_for_use(&a.id, "app", b"r1", at(1)).await.unwrap()
        else {
            panic!("an unused token is usable")
        };
        assert_eq!(
            (grant.family_id.as_str(), grant.scope.as_str()),
            ("fam", "openid offline_access")
        );
    }
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"r1", b"r2", at(1000), at(2))
            .await
            .unwrap(),
        RefreshRotation::Rotated(_)
    ));
    // The spent token is reuse: the family (r2 too) is revoked.
    assert!(matches!(
        store.refresh_token_for_use(&a.id, "app", b"r1", at(3)).await.unwrap(),
        RefreshLookup::Reused
    ));
    assert!(matches!(
        store.refresh_token_for_use(&a.id, "app", b"r2", at(3)).await.unwrap(),
        RefreshLookup::Invalid
    ));
    // Expired: invalid, not reuse.
    store
        .create_refresh_token(b"e1", &refresh_for(&a, &u, "fam2"), T0)
        .await
        .unwrap();
    assert!(matches!(
        store
            .refresh_token_for_use(&a.id, "app", b"e1", at(1000))
            .await
            .unwrap(),
        RefreshLookup::Invalid
    ));
}

async fn device_code_lifecycle(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    store
        .create_device_code(&device_request(b"dev", b"user", &a.id), T0)
        .await
        .unwrap();
    assert!(
        store.device_code_by_user_code(&b.id, b"user", at(1)).await.is_err(),
        "not visible to tenant B"
    );
    let d = store.device_code_by_user_code(&a.id, b"user", at(1)).await.unwrap();
    assert_eq!(d.status, DeviceStatus::Pending);
    assert_eq!(
        (d.component_name.as_deref(), d.requested_from.as_str(), d.created_at),
        (Some("gw-1"), "192.0.2.7", T0),
        "what the approval page names is kept"
    );
    store.record_device_poll(b"dev", 10, at(2)).await.unwrap();
    let d = store.device_code(&a.id, b"dev").await.unwrap();
    assert_eq!((d.interval_secs, d.last_poll_at), (10, Some(at(2))));
    assert!(
        !store.consume_device_code(b"dev").await.unwrap(),
        "pending cannot be consumed"
    );
    assert!(
        store
            .decide_device_code(b"dev", Some((&u.id, at(3), "pwd otp")), at(3))
            .await
            .unwrap()
    );
    assert!(
        !store.decide_device_code(b"dev", None, at(4)).await.unwrap(),
        "decided once"
    );
    assert!(
        store.device_code_by_user_code(&a.id, b"user", at(4)).await.is_err(),
        "no longer pending"
    );
    assert!(store.consume_device_code(b"dev").await.unwrap());
    assert!(!store.consume_device_code(b"dev").await.unwrap(), "consumed once");
    // Expired requests cannot be approved.
    store
        .create_device_code(&device_request(b"dev2", b"user2", &a.id), T0)
        .await
        .unwrap();
    assert!(
        !store
            .decide_device_code(b"dev2", Some((&u.id, at(700), "pwd")), at(700))
            .await
            .unwrap()
    );
}

async fn flows_expire(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    store.create_flow(b"f", &a.id, "{}", T0, at(600)).await.unwrap();
    assert_eq!(store.flow(b"f", &a.id, at(1)).await.unwrap().data, "{}");
    assert!(store.flow(b"f", &b.id, at(1)).await.is_err(), "bound to its tenant");
    store.update_flow(b"f", "{\"x\":1}").await.unwrap();
    assert_eq!(store.flow(b"f", &a.id, at(1)).await.unwrap().data, "{\"x\":1}");
    assert!(matches!(
        store.flow(b"f", &a.id, at(600)).await,
        Err(StoreError::NotFound)
    ));
    store.delete_flow(b"f").await.unwrap();
    assert!(matches!(store.update_flow(b"f", "{}").await, Err(StoreError::NotFound)));
}

async fn sessions_end_with_their_tokens(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let s = store
        .create_session(b"cookie", &a.id, &u.id, T0, None, "pwd", T0, at(3600))
        .await
        .unwrap();
    assert_eq!(store.session_by_cookie(b"cookie", &a.id, at(1)).await.unwrap(), s);
    assert!(store.session_by_cookie(b"cookie", &b.id, at(1)).await.is_err());
    assert!(
        store.session_by_cookie(b"cookie", &a.id, at(3600)).await.is_err(),
        "expired"
    );
    store.mark_session_mfa(&s.id, "pwd otp", at(2)).await.unwrap();
    assert_eq!(store.session(&a.id, &s.id, at(3)).await.unwrap().mfa_at, Some(at(2)));
    let rt = RefreshToken {
        session_id: Some(s.id.clone()),
        ..refresh_for(&a, &u, "f")
    };
    store.create_refresh_token(b"r", &rt, T0).await.unwrap();
    store.end_session(&a.id, &s.id, at(5)).await.unwrap();
    assert!(store.session(&a.id, &s.id, at(6)).await.is_err());
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"r", b"r2", at(999), at(6))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    ));

    let s2 = store
        .create_session(b"c2", &a.id, &u.id, T0, None, "pwd", T0, at(3600))
        .await
        .unwrap();
    store
        .create_refresh_token(b"r3", &refresh_for(&a, &u, "g"), T0)
        .await
        .unwrap();
    store.end_user_sessions(&a.id, &u.id, at(7)).await.unwrap();
    assert!(store.session(&a.id, &s2.id, at(8)).await.is_err());
    assert!(matches!(
        store
            .rotate_refresh_token(&a.id, "app", b"r3", b"r4", at(999), at(8))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    ));
}

fn key(kid: &str) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        alg: "RS256".into(),
        private_sealed: vec![9; 16],
        public_jwk: format!("{{\"kid\":\"{kid}\"}}"),
        created_at: T0,
        retired_at: None,
        publish_until: None,
    }
}

async fn signing_key_rotation(backend: Backend) {
    let (_db, store) = store(backend).await;
    assert!(store.active_signing_key().await.unwrap().is_none());
    store.rotate_signing_key(&key("k1"), at(0), T0).await.unwrap();
    store.rotate_signing_key(&key("k2"), at(700), at(100)).await.unwrap();
    assert_eq!(store.active_signing_key().await.unwrap().unwrap().kid, "k2");
    let kids = |keys: Vec<SigningKeyRecord>| keys.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert_eq!(
        kids(store.published_signing_keys(at(699)).await.unwrap()),
        vec!["k2", "k1"]
    );
    assert_eq!(
        kids(store.published_signing_keys(at(700)).await.unwrap()),
        vec!["k2"],
        "retired key leaves the JWKS"
    );
    assert!(
        !format!("{:?}", key("k3")).contains("9, 9"),
        "Debug hides the sealed key"
    );
}

async fn lockout_counters(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    let fresh = store
        .lockout_state(&a.id, "x@a.test", LocationClass::Unfamiliar)
        .await
        .unwrap();
    assert_eq!(fresh.failures, 0);
    let st = LockoutState {
        failures: 3,
        lockout_count: 1,
        locked_until: at(60),
        last_failure_at: at(1),
    };
    store
        .put_lockout_state(&a.id, "x@a.test", LocationClass::Unfamiliar, &st)
        .await
        .unwrap();
    store
        .put_lockout_state(&a.id, "x@a.test", LocationClass::Unfamiliar, &st)
        .await
        .unwrap();
    assert_eq!(
        store
            .lockout_state(&a.id, "x@a.test", LocationClass::Unfamiliar)
            .await
            .unwrap(),
        st
    );
    assert_eq!(
        store
            .lockout_state(&a.id, "x@a.test", LocationClass::Familiar)
            .await
            .unwrap()
            .failures,
        0,
        "counted apart"
    );
    assert!(!store.is_familiar_network(&u.id, "10.0.0.0/24", T0).await.unwrap());
    store.remember_network(&u.id, "10.0.0.0/24", at(10)).await.unwrap();
    store.remember_network(&u.id, "10.0.0.0/24", at(20)).await.unwrap();
    assert!(store.is_familiar_network(&u.id, "10.0.0.0/24", at(15)).await.unwrap());
    assert!(
        !store.is_familiar_network(&u.id, "10.0.0.0/24", at(20)).await.unwrap(),
        "older than the window"
    );

    // All of it in one read: the network, and both classes' counters.
    let familiar = LockoutState {
        failures: 1,
        lockout_count: 0,
        locked_until: at(0),
        last_failure_at: at(5),
    };
    store
        .put_lockout_state(&a.id, "x@a.test", LocationClass::Familiar, &familiar)
        .await
        .unwrap();
    let context = store
        .lockout_context(&a.id, "x@a.test", Some(&u.id), "10.0.0.0/24")
        .await
        .unwrap();
    assert_eq!(
        context,
        LockoutContext {
            network_seen: Some(at(20)),
            familiar,
            unfamiliar: st,
            directory_groups: Vec::new(),
        }
    );
    let elsewhere = store
        .lockout_context(&a.id, "x@a.test", Some(&u.id), "192.0.2.0/24")
        .await
        .unwrap();
    assert_eq!(elsewhere.network_seen, None);
    let no_user = store
        .lockout_context(&a.id, "nobody@a.test", None, "10.0.0.0/24")
        .await
        .unwrap();
    assert_eq!(
        no_user,
        LockoutContext {
            network_seen: None,
            familiar: LockoutState::CLEAN,
            unfamiliar: LockoutState::CLEAN,
            directory_groups: Vec::new(),
        }
    );
    let other_tenant = store
        .lockout_context("another-tenant", "x@a.test", None, "10.0.0.0/24")
        .await
        .unwrap();
    assert_eq!(other_tenant.unfamiliar, LockoutState::CLEAN, "counters are per tenant");
}

/// What a password check reads before it starts, in one statement: the
/// account by its (normalized) name, and the smart-lockout context the two
/// reads it replaces gave, for an account with and without groups, counters,
/// a familiar network; for a name with no account; and in another tenant.
async fn password_check_reads_account_and_lockout_together(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let other_tenant = tenant_with_admin(&store, "b", "b.test").await.0;
    let alice = store
        .upsert_directory_user(&a.id, "guid-7", "alice@a.test", "Alice", None, at(3))
        .await
        .unwrap();
    let network = "10.0.0.0/24";
    let clean = LockoutContext {
        network_seen: None,
        familiar: LockoutState::CLEAN,
        unfamiliar: LockoutState::CLEAN,
        directory_groups: Vec::new(),
    };
    let two_reads = |username: &'static str, user_id: Option<String>| {
        let store = store.clone();
        let tenant = a.id.clone();
        async move {
            let user = match store.user_by_username(&tenant, username).await {
                Ok(u) => Some(u),
                Err(StoreError::NotFound) => None,
                Err(e) => panic!("{e}"),
            };
            let mut context = store
                .lockout_context(&tenant, username, user_id.as_deref(), network)
                .await
                .unwrap();
            context.directory_groups.sort();
            (user, context)
        }
    };
    let one_read = |tenant: String, username: &'static str| {
        let store = store.clone();
        async move {
            let (user, mut context) = store
                .user_with_lockout_context(&tenant, username, network)
                .await
                .unwrap();
            context.directory_groups.sort();
            (user, context)
        }
    };

    // An account with nothing else: one row, clean counters.
    let (user, context) = one_read(a.id.clone(), "alice@a.test").await;
    assert_eq!(user.as_ref(), Some(&alice), "every column of the account");
    assert_eq!(context, clean);
    assert_eq!((user, context), two_reads("alice@a.test", Some(alice.id.clone())).await);

    // Counters of both classes, a familiar network, directory groups and a
    // cloud group (not among the directory's): the same as the two reads.
    let familiar = LockoutState {
        failures: 1,
        lockout_count: 0,
        locked_until: at(0),
        last_failure_at: at(5),
    };
    let unfamiliar = LockoutState {
        failures: 2,
        lockout_count: 1,
        locked_until: at(60),
        last_failure_at: at(7),
    };
    for (class, state) in [
        (LocationClass::Familiar, &familiar),
        (LocationClass::Unfamiliar, &unfamiliar),
    ] {
        store
            .put_lockout_state(&a.id, "alice@a.test", class, state)
            .await
            .unwrap();
    }
    store.remember_network(&alice.id, network, at(20)).await.unwrap();
    store
        .set_directory_groups(&a.id, &alice.id, &["Staff".into(), "Admins".into()], T0)
        .await
        .unwrap();
    let cloud = store.create_group(&a.id, "cloud-only", "", T0).await.unwrap();
    store.add_member(&a.id, &cloud.id, &alice.id).await.unwrap();
    let (user, context) = one_read(a.id.clone(), "alice@a.test").await;
    assert_eq!(user.as_ref(), Some(&alice));
    assert_eq!(
        context,
        LockoutContext {
            network_seen: Some(at(20)),
            familiar,
            unfamiliar,
            directory_groups: vec!["Admins".into(), "Staff".into()],
        },
        "one row per membership, each group once, the cloud group left out"
    );
    assert_eq!((user, context), two_reads("alice@a.test", Some(alice.id.clone())).await);
    // The name as typed is normalized for the account, as by `user_by_username`.
    let (typed, _) = store
        .user_with_lockout_context(&a.id, "Alice@A.test", network)
        .await
        .unwrap();
    assert_eq!(typed.as_ref(), Some(&alice));

    // A name without an account still has counters (unknown names are counted
    // like real ones), and no network or groups.
    store
        .put_lockout_state(&a.id, "ghost@a.test", LocationClass::Unfamiliar, &unfamiliar)
        .await
        .unwrap();
    let (user, context) = one_read(a.id.clone(), "ghost@a.test").await;
    assert_eq!(user, None);
    assert_eq!(
        context,
        LockoutContext {
            unfamiliar,
            ..clean.clone()
        }
    );
    assert_eq!((user, context), two_reads("ghost@a.test", None).await);

    // Another tenant sees neither the account nor its counters.
    let (user, context) = one_read(other_tenant.id.clone(), "alice@a.test").await;
    assert_eq!(user, None);
    assert_eq!(context, clean);
}

/// Smart lockout's reservations (PTA-9): a burst of concurrent attempts is granted
/// at most the threshold, failures lock the account in the same statement,
/// reservations of a crashed instance lapse, and a late settlement gives back
/// nothing it no longer holds.
async fn lockout_reservations_hold_under_concurrency(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let key = LockoutKey {
        tenant_id: a.id.clone(),
        account: "x@a.test".into(),
        location: LocationClass::Unfamiliar,
    };
    let rules = LockoutRules {
        threshold: 10,
        forget_before: at(-86_400),
        period_secs: 60,
        max_doublings: 6,
    };
    let lapse = |now: UnixTime| UnixTime::from_secs(now.secs() + 120);

    // 50 at once, on a row that does not exist yet: exactly the threshold is granted.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (store, key) = (store.clone(), key.clone());
        burst.spawn(async move { store.reserve_lockout_attempt(&key, &rules, at(0), lapse(at(0))).await });
    }
    let answers: Vec<_> = burst.join_all().await.into_iter().map(Result::unwrap).collect();
    let granted = answers
        .iter()
        .filter(|a| matches!(a, LockoutReservation::Granted(_)))
        .count();
    assert_eq!(granted, 10, "{answers:?}");
    assert!(
        answers.iter().all(|a| match a {
            LockoutReservation::Granted(s) | LockoutReservation::Refused(s) => s.locked_until <= at(0),
        }),
        "refused as busy, not locked"
    );

    // The ten fail together: exactly one of them locks the account.
    let mut settle = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (store, key) = (store.clone(), key.clone());
        settle.spawn(async move { store.settle_lockout_failure(&key, &rules, at(1), true).await });
    }
    let locked: Vec<_> = settle.join_all().await.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(locked, vec![at(61)], "one failure locks, for the first period");
    let state = store.lockout_state(&a.id, "x@a.test", key.location).await.unwrap();
    assert_eq!((state.failures, state.lockout_count), (0, 1));
    match store
        .reserve_lockout_attempt(&key, &rules, at(2), lapse(at(2)))
        .await
        .unwrap()
    {
        LockoutReservation::Refused(s) => assert_eq!(s.locked_until, at(61)),
        other => panic!("locked, yet {other:?}"),
    }
    let familiar = LockoutKey {
        location: LocationClass::Familiar,
        ..key.clone()
    };
    assert!(
        matches!(
            store
                .reserve_lockout_attempt(&familiar, &rules, at(2), lapse(at(2)))
                .await
                .unwrap(),
            LockoutReservation::Granted(_)
        ),
        "familiar places are counted apart"
    );
    store.release_lockout_attempt(&familiar).await.unwrap();

    // After the period: ten reservations that are never settled (a crashed
    // instance) hold the account until they lapse, then count for nothing.
    for _ in 0..10 {
        let r = store
            .reserve_lockout_attempt(&key, &rules, at(61), lapse(at(61)))
            .await
            .unwrap();
        assert!(matches!(r, LockoutReservation::Granted(_)), "{r:?}");
    }
    assert!(matches!(
        store.reserve_lockout_attempt(&key, &rules, at(100), lapse(at(100))).await.unwrap(),
        LockoutReservation::Refused(s) if s.locked_until <= at(100)
    ));
    let later = at(61 + 121);
    assert!(matches!(
        store
            .reserve_lockout_attempt(&key, &rules, later, lapse(later))
            .await
            .unwrap(),
        LockoutReservation::Granted(_)
    ));
    // A lapsed attempt settling late counts its failure but gives back nothing:
    // the one live reservation stays held, so nine more fit, not ten.
    assert_eq!(
        store.settle_lockout_failure(&key, &rules, later, false).await.unwrap(),
        None
    );
    for _ in 0..8 {
        let r = store
            .reserve_lockout_attempt(&key, &rules, later, lapse(later))
            .await
            .unwrap();
        assert!(matches!(r, LockoutReservation::Granted(_)), "{r:?}");
    }
    assert!(matches!(
        store
            .reserve_lockout_attempt(&key, &rules, later, lapse(later))
            .await
            .unwrap(),
        LockoutReservation::Refused(_)
    ));

    // Nine live reservations fail: the second lockout lasts twice as long.
    let mut until = None;
    for _ in 0..9 {
        until = until.or(store.settle_lockout_failure(&key, &rules, later, true).await.unwrap());
    }
    assert_eq!(until, Some(UnixTime::from_secs(later.secs() + 120)));
    assert_eq!(
        store
            .lockout_state(&a.id, "x@a.test", key.location)
            .await
            .unwrap()
            .lockout_count,
        2
    );

    // A right password forgets failures and lockouts; a day without failures too.
    let free = UnixTime::from_secs(later.secs() + 121);
    assert!(matches!(
        store.reserve_lockout_attempt(&key, &rules, free, lapse(free)).await.unwrap(),
        LockoutReservation::Granted(s) if s.lockout_count == 2
    ));
    store.settle_lockout_success(&key, true).await.unwrap();
    let state = store.lockout_state(&a.id, "x@a.test", key.location).await.unwrap();
    assert_eq!((state.failures, state.lockout_count), (0, 0));
    let r = store
        .reserve_lockout_attempt(&key, &rules, free, lapse(free))
        .await
        .unwrap();
    assert!(matches!(r, LockoutReservation::Granted(_)));
    assert_eq!(
        store.settle_lockout_failure(&key, &rules, free, true).await.unwrap(),
        None
    );
    let next_day = LockoutRules {
        forget_before: free,
        ..rules
    };
    let day = UnixTime::from_secs(free.secs() + 86_400);
    assert!(matches!(
        store.reserve_lockout_attempt(&key, &next_day, day, lapse(day)).await.unwrap(),
        LockoutReservation::Granted(s) if s.failures == 0
    ));
    let other_tenant = LockoutKey {
        tenant_id: "another-tenant".into(),
        ..key.clone()
    };
    assert_eq!(
        store
            .lockout_state(&other_tenant.tenant_id, &other_tenant.account, other_tenant.location)
            .await
            .unwrap(),
        LockoutState::CLEAN,
        "nothing leaks to another tenant"
    );
}

/// Administrators' changes at the same moment each get their audit entry: on
/// SQLite a deferred transaction that read the chain's tail and then wrote
/// failed at once ("database is locked") when another append landed in
/// between; write transactions now take the lock at BEGIN and wait.
async fn audit_appends_at_once_all_land(backend: Backend) {
    let (_db, store) = store(backend).await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..15 {
                    let e = NewAuditEntry {
                        tenant_id: Some("t1".into()),
                        actor: format!("user:{task}"),
                        action: "group.create".into(),
                        target: format!("group:{task}-{i}"),
                        detail: serde_json::json!({}),
                    };
                    store.append_audit(&e, at(i)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let verified = store.verify_audit_chain().await.unwrap();
    assert_eq!(verified.entries, 120);
    assert_eq!(verified.first_broken_seq, None);
}

async fn audit_chain_detects_tampering(backend: Backend) {
    let (_db, store) = store(backend).await;
    for i in 0..5 {
        let e = NewAuditEntry {
            tenant_id: Some("t1".into()),
            actor: "user:1".into(),
            action: "user.create".into(),
            target: format!("user:{i}"),
            detail: serde_json::json!({ "i": i }),
        };
        assert_eq!(store.append_audit(&e, at(i)).await.unwrap(), i + 1);
    }
    let ok = store.verify_audit_chain().await.unwrap();
    assert_eq!(
        ok,
        AuditVerification {
            entries: 5,
            first_broken_seq: None,
            problem: None,
        }
    );
    assert_eq!(store.audit_entries("t1", 2, 10).await.unwrap().len(), 3);
    assert!(store.audit_entries("t2", 0, 10).await.unwrap().is_empty());

    // The database refuses changes to the log...
    let update = sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
        .execute(store.pool())
        .await;
    assert!(update.is_err(), "audit_log must be append-only");
    assert!(
        sqlx::query("DELETE FROM audit_log WHERE seq = 3")
            .execute(store.pool())
            .await
            .is_err()
    );

    // ...and someone who bypasses that (as the table owner) is caught by the chain.
    let (disable, enable) = match backend {
        Backend::Sqlite => ("DROP TRIGGER audit_log_no_update", "SELECT 1"),
        Backend::Postgres => (
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
            "ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update",
        ),
    };
    sqlx::query(disable).execute(store.pool()).await.unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(enable).execute(store.pool()).await.unwrap();
    let broken = store.verify_audit_chain().await.unwrap();
    assert_eq!(broken.first_broken_seq, Some(3));
    assert_eq!(broken.problem, Some(AuditBreak::Content));
}

/// Appends `n` audit entries of tenant `t1`.
async fn append_audit_entries(store: &Store, n: i64) {
    for i in 0..n {
        let e = NewAuditEntry {
            tenant_id: Some("t1".into()),
            actor: "user:1".into(),
            action: "user.create".into(),
            target: format!("user:{i}"),
            detail: serde_json::json!({ "i": i }),
        };
        store.append_audit(&e, at(i)).await.unwrap();
    }
}

/// Runs `sql` with the audit log's append-only trigger out of the way, as
/// someone with the table owner's rights could.
async fn tamper(store: &Store, backend: Backend, sql: &'static str) {
    let (disable, enable) = match backend {
        Backend::Sqlite => (
            "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete",
            "SELECT 1",
        ),
        Backend::Postgres => (
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
            "ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update",
        ),
    };
    sqlx::raw_sql(disable).execute(store.pool()).await.unwrap();
    sqlx::raw_sql(sql).execute(store.pool()).await.unwrap();
    sqlx::raw_sql(enable).execute(store.pool()).await.unwrap();
}

async fn audit_chain_names_what_broke(backend: Backend) {
    // A removed entry: the chain names the missing one.
    let (_db, store) = store(backend).await;
    append_audit_entries(&store, 5).await;
    tamper(&store, backend, "DELETE FROM audit_log WHERE seq = 2").await;
    let v = store.verify_audit_chain().await.unwrap();
    assert_eq!(v.first_broken_seq, Some(2));
    assert_eq!(v.problem, Some(AuditBreak::Missing { next_found: 3 }));

    // An entry whose link to the one before was rewritten.
    let (_db2, store) = self::store(backend).await;
    append_audit_entries(&store, 5).await;
    tamper(&store, backend, "UPDATE audit_log SET prev_hash = hash WHERE seq = 4").await;
    let v = store.verify_audit_chain().await.unwrap();
    assert_eq!(v.first_broken_seq, Some(4));
    assert_eq!(v.problem, Some(AuditBreak::Link));
    assert!(
        v.problem.unwrap().to_string().contains("link"),
        "{}",
        v.problem.unwrap()
    );
}

async fn signin_log(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    for (i, outcome) in [SigninOutcome::BadCredentials, SigninOutcome::Success]
        .into_iter()
        .enumerate()
    {
        store
            .log_signin(&SigninEvent {
                id: String::new(),
                tenant_id: a.id.clone(),
                at: at(i as i64),
                username: u.username.clone(),
                user_id: Some(u.id.clone()),
                client_id: Some("app".into()),
                ip: "192.0.2.1".into(),
                outcome,
                detail: String::new(),
            })
            .await
            .unwrap();
    }
    let events = store.signins(&a.id, T0, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.outcome).collect::<Vec<_>>(),
        vec![SigninOutcome::BadCredentials, SigninOutcome::Success]
    );
    assert_eq!(store.signins(&a.id, at(1), 10).await.unwrap().len(), 1);
}

/// A sign-in event of `tenant` at `secs`.
fn signin_at(tenant: &Tenant, username: &str, secs: i64) -> SigninEvent {
    SigninEvent {
        id: String::new(),
        tenant_id: tenant.id.clone(),
        at: at(secs),
        username: username.into(),
        user_id: None,
        client_id: None,
        ip: "192.0.2.1".into(),
        outcome: SigninOutcome::BadCredentials,
        detail: String::new(),
    }
}

async fn export_follows_both_logs_in_order(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    // Timestamps out of order on purpose: the log's order is the order of commits.
    for (tenant, name, secs) in [(&a, "one", 50), (&b, "two", 10), (&a, "three", 30)] {
        store.log_signin(&signin_at(tenant, name, secs)).await.unwrap();
    }
    let all = store.signins_after(0, 10).await.unwrap();
    let seen: Vec<(i64, &str, Option<&str>)> = all
        .iter()
        .map(|s| (s.seq, s.event.username.as_str(), s.tenant_name.as_deref()))
        .collect();
    assert_eq!(
        seen,
        vec![(1, "one", Some("a")), (2, "two", Some("b")), (3, "three", Some("a"))]
    );
    let after_one = store.signins_after(1, 1).await.unwrap();
    assert_eq!(after_one.len(), 1, "the limit holds");
    assert_eq!(after_one[0].event.username, "two");

    // Concurrent writers still get one number each, without gaps.
    let mut writers = Vec::new();
    for i in 0..20 {
        let (store, a) = (store.clone(), a.clone());
        writers.push(tokio::spawn(async move {
            store.log_signin(&signin_at(&a, &format!("p{i}"), i)).await.unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seqs: Vec<i64> = store
        .signins_after(3, 100)
        .await
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(seqs, (4..=23).collect::<Vec<_>>());

    store
        .append_audit(
            &NewAuditEntry {
                tenant_id: Some(b.id.clone()),
                actor: "system".into(),
                action: "tenant.update".into(),
                target: format!("tenant:{}", b.id),
                detail: serde_json::json!({}),
            },
            T0,
        )
        .await
        .unwrap();
    let audit = store.audit_after(0, 100).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(last.entry.action, "tenant.update");
    assert_eq!(last.tenant_name.as_deref(), Some("b"));
    assert!(store.audit_after(last.entry.seq, 100).await.unwrap().is_empty());
}

async fn export_cursor_claims_each_event_once(backend: Backend) {
    let (_db, store) = store(backend).await;
    assert_eq!(store.export_cursor("syslog", ExportStream::Signins).await.unwrap(), 0);
    assert!(
        store
            .advance_export_cursor("syslog", ExportStream::Signins, 0, 5, T0)
            .await
            .unwrap()
    );
    // A second instance that read from 0 too loses the race.
    assert!(
        !store
            .advance_export_cursor("syslog", ExportStream::Signins, 0, 7, T0)
            .await
            .unwrap()
    );
    assert_eq!(store.export_cursor("syslog", ExportStream::Signins).await.unwrap(), 5);
    // Cursors of other streams and sinks are their own.
    assert_eq!(store.export_cursor("syslog", ExportStream::Audit).await.unwrap(), 0);
    assert_eq!(store.export_cursor("webhook", ExportStream::Signins).await.unwrap(), 0);

    // Many claims racing from the same position: exactly one wins.
    let mut racers = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            store
                .advance_export_cursor("syslog", ExportStream::Signins, 5, 10 + i, T0)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1);
}

async fn purge_expired_records(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, u) = tenant_with_admin(&store, "a", "a.test").await;
    store.create_flow(b"f", &a.id, "{}", T0, at(10)).await.unwrap();
    store.create_auth_code(b"c", &code_for(&a, &u, "f"), T0).await.unwrap();
    store.create_flow(b"g", &a.id, "{}", T0, at(10_000)).await.unwrap();
    let removed = store.purge_expired(at(100)).await.unwrap();
    assert_eq!(removed, 2);
    assert!(store.flow(b"g", &a.id, at(100)).await.is_ok());
}

fn cert(serial: &str, issued: i64, days: i64) -> CertRecord {
    CertRecord {
        serial: serial.into(),
        public_key: serial.as_bytes().to_vec(),
        key_id: format!("kid-{serial}"),
        issued_at: at(issued),
        not_after: at(issued + days * 86_400),
    }
}

fn new_component(t: &Tenant, kind: ComponentKind, id: &str, serial: &str, group: Option<&str>) -> NewComponent {
    NewComponent {
        id: id.into(),
        tenant_id: t.id.clone(),
        kind,
        name: format!("host-{id}"),
        group_id: group.map(str::to_owned),
        cert: cert(serial, 0, 365),
        version: "0.1.0".into(),
        registered_by: "user:x".into(),
    }
}

async fn certificate_authorities(backend: Backend) {
    let (_db, store) = store(backend).await;
    assert!(store.certificate_authority("agents").await.unwrap().is_none());
    store
        .insert_certificate_authority("agents", "PEM", b"sealed", T0)
        .await
        .unwrap();
    assert!(
        matches!(
            store.insert_certificate_authority("agents", "OTHER", b"x", T0).await,
            Err(StoreError::Conflict(_))
        ),
        "a second instance does not overwrite the first CA"
    );
    let ca = store.certificate_authority("agents").await.unwrap().unwrap();
    assert_eq!((ca.cert_pem.as_str(), ca.crl_number), ("PEM", 0));
    assert!(!format!("{ca:?}").contains("sealed"));
    assert_eq!(store.next_crl_number("agents").await.unwrap(), 1);
    assert_eq!(store.next_crl_number("agents").await.unwrap(), 2);
}

async fn connector_groups(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let d = store.default_connector_group(&a.id, T0).await.unwrap();
    assert!(d.is_default);
    assert_eq!(
        store.default_connector_group(&a.id, T0).await.unwrap().id,
        d.id,
        "made once"
    );
    let eu = store
        .create_connector_group(&a.id, "eu", "Europe", false, T0)
        .await
        .unwrap();
    assert!(matches!(
        store.create_connector_group(&a.id, "eu", "", false, T0).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store.connector_group(&b.id, &eu.id).await.is_err(),
        "not visible to tenant B"
    );
    assert_eq!(
        store.bump_group_config(&a.id, &eu.id).await.unwrap(),
        eu.config_version + 1
    );
    assert!(matches!(
        store.bump_group_config(&b.id, &eu.id).await,
        Err(StoreError::NotFound)
    ));
    store
        .register_component(
            &new_component(&a, ComponentKind::Connector, "c1", "01", Some(&d.id)),
            T0,
        )
        .await
        .unwrap();
    store.move_connector(&a.id, "c1", &eu.id).await.unwrap();
    assert_eq!(
        store.component(&a.id, "c1").await.unwrap().group_id.as_deref(),
        Some(eu.id.as_str())
    );
    assert!(
        matches!(
            store.delete_connector_group(&a.id, &eu.id).await,
            Err(StoreError::Conflict(_))
        ),
        "not while it has connectors"
    );
    assert!(
        matches!(
            store.delete_connector_group(&a.id, &d.id).await,
            Err(StoreError::Conflict(_))
        ),
        "never the default"
    );
    store.move_connector(&a.id, "c1", &d.id).await.unwrap();
    store.delete_connector_group(&a.id, &eu.id).await.unwrap();
    assert_eq!(store.connector_groups(&a.id).await.unwrap().len(), 1);
}

async fn component_lifecycle_and_revocation(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let c = store
        .register_component(&new_component(&a, ComponentKind::Connector, "c1", "aa01", None), T0)
        .await
        .unwrap();
    assert_eq!(c.kind, ComponentKind::Connector);
    assert!(store.component(&b.id, "c1").await.is_err());
    let (found, status) = store.component_by_serial("aa01", at(1)).await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), status), ("c1", SerialStatus::Current));
    assert!(store.component_by_serial("ffff", at(1)).await.unwrap().is_none());
    store
        .touch_component("c1", "192.0.2.1", Some("0.2.0"), at(5))
        .await
        .unwrap();
    let c = store.component(&a.id, "c1").await.unwrap();
    assert_eq!(
        (c.last_seen_at, c.last_seen_ip.as_deref(), c.version.as_str()),
        (Some(at(5)), Some("192.0.2.1"), "0.2.0")
    );

    // Renewal with a grace period: both serials work until the grace ends.
    assert!(
        store
            .replace_certificate("c1", "aa01", &cert("aa02", 100, 365), Some(at(200)), at(100))
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_certificate("c1", "aa01", &cert("aa03", 100, 365), None, at(100))
            .await
            .unwrap(),
        "stale renewal refused"
    );
    assert_eq!(
        store.component_by_serial("aa02", at(150)).await.unwrap().unwrap().1,
        SerialStatus::Current
    );
    assert_eq!(
        store.component_by_serial("aa01", at(150)).await.unwrap().unwrap().1,
        SerialStatus::Previous
    );
    assert!(
        store.component_by_serial("aa01", at(200)).await.unwrap().is_none(),
        "grace over"
    );
    assert_eq!(store.expire_previous_certificates(at(200)).await.unwrap(), 1);
    let revoked: Vec<String> = store
        .revoked_certificates("connectors", at(200))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.serial)
        .collect();
    assert_eq!(revoked, vec!["aa01"]);

    // Renewal without grace (agents) revokes at once.
    store
        .register_component(&new_component(&a, ComponentKind::Agent, "g1", "bb01", None), T0)
        .await
        .unwrap();
    assert!(
        store
            .replace_certificate("g1", "bb01", &cert("bb02", 10, 180), None, at(10))
            .await
            .unwrap()
    );
    assert!(store.component_by_serial("bb01", at(11)).await.unwrap().is_none());
    let agents_crl = store.revoked_certificates("agents", at(11)).await.unwrap();
    assert_eq!(agents_crl.len(), 1);
    assert_eq!(agents_crl[0].reason, "superseded");

    // Deletion revokes at once; the CRL keeps it until the certificate would have expired.
    assert!(matches!(
        store.delete_component(&b.id, "c1", "removed", at(300)).await,
        Err(StoreError::NotFound)
    ));
    store.delete_component(&a.id, "c1", "removed", at(300)).await.unwrap();
    assert!(store.component_by_serial("aa02", at(301)).await.unwrap().is_none());
    let crl = store.revoked_certificates("connectors", at(301)).await.unwrap();
    assert!(crl.iter().any(|r| r.serial == "aa02" && r.reason == "removed"));
    assert!(
        store
            .revoked_certificates("connectors", at(100 + 366 * 86_400))
            .await
            .unwrap()
            .is_empty(),
        "expired entries leave the CRL"
    );

    // Expired components are found for removal.
    assert_eq!(store.expired_components(at(181 * 86_400)).await.unwrap().len(), 1);
    assert!(store.expired_components(at(100)).await.unwrap().is_empty());
}

async fn renewal_lease_one_at_a_time(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let agent = ComponentKind::Agent;
    assert!(
        store
            .acquire_renewal_lease(&a.id, agent, "g1", T0, at(60))
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_renewal_lease(&a.id, agent, "g2", at(1), at(61))
            .await
            .unwrap(),
        "second agent waits"
    );
    assert!(
        store
            .acquire_renewal_lease(&a.id, agent, "g1", at(2), at(62))
            .await
            .unwrap(),
        "holder may extend"
    );
    assert!(
        store
            .acquire_renewal_lease(&b.id, agent, "h1", at(2), at(62))
            .await
            .unwrap(),
        "other tenants are independent"
    );
    assert!(
        store
            .acquire_renewal_lease(&a.id, ComponentKind::Connector, "c1", at(2), at(62))
            .await
            .unwrap()
    );
    store.release_renewal_lease(&a.id, agent, "g1").await.unwrap();
    assert!(
        store
            .acquire_renewal_lease(&a.id, agent, "g2", at(3), at(63))
            .await
            .unwrap()
    );
    // An abandoned lease expires.
    assert!(
        store
            .acquire_renewal_lease(&a.id, agent, "g3", at(63), at(120))
            .await
            .unwrap()
    );
}

async fn registration_tokens(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, admin) = tenant_with_admin(&store, "a", "a.test").await;
    let by = format!("user:{}", admin.id);
    store
        .create_registration_token(b"t1", &a.id, ComponentKind::Agent, None, &by, 2, T0, at(3600))
        .await
        .unwrap();
    for _ in 0..3 {
        // Looking the tenant up uses nothing.
        let tenant = store.registration_token_tenant(b"t1", at(1)).await.unwrap();
        assert_eq!(tenant.as_deref(), Some(a.id.as_str()));
    }
    for _ in 0..2 {
        let t = store.consume_registration_token(b"t1", at(1)).await.unwrap().unwrap();
        assert_eq!((t.kind, t.tenant_id.as_str()), (ComponentKind::Agent, a.id.as_str()));
    }
    assert!(
        store.consume_registration_token(b"t1", at(2)).await.unwrap().is_none(),
        "uses run out"
    );
    assert_eq!(store.registration_token_tenant(b"t1", at(2)).await.unwrap(), None);
    store
        .create_registration_token(b"t2", &a.id, ComponentKind::Connector, None, &by, 5, T0, at(60))
        .await
        .unwrap();
    assert!(
        store.consume_registration_token(b"t2", at(60)).await.unwrap().is_none(),
        "expired"
    );
    assert!(
        store
            .consume_registration_token(b"nope", at(1))
            .await
            .unwrap()
            .is_none()
    );
}

async fn tenant_deletion_revokes_components(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    store
        .register_component(&new_component(&a, ComponentKind::Agent, "g1", "cc01", None), T0)
        .await
        .unwrap();
    store.delete_tenant(&a.id, at(5)).await.unwrap();
    assert!(store.component_by_serial("cc01", at(6)).await.unwrap().is_none());
    let crl = store.revoked_certificates("agents", at(6)).await.unwrap();
    assert_eq!(crl.len(), 1);
    assert_eq!(crl[0].reason, "tenant_deleted");
}

/// Every change that takes trust away from a component's live connections is
/// announced after it is committed; refused changes announce nothing.
async fn revocations_are_announced_once_committed(backend: Backend) {
    use tokio::sync::broadcast::error::TryRecvError;
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let mut heard = store.revocations();
    let d = store.default_connector_group(&a.id, T0).await.unwrap();
    let eu = store.create_connector_group(&a.id, "eu", "", false, T0).await.unwrap();
    for (id, serial, kind, group) in [
        ("c1", "a1", ComponentKind::Connector, Some(d.id.as_str())),
        ("g1", "a2", ComponentKind::Agent, None),
    ] {
        store
            .register_component(&new_component(&a, kind, id, serial, group), T0)
            .await
            .unwrap();
    }
    store
        .register_component(&new_component(&b, ComponentKind::Agent, "g2", "b1", None), T0)
        .await
        .unwrap();
    assert_eq!(
        heard.try_recv(),
        Err(TryRecvError::Empty),
        "registering revokes nothing"
    );

    store.move_connector(&a.id, "c1", &d.id).await.unwrap();
    assert_eq!(
        heard.try_recv(),
        Err(TryRecvError::Empty),
        "a move to the same group is none"
    );
    store.move_connector(&a.id, "c1", &eu.id).await.unwrap();
    assert_eq!(
        heard.try_recv().unwrap(),
        Revocation::ConnectorMoved {
            tenant_id: a.id.clone(),
            component_id: "c1".into(),
            from_group: d.id.clone()
        }
    );
    assert!(store.delete_connector_group(&a.id, &eu.id).await.is_err());
    assert!(store.delete_component(&b.id, "c1", "removed", at(1)).await.is_err());
    assert_eq!(heard.try_recv(), Err(TryRecvError::Empty), "refused changes are silent");

    store.delete_component(&a.id, "c1", "removed", at(1)).await.unwrap();
    assert_eq!(
        heard.try_recv().unwrap(),
        Revocation::ComponentRemoved {
            tenant_id: a.id.clone(),
            component_id: "c1".into(),
            kind: ComponentKind::Connector
        }
    );
    store.delete_connector_group(&a.id, &eu.id).await.unwrap();
    assert_eq!(
        heard.try_recv().unwrap(),
        Revocation::GroupDeleted {
            tenant_id: a.id.clone(),
            group_id: eu.id.clone()
        }
    );
    store.delete_tenant(&a.id, at(2)).await.unwrap();
    assert_eq!(
        heard.try_recv().unwrap(),
        Revocation::TenantDeleted {
            tenant_id: a.id.clone()
        }
    );
    assert_eq!(heard.try_recv(), Err(TryRecvError::Empty));
}

async fn last_global_admin_is_kept(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, admin) = tenant_with_admin(&store, "a", "a.test").await;
    let conflict = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Conflict(_)));
    assert!(
        conflict(store.revoke_role(&admin.id, Role::GlobalAdministrator).await),
        "demote"
    );
    let disable = UserUpdate {
        enabled: Some(false),
        ..Default::default()
    };
    assert!(
        store.update_user(&a.id, &admin.id, &disable, T0).await.is_err(),
        "disable"
    );
    assert!(conflict(store.delete_user(&a.id, &admin.id).await), "delete");
    assert_eq!(
        store.user_roles(&admin.id).await.unwrap(),
        vec![Role::GlobalAdministrator],
        "nothing changed"
    );
    assert!(store.user(&a.id, &admin.id).await.unwrap().enabled);

    // Two admins demoting each other at the same moment: exactly one succeeds.
    let second = store
        .create_user(&a.id, NewUser::cloud("second@a.test", "S", None), T0)
        .await
        .unwrap();
    store
        .assign_role(&second.id, Role::GlobalAdministrator, T0)
        .await
        .unwrap();
    for _ in 0..5 {
        let (x, y) = tokio::join!(
            store.revoke_role(&admin.id, Role::GlobalAdministrator),
            store.revoke_role(&second.id, Role::GlobalAdministrator)
        );
        assert_eq!(
            x.is_ok() as u8 + y.is_ok() as u8,
            1,
            "exactly one demotion may win: {x:?} {y:?}"
        );
        assert_eq!(
            store
                .count_role_holders(&a.id, Role::GlobalAdministrator)
                .await
                .unwrap(),
            1
        );
        let demoted = if x.is_ok() { &admin } else { &second };
        store
            .assign_role(&demoted.id, Role::GlobalAdministrator, T0)
            .await
            .unwrap();
    }
    // With another admin, each change is allowed.
    store.delete_user(&a.id, &second.id).await.unwrap();
    assert!(conflict(store.delete_user(&a.id, &admin.id).await));
}

async fn directory_accounts_are_provisioned_just_in_time(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, admin) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let u = store
        .upsert_directory_user(&a.id, "guid-1", "Alice@A.test", "Alice", Some("alice@a.test"), T0)
        .await
        .unwrap();
    assert_eq!(
        (u.username.as_str(), u.source, u.external_id.as_deref()),
        ("alice@a.test", UserSource::Directory, Some("guid-1"))
    );
    assert!(
        u.password_hash.is_none(),
        "no password is ever stored for a directory account"
    );
    // Renamed in the directory: found by its stable ID, updated in place.
    let renamed = store
        .upsert_directory_user(&a.id, "guid-1", "alice.smith@a.test", "Alice Smith", None, at(5))
        .await
        .unwrap();
    assert_eq!(
        (renamed.id.as_str(), renamed.username.as_str()),
        (u.id.as_str(), "alice.smith@a.test")
    );
    // Another tenant's account with the same stable ID is another account.
    let other = store
        .upsert_directory_user(&b.id, "guid-1", "alice@a.test", "A", None, T0)
        .await
        .unwrap();
    assert_ne!(other.id, u.id);
    // A cloud account is never taken over.
    let taken = store
        .upsert_directory_user(&a.id, "guid-9", &admin.username, "Impostor", None, T0)
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");

    // Groups follow the directory; cloud groups are untouched.
    let cloud = store.create_group(&a.id, "cloud-only", "", T0).await.unwrap();
    store.add_member(&a.id, &cloud.id, &u.id).await.unwrap();
    store
        .set_directory_groups(&a.id, &u.id, &["Staff".into(), "Admins".into()], T0)
        .await
        .unwrap();
    let names = |gs: Vec<Group>| gs.into_iter().map(|g| g.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.user_groups(&a.id, &u.id).await.unwrap()),
        vec!["Admins", "Staff", "cloud-only"]
    );
    // The lockout context carries the directory groups (not the cloud ones),
    // and a sign-in that read them there applies a change without reading again.
    let mut read_with_counters = store
        .lockout_context(&a.id, &u.username, Some(&u.id), "10.0.0.0/24")
        .await
        .unwrap()
        .directory_groups;
    read_with_counters.sort();
    assert_eq!(read_with_counters, vec!["Admins", "Staff"]);
    let nobody = store
        .lockout_context(&a.id, "nobody@a.test", None, "10.0.0.0/24")
        .await
        .unwrap();
    assert!(nobody.directory_groups.is_empty());
    store
        .set_directory_groups_known(&a.id, &u.id, &["Staff".into()], read_with_counters, at(1))
        .await
        .unwrap();
    assert_eq!(
        names(store.user_groups(&a.id, &u.id).await.unwrap()),
        vec!["Staff", "cloud-only"]
    );
    store
        .set_directory_groups(&a.id, &u.id, &["Staff".into()], at(1))
        .await
        .unwrap();
    assert_eq!(
        names(store.user_groups(&a.id, &u.id).await.unwrap()),
        vec!["Staff", "cloud-only"]
    );
    // A directory group named like a cloud group is skipped, not merged.
    store
        .set_directory_groups(&a.id, &u.id, &["cloud-only".into()], at(2))
        .await
        .unwrap();
    assert_eq!(
        names(store.user_groups(&a.id, &u.id).await.unwrap()),
        vec!["cloud-only"]
    );
    let groups = store.groups(&a.id).await.unwrap();
    assert_eq!(groups.iter().filter(|g| g.source == UserSource::Directory).count(), 2);
}

fn app_spec(name: &str, host: &str, prefix: &str, group: &str) -> AppSpec {
    AppSpec {
        name: name.into(),
        external_scheme: ExternalScheme::Https,
        external_host: host.into(),
        path_prefix: prefix.into(),
        internal_url: "http://wiki.corp:8080/".into(),
        preauth: Preauth::Sts,
        connector_group_id: group.into(),
        backend_timeout_secs: 85,
        validate_backend_tls: true,
        translate_headers: true,
        translate_links: false,
        identity_headers: vec!["user".into(), "email".into()],
        limits: postern_store::AppLimits::default(),
    }
}

async fn published_apps_and_assignments(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, admin) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let group = store.default_connector_group(&a.id, T0).await.unwrap();
    let version = group.config_version;
    let wiki = store
        .create_app(
            &a.id,
            &app_spec("wiki", "apps.a.test", "/wiki", &group.id),
            "c-wiki",
            T0,
        )
        .await
        .unwrap();
    assert_eq!(wiki.identity_headers, vec!["user".to_string(), "email".to_string()]);
    assert_eq!(wiki.external_url(), "https://apps.a.test/wiki");
    // The app's OIDC client is made with it: public, code flow, its callback.
    let client = store.client(&a.id, "c-wiki").await.unwrap();
    assert!(!client.is_confidential() && client.allows_grant("authorization_code"));
    assert!(!client.allows_grant("refresh_token"));
    assert_eq!(client.redirect_uris, vec!["https://apps.a.test/wiki.postern/callback"]);
    assert_eq!(client.post_logout_redirect_uris, vec!["https://apps.a.test/wiki"]);
    assert_eq!(client.name, "wiki");
    assert!(
        matches!(store.delete_client(&a.id, "c-wiki").await, Err(StoreError::Conflict(m)) if m.contains("wiki")),
        "an app's client goes only with the app"
    );
    assert!(
        store.connector_group(&a.id, &group.id).await.unwrap().config_version > version,
        "connectors are told"
    );
    store
        .create_app(&a.id, &app_spec("root", "apps.a.test", "/", &group.id), "c-root", T0)
        .await
        .unwrap();
    // One address, one app, across tenants.
    let b_group = store.default_connector_group(&b.id, T0).await.unwrap();
    let clash = store
        .create_app(&b.id, &app_spec("x", "apps.a.test", "/wiki", &b_group.id), "c-x", T0)
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))));
    assert!(
        matches!(store.client(&b.id, "c-x").await, Err(StoreError::NotFound)),
        "a refused app leaves no client behind"
    );
    let on_host: Vec<String> = store
        .apps_on_host("apps.a.test")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.path_prefix)
        .collect();
    assert_eq!(on_host, vec!["/wiki", "/"], "longest prefix first");
    assert!(store.app(&b.id, &wiki.id).await.is_err());
    assert_eq!(store.apps_of_group(&a.id, &group.id).await.unwrap().len(), 2);

    // Assignments: directly or through a group; other tenants' principals refused.
    let u = store
        .create_user(&a.id, NewUser::cloud("u@a.test", "U", None), T0)
        .await
        .unwrap();
    assert!(!store.user_assigned_to_app(&wiki.id, &u.id).await.unwrap());
    store
        .assign_app(&a.id, &wiki.id, PrincipalKind::User, &u.id)
        .await
        .unwrap();
    assert!(store.user_assigned_to_app(&wiki.id, &u.id).await.unwrap());
    let staff = store.create_group(&a.id, "staff", "", T0).await.unwrap();
    store.add_member(&a.id, &staff.id, &admin.id).await.unwrap();
    store
        .assign_app(&a.id, &wiki.id, PrincipalKind::Group, &staff.id)
        .await
        .unwrap();
    assert!(store.user_assigned_to_app(&wiki.id, &admin.id).await.unwrap());
    let (_, b_admin) = (0, store.users(&b.id).await.unwrap().remove(0));
    assert!(
        store
            .assign_app(&a.id, &wiki.id, PrincipalKind::User, &b_admin.id)
            .await
            .is_err()
    );
    assert_eq!(store.app_assignments(&a.id, &wiki.id).await.unwrap().len(), 2);
    store
        .unassign_app(&a.id, &wiki.id, PrincipalKind::User, &u.id)
        .await
        .unwrap();
    assert!(!store.user_assigned_to_app(&wiki.id, &u.id).await.unwrap());
    // Deleting a user or a group takes its assignments with it.
    store
        .assign_app(&a.id, &wiki.id, PrincipalKind::User, &u.id)
        .await
        .unwrap();
    assert_eq!(store.app_assignments(&a.id, &wiki.id).await.unwrap().len(), 2);
    store.delete_user(&a.id, &u.id).await.unwrap();
    let left = store.app_assignments(&a.id, &wiki.id).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    store.delete_group(&a.id, &staff.id).await.unwrap();
    assert!(store.app_assignments(&a.id, &wiki.id).await.unwrap().is_empty());
    assert!(!store.user_assigned_to_app(&wiki.id, &admin.id).await.unwrap());
    assert!(
        matches!(store.delete_group(&b.id, &staff.id).await, Err(StoreError::NotFound)),
        "gone, and never another tenant's"
    );

    let mut spec = app_spec("wiki", "wiki.a.test", "/", &group.id);
    spec.preauth = Preauth::Passthrough;
    spec.external_scheme = ExternalScheme::Http;
    let onto_root = app_spec("wiki", "apps.a.test", "/", &group.id);
    let clash = store.update_app(&a.id, &wiki.id, &onto_root, at(4)).await;
    assert!(matches!(clash, Err(StoreError::Conflict(m)) if m.contains("apps.a.test/")));
    let changed = store.update_app(&a.id, &wiki.id, &spec, at(5)).await.unwrap();
    assert_eq!(changed.callback_url(), "http://wiki.a.test/.postern/callback");
    let client = store.client(&a.id, "c-wiki").await.unwrap();
    assert_eq!(client.redirect_uris, vec![changed.callback_url()]);
    assert_eq!(client.post_logout_redirect_uris, vec!["http://wiki.a.test/"]);
    assert_eq!(
        (
            changed.external_host.as_str(),
            changed.preauth,
            changed.client_id.as_str()
        ),
        ("wiki.a.test", Preauth::Passthrough, "c-wiki")
    );
    store.delete_app(&a.id, &wiki.id).await.unwrap();
    assert!(store.app(&a.id, &wiki.id).await.is_err());
    assert!(matches!(store.client(&a.id, "c-wiki").await, Err(StoreError::NotFound)));
    assert!(store.client(&a.id, "c-root").await.is_ok(), "other apps keep theirs");

    // Apps published before the scheme was stored (migration 0004) read as https.
    sqlx::query(
        "INSERT INTO apps (id, tenant_id, name, external_host, path_prefix, internal_url, preauth, \
         connector_group_id, backend_timeout_secs, validate_backend_tls, translate_headers, translate_links, \
         identity_headers, client_id, created_at, updated_at) \
         VALUES ('old', $1, 'old', 'old.a.test', '/', 'http://old.corp/', 'sts', $2, 85, 1, 1, 0, '[]', 'c-old', 0, 0)",
    )
    .bind(&a.id)
    .bind(&group.id)
    .execute(store.pool())
    .await
    .unwrap();
    let old = store.app(&a.id, "old").await.unwrap();
    assert_eq!(old.external_scheme, ExternalScheme::Https);
    assert_eq!(old.callback_url(), "https://old.a.test/.postern/callback");

    // Cookie keys rotate; retired keys are listed until forgotten.
    store.rotate_cookie_key("k1", b"s1", T0, false).await.unwrap();
    store.rotate_cookie_key("k2", b"s2", at(100), false).await.unwrap();
    let kids = |ks: Vec<CookieKeyRecord>| ks.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert_eq!(kids(store.cookie_keys(at(50)).await.unwrap()), vec!["k2", "k1"]);
    assert_eq!(kids(store.cookie_keys(at(100)).await.unwrap()), vec!["k2"]);
    // Revoking: every older key is gone at once, retired or not.
    store.rotate_cookie_key("k3", b"s3", at(200), true).await.unwrap();
    assert_eq!(kids(store.cookie_keys(T0).await.unwrap()), vec!["k3"]);
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.db");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A database left world-readable by an older version is tightened too.
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::connect(&StoreOptions::new(format!("sqlite://{}", path.display())))
        .await
        .unwrap();
    tenant_with_admin(&store, "a", "a.test").await;
    for file in ["postern.db", "postern.db-wal", "postern.db-shm"] {
        let p = dir.path().join(file);
        assert_eq!(mode(&p), 0o600, "{file}");
    }
    // And a new one is created private.
    let fresh = dir.path().join("fresh.db");
    Store::connect(&StoreOptions::new(format!("sqlite://{}", fresh.display())))
        .await
        .unwrap();
    assert_eq!(mode(&fresh), 0o600);
}

/// Policies, named locations and user risk: per tenant, names unique, a location
/// a policy names kept, the risk history the signals read; every change moves
/// the routing generation.
async fn conditional_access_records(backend: Backend) {
    use postern_policy::{
        AppRef, Conditions, Grant, LocationRef, NamedLocation, PolicyRules, PolicyState, RiskLevel, Selection, UserRef,
    };
    let (_db, store) = store(backend).await;
    let (a, alice) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let generation = store.routing_generation();
    let office = store
        .create_location(
            &a.id,
            &NamedLocation {
                id: String::new(),
                name: "office".into(),
                ranges: vec!["192.0.2.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
                trusted: true,
            },
            T0,
        )
        .await
        .unwrap();
    assert!(store.routing_generation() > generation);
    assert_eq!(store.locations(&a.id).await.unwrap(), vec![office.clone()]);
    assert!(store.locations(&b.id).await.unwrap().is_empty());
    assert!(matches!(
        store.location(&b.id, &office.id).await,
        Err(StoreError::NotFound)
    ));
    let rules = PolicyRules {
        conditions: Conditions {
            users: Selection {
                include: vec![UserRef::All],
                exclude: vec![UserRef::User(alice.id.clone())],
            },
            apps: Selection {
                include: vec![AppRef::All],
                exclude: vec![],
            },
            locations: Some(Selection {
                include: vec![LocationRef::Any],
                exclude: vec![LocationRef::Named(office.id.clone())],
            }),
            risk_levels: vec![RiskLevel::High],
            client_kinds: vec![],
        },
        grants: vec![Grant::RequireMfa],
    };
    let p = store
        .create_policy(&a.id, "outside", PolicyState::ReportOnly, &rules, T0)
        .await
        .unwrap();
    assert_eq!((p.state, &p.rules), (PolicyState::ReportOnly, &rules));
    assert!(matches!(
        store.create_policy(&a.id, "outside", PolicyState::Enabled, &rules, T0).await,
        Err(StoreError::Conflict(m)) if m.contains("outside")
    ));
    store
        .create_policy(&b.id, "outside", PolicyState::Enabled, &rules, T0)
        .await
        .unwrap();
    assert!(
        matches!(store.delete_location(&a.id, &office.id).await, Err(StoreError::Conflict(m)) if m.contains("outside"))
    );
    let replaced = store
        .replace_policy(&a.id, &p.id, "outside the office", PolicyState::Enabled, &rules, at(1))
        .await
        .unwrap();
    assert_eq!(replaced.name, "outside the office");
    assert!(matches!(
        store
            .replace_policy(&b.id, &p.id, "x", PolicyState::Enabled, &rules, at(1))
            .await,
        Err(StoreError::NotFound)
    ));
    store.delete_policy(&a.id, &p.id).await.unwrap();
    store.delete_location(&a.id, &office.id).await.unwrap();
    assert!(store.policies(&a.id).await.unwrap().is_empty());
    assert_eq!(store.policies(&b.id).await.unwrap().len(), 1);

    // User risk: the tenant's own users only; set, replaced, dismissed.
    let risk = UserRisk {
        user_id: alice.id.clone(),
        level: RiskLevel::Medium,
        reason: "leaked".into(),
        set_by: "user:x".into(),
        set_at: T0,
    };
    assert!(matches!(
        store.set_user_risk(&b.id, &risk).await,
        Err(StoreError::NotFound)
    ));
    store.set_user_risk(&a.id, &risk).await.unwrap();
    store
        .set_user_risk(
            &a.id,
            &UserRisk {
                level: RiskLevel::High,
                ..risk.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.user_risk(&a.id, &alice.id).await.unwrap().unwrap().level,
        RiskLevel::High
    );
    assert_eq!(store.user_risk(&b.id, &alice.id).await.unwrap(), None);
    assert!(!store.dismiss_user_risk(&b.id, &alice.id).await.unwrap());
    assert!(store.dismiss_user_risk(&a.id, &alice.id).await.unwrap());
    assert_eq!(store.user_risk(&a.id, &alice.id).await.unwrap(), None);

    // The history risk signals read.
    for (i, (outcome, ip)) in [
        (SigninOutcome::BadCredentials, "198.18.0.1"),
        (SigninOutcome::Success, "203.0.113.5"),
        (SigninOutcome::BadCredentials, "198.18.0.2"),
    ]
    .into_iter()
    .enumerate()
    {
        store
            .log_signin(&SigninEvent {
                id: String::new(),
                tenant_id: a.id.clone(),
                at: at(i as i64),
                username: alice.username.clone(),
                user_id: Some(alice.id.clone()),
                client_id: None,
                ip: ip.into(),
                outcome,
                detail: String::new(),
            })
            .await
            .unwrap();
    }
    let failures = store.recent_failures(&a.id, at(1), 10).await.unwrap();
    assert_eq!(
        failures.iter().map(|f| f.ip.as_str()).collect::<Vec<_>>(),
        vec!["198.18.0.2"]
    );
    assert_eq!(store.recent_failures(&a.id, T0, 10).await.unwrap().len(), 2);
    assert!(store.recent_failures(&b.id, T0, 10).await.unwrap().is_empty());
    assert_eq!(
        store.last_success(&alice.id).await.unwrap(),
        Some(("203.0.113.5".into(), at(1)))
    );
    assert_eq!(store.familiar_network_count(&alice.id, T0).await.unwrap(), 0);
    store
        .remember_network(&alice.id, "203.0.113.0/24", at(1))
        .await
        .unwrap();
    assert_eq!(store.familiar_network_count(&alice.id, T0).await.unwrap(), 1);
    assert_eq!(store.familiar_network_count(&alice.id, at(2)).await.unwrap(), 0);
}

/// What a sign-in reads on several pages (the app of a client, the client, a
/// user's groups, whether the user is assigned, the risk an administrator set)
/// is cached; every change made through this instance is seen at once, and each
/// tenant sees only its own rows.
async fn signin_reads_follow_every_change(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (a, _) = tenant_with_admin(&store, "a", "a.test").await;
    let (b, _) = tenant_with_admin(&store, "b", "b.test").await;
    let group = store.default_connector_group(&a.id, T0).await.unwrap();
    let user = store
        .create_user(&a.id, NewUser::cloud("u@a.test", "U", None), T0)
        .await
        .unwrap();
    // Before the app exists: none, and no client (nothing stale stays behind).
    assert_eq!(store.app_of_client(&a.id, "c-wiki").await.unwrap(), None);
    let wiki = store
        .create_app(
            &a.id,
            &app_spec("wiki", "apps.a.test", "/wiki", &group.id),
            "c-wiki",
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        store.app_of_client(&a.id, "c-wiki").await.unwrap().map(|w| w.id),
        Some(wiki.id.clone())
    );
    assert_eq!(
        store.app_of_client(&b.id, "c-wiki").await.unwrap(),
        None,
        "another tenant's client"
    );
    assert!(matches!(store.client(&b.id, "c-wiki").await, Err(StoreError::NotFound)));
    assert_eq!(store.client(&a.id, "c-wiki").await.unwrap().name, "wiki");
    // An app's new name reaches its client at once.
    let mut renamed = app_spec("wiki2", "apps.a.test", "/wiki", &group.id);
    renamed.identity_headers = vec![];
    store.update_app(&a.id, &wiki.id, &renamed, at(1)).await.unwrap();
    assert_eq!(store.client(&a.id, "c-wiki").await.unwrap().name, "wiki2");
    assert_eq!(
        store.app_of_client(&a.id, "c-wiki").await.unwrap().map(|w| w.name),
        Some("wiki2".to_owned())
    );

    // Assignment, directly.
    assert!(!store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap());
    store
        .assign_app(&a.id, &wiki.id, PrincipalKind::User, &user.id)
        .await
        .unwrap();
    assert!(
        store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap(),
        "assigned at once"
    );
    store
        .unassign_app(&a.id, &wiki.id, PrincipalKind::User, &user.id)
        .await
        .unwrap();
    assert!(
        !store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap(),
        "unassigned at once"
    );

    // Through a group: membership added, removed; the group deleted.
    let staff = store.create_group(&a.id, "staff", "", T0).await.unwrap();
    store
        .assign_app(&a.id, &wiki.id, PrincipalKind::Group, &staff.id)
        .await
        .unwrap();
    assert!(store.user_groups(&a.id, &user.id).await.unwrap().is_empty());
    assert!(!store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap());
    store.add_member(&a.id, &staff.id, &user.id).await.unwrap();
    assert_eq!(store.user_groups(&a.id, &user.id).await.unwrap(), vec![staff.clone()]);
    assert!(
        store.user_groups(&b.id, &user.id).await.unwrap().is_empty(),
        "another tenant"
    );
    assert!(store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap());
    store.remove_member(&a.id, &staff.id, &user.id).await.unwrap();
    assert!(store.user_groups(&a.id, &user.id).await.unwrap().is_empty());
    assert!(!store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap());
    store.add_member(&a.id, &staff.id, &user.id).await.unwrap();
    assert!(store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap());
    store.delete_group(&a.id, &staff.id).await.unwrap();
    assert!(store.user_groups(&a.id, &user.id).await.unwrap().is_empty());
    assert!(
        !store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap(),
        "group deleted"
    );

    // A directory user's groups, as the directory reports them at sign-in:
    // joined, then left (no administrator involved).
    let dir_user = store
        .upsert_directory_user(&a.id, "guid-9", "d@a.test", "D", None, T0)
        .await
        .unwrap();
    store
        .set_directory_groups(&a.id, &dir_user.id, &["Engineers".to_owned()], T0)
        .await
        .unwrap();
    let engineers = store
        .groups(&a.id)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.name == "Engineers")
        .unwrap();
    store
        .assign_app(&a.id, &wiki.id, PrincipalKind::Group, &engineers.id)
        .await
        .unwrap();
    assert_eq!(store.user_groups(&a.id, &dir_user.id).await.unwrap().len(), 1);
    assert!(store.user_assigned_to_app(&wiki.id, &dir_user.id).await.unwrap());
    store
        .set_directory_groups(&a.id, &dir_user.id, &[], at(1))
        .await
        .unwrap();
    assert!(
        store.user_groups(&a.id, &dir_user.id).await.unwrap().is_empty(),
        "left the group in the directory"
    );
    assert!(!store.user_assigned_to_app(&wiki.id, &dir_user.id).await.unwrap());

    // A deleted user is assigned to nothing.
    store
        .assign_app(&a.id, &wiki.id, PrincipalKind::User, &user.id)
        .await
        .unwrap();
    assert!(store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap());
    store.delete_user(&a.id, &user.id).await.unwrap();
    assert!(
        !store.user_assigned_to_app(&wiki.id, &user.id).await.unwrap(),
        "user deleted"
    );

    // User risk, per tenant.
    assert_eq!(store.user_risk(&a.id, &dir_user.id).await.unwrap(), None);
    let risk = UserRisk {
        user_id: dir_user.id.clone(),
        level: postern_policy::RiskLevel::High,
        reason: "leaked".into(),
        set_by: "user:x".into(),
        set_at: T0,
    };
    store.set_user_risk(&a.id, &risk).await.unwrap();
    assert_eq!(store.user_risk(&a.id, &dir_user.id).await.unwrap(), Some(risk.clone()));
    assert_eq!(
        store.user_risk(&b.id, &dir_user.id).await.unwrap(),
        None,
        "another tenant"
    );
    store.dismiss_user_risk(&a.id, &dir_user.id).await.unwrap();
    assert_eq!(store.user_risk(&a.id, &dir_user.id).await.unwrap(), None);

    // A deleted app: no app for its client, and no client.
    store.delete_app(&a.id, &wiki.id).await.unwrap();
    assert_eq!(store.app_of_client(&a.id, "c-wiki").await.unwrap(), None);
    assert!(matches!(store.client(&a.id, "c-wiki").await, Err(StoreError::NotFound)));
    assert!(!store.user_assigned_to_app(&wiki.id, &dir_user.id).await.unwrap());

    // A tenant's own client, deleted.
    store.create_client(&a.id, &client("own"), T0).await.unwrap();
    assert!(store.client(&a.id, "own").await.is_ok());
    store.delete_client(&a.id, "own").await.unwrap();
    assert!(matches!(store.client(&a.id, "own").await, Err(StoreError::NotFound)));
}

/// A change made through another instance (a second `Store` on the same
/// database) is seen at once when its event arrives, and within the cache's
/// time to live without it.
async fn signin_reads_follow_other_instances(backend: Backend) {
    let (db, here) = store(backend).await;
    let there = db.store().await.unwrap();
    let (a, _) = tenant_with_admin(&here, "a", "a.test").await;
    let group = here.default_connector_group(&a.id, T0).await.unwrap();
    let user = here
        .create_user(&a.id, NewUser::cloud("u@a.test", "U", None), T0)
        .await
        .unwrap();
    let wiki = here
        .create_app(
            &a.id,
            &app_spec("wiki", "apps.a.test", "/wiki", &group.id),
            "c-wiki",
            T0,
        )
        .await
        .unwrap();
    here.assign_app(&a.id, &wiki.id, PrincipalKind::User, &user.id)
        .await
        .unwrap();
    assert!(here.user_assigned_to_app(&wiki.id, &user.id).await.unwrap());

    // Unassigned elsewhere, and the event arrives.
    let mut events = there.local_changes();
    there
        .unassign_app(&a.id, &wiki.id, PrincipalKind::User, &user.id)
        .await
        .unwrap();
    let event = events.recv().await.unwrap();
    here.apply_remote_change(event);
    assert!(
        !here.user_assigned_to_app(&wiki.id, &user.id).await.unwrap(),
        "seen with the event"
    );

    // Assigned elsewhere, no event: seen once the time to live has passed.
    here.user_assigned_to_app(&wiki.id, &user.id).await.unwrap();
    there
        .assign_app(&a.id, &wiki.id, PrincipalKind::User, &user.id)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + postern_store::cache::TIME_TO_LIVE + std::time::Duration::from_secs(1);
    loop {
        if here.user_assigned_to_app(&wiki.id, &user.id).await.unwrap() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not seen within the time to live");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // poll pause, bounded above
    }
    // The app deleted elsewhere: its client goes for this instance too.
    here.client(&a.id, "c-wiki").await.unwrap();
    there.delete_app(&a.id, &wiki.id).await.unwrap();
    here.apply_remote_change(StoreChange::Routing);
    assert_eq!(here.app_of_client(&a.id, "c-wiki").await.unwrap(), None);
    assert!(matches!(here.client(&a.id, "c-wiki").await, Err(StoreError::NotFound)));
}
