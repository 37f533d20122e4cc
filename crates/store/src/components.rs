//! On-prem components (connectors and agents), the CAs that certify them, their
//! connector groups, registration tokens, revocations and renewal leases.
//!
//! A component's certificate is current only while its serial is the one stored
//! here: deleting the component, or replacing its certificate, revokes the old
//! serial at once (BEY-6) and records it for the CA's revocation list.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{DbFlag, Store, StoreChange, StoreError, flag, new_id};

pub use postern_proto::ComponentKind;

/// The CA that certifies components of `kind` (`connectors` or `agents`).
fn ca_kind(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Connector => "connectors",
        ComponentKind::Agent => "agents",
    }
}

/// A stored certificate authority.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CaRecord {
    /// `connectors`, `agents` or `service`.
    pub kind: String,
    /// The CA certificate.
    pub cert_pem: String,
    /// The CA private key (PKCS#8), sealed with the KEK (context `ca:<kind>`).
    pub key_sealed: Vec<u8>,
    /// Number of the last CRL issued.
    pub crl_number: i64,
    /// When it was made.
    pub created_at: UnixTime,
}

impl std::fmt::Debug for CaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRecord")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A group of connectors that serve the same apps (CON-5).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ConnectorGroup {
    /// Identifier.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// New connectors join the default group unless told otherwise.
    #[sqlx(try_from = "DbFlag")]
    pub is_default: bool,
    /// Bumped whenever anything the group's connectors are configured with changes.
    pub config_version: i64,
    /// When it was created.
    pub created_at: UnixTime,
}

/// A registered connector or agent.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Component {
    /// Identifier (bound into its certificate).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Connector or agent.
    #[sqlx(try_from = "String")]
    pub kind: ComponentKind,
    /// Host name it reported.
    pub name: String,
    /// Connector group (connectors only).
    pub group_id: Option<String>,
    /// Serial of the current certificate (lowercase hex).
    pub serial: String,
    /// Serial of the certificate it replaced, still accepted until
    /// `previous_valid_until` (connectors switching over after renewal).
    pub previous_serial: Option<String>,
    /// End of the previous certificate's grace period.
    pub previous_valid_until: Option<UnixTime>,
    /// Public key (SubjectPublicKeyInfo DER) of the current certificate.
    pub public_key: Vec<u8>,
    /// Short identifier of that key.
    pub key_id: String,
    /// When the current certificate was issued.
    pub cert_issued_at: UnixTime,
    /// When it expires.
    pub not_after: UnixTime,
    /// Software version it reported.
    pub version: String,
    /// Who registered it (`user:<id>` or `token:<prefix>`).
    pub registered_by: String,
    /// When.
    pub registered_at: UnixTime,
    /// When it last called the service.
    pub last_seen_at: Option<UnixTime>,
    /// From where.
    pub last_seen_ip: Option<String>,
}

/// What a new component is registered with.
#[derive(Clone, Debug)]
pub struct NewComponent {
    /// Identifier chosen by the caller (it is in the certificate).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Kind.
    pub kind: ComponentKind,
    /// Host name.
    pub name: String,
    /// Connector group.
    pub group_id: Option<String>,
    /// The issued certificate.
    pub cert: CertRecord,
    /// Software version.
    pub version: String,
    /// Who registered it.
    pub registered_by: String,
}

/// The facts about an issued certificate that the store keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRecord {
    /// Serial (lowercase hex).
    pub serial: String,
    /// Public key (SPKI DER).
    pub public_key: Vec<u8>,
    /// Key identifier.
    pub key_id: String,
    /// Issued at.
    pub issued_at: UnixTime,
    /// Expires at.
    pub not_after: UnixTime,
}

/// How a presented serial relates to its component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialStatus {
    /// The current certificate.
    Current,
    /// The certificate just replaced, within its grace period.
    Previous,
}

/// A revoked certificate, for a CRL.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedCertificate {
    /// Serial (lowercase hex).
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: UnixTime,
    /// Why: `removed`, `superseded`, `expired`, `tenant_deleted`.
    pub reason: String,
}

/// A registration token minted for unattended installs.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RegistrationToken {
    /// Tenant.
    pub tenant_id: String,
    /// What it may register.
    #[sqlx(try_from = "String")]
    pub kind: ComponentKind,
    /// Connector group new connectors join.
    pub group_id: Option<String>,
    /// Who minted it (`user:<id>`).
    pub created_by: String,
    /// Expiry.
    pub expires_at: UnixTime,
    /// Registrations it still allows.
    pub uses_left: i64,
}

macro_rules! component_columns {
    () => {
        "id, tenant_id, kind, name, group_id, serial, previous_serial, previous_valid_until, public_key, \
         key_id, cert_issued_at, not_after, version, registered_by, registered_at, last_seen_at, last_seen_ip"
    };
}
macro_rules! group_columns {
    () => {
        "id, tenant_id, name, description, is_default, config_version, created_at"
    };
}

impl Store {
    // ---- certificate authorities ---------------------------------------------

    /// The stored CA of `kind`, if it was made already.
    pub async fn certificate_authority(&self, kind: &str) -> Result<Option<CaRecord>, StoreError> {
        sqlx::query_as::<_, CaRecord>(
            "SELECT kind, cert_pem, key_sealed, crl_number, created_at FROM certificate_authorities WHERE kind = $1",
        )
        .bind(kind)
        .fetch_optional(&self.db)
        .await
        .db()
    }

    /// Stores a new CA. Fails with a conflict if another instance stored one first
    /// (the caller then loads that one).
    pub async fn insert_certificate_authority(
        &self,
        kind: &str,
        cert_pem: &str,
        key_sealed: &[u8],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO certificate_authorities (kind, cert_pem, key_sealed, crl_number, created_at) \
             VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(kind)
        .bind(cert_pem)
        .bind(key_sealed)
        .bind(now)
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// Takes the next CRL number of a CA.
    pub async fn next_crl_number(&self, kind: &str) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE certificate_authorities SET crl_number = crl_number + 1 WHERE kind = $1")
            .bind(kind)
            .execute(&mut *tx)
            .await
            .db()?;
        let n: i64 = sqlx::query_scalar("SELECT crl_number FROM certificate_authorities WHERE kind = $1")
            .bind(kind)
            .fetch_one(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        Ok(n)
    }

    /// Unexpired revoked certificates of a CA, for its CRL.
    pub async fn revoked_certificates(
        &self,
        ca_kind: &str,
        now: UnixTime,
    ) -> Result<Vec<RevokedCertificate>, StoreError> {
        sqlx::query_as::<_, RevokedCertificate>(
            "SELECT serial, revoked_at, reason FROM revoked_certificates WHERE ca_kind = $1 AND not_after > $2 \
             ORDER BY revoked_at, serial",
        )
        .bind(ca_kind)
        .bind(now)
        .fetch_all(&self.db)
        .await
        .db()
    }

    // ---- connector groups ----------------------------------------------------

    /// Creates a connector group.
    pub async fn create_connector_group(
        &self,
        tenant_id: &str,
        name: &str,
        description: &str,
        is_default: bool,
        now: UnixTime,
    ) -> Result<ConnectorGroup, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO connector_groups (id, tenant_id, name, description, is_default, config_version, created_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(description)
        .bind(flag(is_default))
        .bind(now)
        .execute(&self.db)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("connector group {name} exists")),
            other => other,
        })?;
        self.connector_group(tenant_id, &id).await
    }

    /// One connector group of a tenant.
    pub async fn connector_group(&self, tenant_id: &str, id: &str) -> Result<ConnectorGroup, StoreError> {
        sqlx::query_as::<_, ConnectorGroup>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM connector_groups WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The connector group with this name.
    pub async fn connector_group_by_name(&self, tenant_id: &str, name: &str) -> Result<ConnectorGroup, StoreError> {
        sqlx::query_as::<_, ConnectorGroup>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM connector_groups WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant_id)
        .bind(name)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The tenant's connector groups, by name.
    pub async fn connector_groups(&self, tenant_id: &str) -> Result<Vec<ConnectorGroup>, StoreError> {
        sqlx::query_as::<_, ConnectorGroup>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM connector_groups WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// The tenant's default connector group, created (`Default`) on first need.
    pub async fn default_connector_group(&self, tenant_id: &str, now: UnixTime) -> Result<ConnectorGroup, StoreError> {
        let found = sqlx::query_as::<_, ConnectorGroup>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM connector_groups WHERE tenant_id = $1 AND is_default = 1 ORDER BY created_at LIMIT 1"
        ))
        .bind(tenant_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        match found {
            Some(g) => Ok(g),
            None => match self
                .create_connector_group(
                    tenant_id,
                    "Default",
                    "Connectors join this group unless told otherwise.",
                    true,
                    now,
                )
                .await
            {
                Err(StoreError::Conflict(_)) => self.connector_group_by_name(tenant_id, "Default").await,
                other => other,
            },
        }
    }

    /// Deletes a connector group that is not the default and has no connectors.
    pub async fn delete_connector_group(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let group = self.connector_group(tenant_id, id).await?;
        if group.is_default {
            return Err(StoreError::Conflict(
                "the default connector group cannot be deleted".into(),
            ));
        }
        let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM components WHERE group_id = $1")
            .bind(id)
            .fetch_one(&self.db)
            .await
            .db()?;
        if members > 0 {
            return Err(StoreError::Conflict(format!(
                "{members} connectors are in group {}; move or delete them first",
                group.name
            )));
        }
        sqlx::query("DELETE FROM connector_groups WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.db)
            .await
            .db()?;
        self.announce(crate::Revocation::GroupDeleted {
            tenant_id: tenant_id.to_owned(),
            group_id: id.to_owned(),
        });
        Ok(())
    }

    /// Bumps a group's configuration version (its connectors refetch their
    /// configuration). Returns the new version.
    pub async fn bump_group_config(&self, tenant_id: &str, group_id: &str) -> Result<i64, StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query(
            "UPDATE connector_groups SET config_version = config_version + 1 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(group_id)
        .execute(&self.db)
        .await
        .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.config_changed.notify_waiters();
        self.note_change(StoreChange::ConnectorConfig);
        Ok(self.connector_group(tenant_id, group_id).await?.config_version)
    }

    /// Moves a connector to another group of its tenant; both groups' connectors
    /// are told to refetch their configuration.
    pub async fn move_connector(&self, tenant_id: &str, component_id: &str, group_id: &str) -> Result<(), StoreError> {
        self.connector_group(tenant_id, group_id).await?;
        let c = self.component(tenant_id, component_id).await?;
        if c.kind != ComponentKind::Connector {
            return Err(StoreError::Conflict("only connectors belong to groups".into()));
        }
        sqlx::query("UPDATE components SET group_id = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(group_id)
            .bind(tenant_id)
            .bind(component_id)
            .execute(&self.db)
            .await
            .db()?;
        if let Some(old) = c.group_id.as_deref().filter(|old| *old != group_id) {
            self.announce(crate::Revocation::ConnectorMoved {
                tenant_id: tenant_id.to_owned(),
                component_id: component_id.to_owned(),
                from_group: old.to_owned(),
            });
        }
        if let Some(old) = c.group_id {
            self.bump_group_config(tenant_id, &old).await?;
        }
        self.bump_group_config(tenant_id, group_id).await?;
        Ok(())
    }

    // ---- components ----------------------------------------------------------

    /// Registers a component with its first certificate.
    pub async fn register_component(&self, c: &NewComponent, now: UnixTime) -> Result<Component, StoreError> {
        let _changed = self.routing_change();
        sqlx::query(
            "INSERT INTO components (id, tenant_id, kind, name, group_id, serial, previous_serial, \
             previous_valid_until, public_key, key_id, cert_issued_at, not_after, version, registered_by, \
             registered_at, last_seen_at, last_seen_ip) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8, $9, $10, $11, $12, $13, NULL, NULL)",
        )
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(c.kind.as_str())
        .bind(&c.name)
        .bind(&c.group_id)
        .bind(&c.cert.serial)
        .bind(&c.cert.public_key)
        .bind(&c.cert.key_id)
        .bind(c.cert.issued_at)
        .bind(c.cert.not_after)
        .bind(&c.version)
        .bind(&c.registered_by)
        .bind(now)
        .execute(&self.db)
        .await
        .db()?;
        self.component(&c.tenant_id, &c.id).await
    }

    /// One component of a tenant.
    pub async fn component(&self, tenant_id: &str, id: &str) -> Result<Component, StoreError> {
        sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// A tenant's components of one kind, by name.
    pub async fn components(&self, tenant_id: &str, kind: ComponentKind) -> Result<Vec<Component>, StoreError> {
        sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE tenant_id = $1 AND kind = $2 ORDER BY name, id"
        ))
        .bind(tenant_id)
        .bind(kind.as_str())
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// The component a presented certificate serial belongs to, if that serial is
    /// its current one, or its previous one within the grace period.
    pub async fn component_by_serial(
        &self,
        serial: &str,
        now: UnixTime,
    ) -> Result<Option<(Component, SerialStatus)>, StoreError> {
        let current = sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE serial = $1"
        ))
        .bind(serial)
        .fetch_optional(&self.db)
        .await
        .db()?;
        if let Some(c) = current {
            return Ok(Some((c, SerialStatus::Current)));
        }
        let previous = sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE previous_serial = $1 AND previous_valid_until > $2"
        ))
        .bind(serial)
        .bind(now)
        .fetch_optional(&self.db)
        .await
        .db()?;
        Ok(previous.map(|c| (c, SerialStatus::Previous)))
    }

    /// Records that a component called in.
    pub async fn touch_component(
        &self,
        id: &str,
        ip: &str,
        version: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        match version {
            Some(v) => {
                sqlx::query("UPDATE components SET last_seen_at = $1, last_seen_ip = $2, version = $3 WHERE id = $4")
                    .bind(now)
                    .bind(ip)
                    .bind(v)
                    .bind(id)
            }
            None => sqlx::query("UPDATE components SET last_seen_at = $1, last_seen_ip = $2 WHERE id = $3")
                .bind(now)
                .bind(ip)
                .bind(id),
        }
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// Replaces a component's certificate, if `old_serial` is still its current
    /// one (so two renewals cannot both succeed). With `keep_previous_until`, the
    /// old certificate stays usable until then (it is revoked once the grace
    /// period ends); without, it is revoked at once. Returns false if the
    /// certificate changed meanwhile.
    pub async fn replace_certificate(
        &self,
        component_id: &str,
        old_serial: &str,
        new: &CertRecord,
        keep_previous_until: Option<UnixTime>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        let c = sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE id = $1 AND serial = $2"
        ))
        .bind(component_id)
        .bind(old_serial)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some(c) = c else {
            return Ok(false);
        };
        // A grace period still running for an even older certificate ends now.
        if let Some(prev) = &c.previous_serial {
            revoke(
                &mut tx,
                prev,
                ca_kind(c.kind),
                &c.tenant_id,
                &c.id,
                "superseded",
                c.not_after,
                now,
            )
            .await?;
        }
        let (previous_serial, previous_until) = match keep_previous_until {
            Some(until) => (Some(old_serial.to_owned()), Some(until)),
            None => {
                revoke(
                    &mut tx,
                    old_serial,
                    ca_kind(c.kind),
                    &c.tenant_id,
                    &c.id,
                    "superseded",
                    c.not_after,
                    now,
                )
                .await?;
                (None, None)
            }
        };
        sqlx::query(
            "UPDATE components SET serial = $1, public_key = $2, key_id = $3, cert_issued_at = $4, not_after = $5, \
             previous_serial = $6, previous_valid_until = $7 WHERE id = $8",
        )
        .bind(&new.serial)
        .bind(&new.public_key)
        .bind(&new.key_id)
        .bind(new.issued_at)
        .bind(new.not_after)
        .bind(&previous_serial)
        .bind(previous_until)
        .bind(component_id)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(true)
    }

    /// Ends grace periods that have run out, revoking those certificates.
    pub async fn expire_previous_certificates(&self, now: UnixTime) -> Result<u64, StoreError> {
        let due = sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE previous_serial IS NOT NULL AND previous_valid_until <= $1"
        ))
        .bind(now)
        .fetch_all(&self.db)
        .await
        .db()?;
        let mut n = 0;
        for c in due {
            let mut tx = self.begin_write().await?;
            if let Some(prev) = &c.previous_serial {
                revoke(
                    &mut tx,
                    prev,
                    ca_kind(c.kind),
                    &c.tenant_id,
                    &c.id,
                    "superseded",
                    c.not_after,
                    now,
                )
                .await?;
            }
            sqlx::query("UPDATE components SET previous_serial = NULL, previous_valid_until = NULL WHERE id = $1")
                .bind(&c.id)
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes a component and revokes its certificates at once.
    pub async fn delete_component(
        &self,
        tenant_id: &str,
        id: &str,
        reason: &str,
        now: UnixTime,
    ) -> Result<Component, StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        let c = sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
        revoke(
            &mut tx,
            &c.serial,
            ca_kind(c.kind),
            tenant_id,
            id,
            reason,
            c.not_after,
            now,
        )
        .await?;
        if let Some(prev) = &c.previous_serial {
            revoke(&mut tx, prev, ca_kind(c.kind), tenant_id, id, reason, c.not_after, now).await?;
        }
        sqlx::query("DELETE FROM renewal_leases WHERE tenant_id = $1 AND component_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query("DELETE FROM components WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        self.announce(crate::Revocation::ComponentRemoved {
            tenant_id: tenant_id.to_owned(),
            component_id: id.to_owned(),
            kind: c.kind,
        });
        Ok(c)
    }

    /// Components whose certificate has expired (to be removed: PTA-7).
    pub async fn expired_components(&self, now: UnixTime) -> Result<Vec<Component>, StoreError> {
        sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE not_after <= $1"
        ))
        .bind(now)
        .fetch_all(&self.db)
        .await
        .db()
    }

    // ---- registration tokens -------------------------------------------------

    /// Stores a registration token (its digest).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_registration_token(
        &self,
        token_digest: &[u8],
        tenant_id: &str,
        kind: ComponentKind,
        group_id: Option<&str>,
        created_by: &str,
        uses: i64,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO registration_tokens (token_digest, tenant_id, kind, group_id, created_by, created_at, \
             expires_at, uses_left) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token_digest)
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(group_id)
        .bind(created_by)
        .bind(now)
        .bind(expires_at)
        .bind(uses)
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// The tenant a registration token belongs to, if it is still usable; uses
    /// nothing, so a request refused for naming another tenant leaves it intact.
    pub async fn registration_token_tenant(
        &self,
        token_digest: &[u8],
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT tenant_id FROM registration_tokens \
             WHERE token_digest = $1 AND uses_left > 0 AND expires_at > $2",
        )
        .bind(token_digest)
        .bind(now)
        .fetch_optional(&self.db)
        .await
        .db()
    }

    /// Uses a registration token once, if it is valid.
    pub async fn consume_registration_token(
        &self,
        token_digest: &[u8],
        now: UnixTime,
    ) -> Result<Option<RegistrationToken>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE registration_tokens SET uses_left = uses_left - 1 \
             WHERE token_digest = $1 AND uses_left > 0 AND expires_at > $2",
        )
        .bind(token_digest)
        .bind(now)
        .execute(&mut *tx)
        .await
        .db()?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let t = sqlx::query_as::<_, RegistrationToken>(
            "SELECT tenant_id, kind, group_id, created_by, expires_at, uses_left FROM registration_tokens \
             WHERE token_digest = $1",
        )
        .bind(token_digest)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(Some(t))
    }

    // ---- renewal leases ------------------------------------------------------

    /// Takes the tenant's renewal lease for components of `kind` until `until`,
    /// unless another component holds an unexpired one (PTA-7: never two agents of
    /// a tenant at once). Re-taking one's own lease extends it.
    pub async fn acquire_renewal_lease(
        &self,
        tenant_id: &str,
        kind: ComponentKind,
        component_id: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM renewal_leases WHERE tenant_id = $1 AND kind = $2 AND (expires_at <= $3 OR component_id = $4)",
        )
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(now)
        .bind(component_id)
        .execute(&mut *tx)
        .await
        .db()?;
        let inserted = sqlx::query(
            "INSERT INTO renewal_leases (tenant_id, kind, component_id, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(component_id)
        .bind(until)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx);
        match inserted {
            Ok(_) => {
                tx.commit().await.db()?;
                Ok(true)
            }
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives back a renewal lease.
    pub async fn release_renewal_lease(
        &self,
        tenant_id: &str,
        kind: ComponentKind,
        component_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM renewal_leases WHERE tenant_id = $1 AND kind = $2 AND component_id = $3")
            .bind(tenant_id)
            .bind(kind.as_str())
            .bind(component_id)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }

    /// Revokes every certificate of a tenant's components (before deleting the
    /// tenant).
    pub(crate) async fn revoke_tenant_components(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant_id: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let all = sqlx::query_as::<_, Component>(concat!(
            "SELECT ",
            component_columns!(),
            " FROM components WHERE tenant_id = $1"
        ))
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await
        .db()?;
        for c in all {
            revoke(
                tx,
                &c.serial,
                ca_kind(c.kind),
                tenant_id,
                &c.id,
                "tenant_deleted",
                c.not_after,
                now,
            )
            .await?;
            if let Some(prev) = &c.previous_serial {
                revoke(
                    tx,
                    prev,
                    ca_kind(c.kind),
                    tenant_id,
                    &c.id,
                    "tenant_deleted",
                    c.not_after,
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Records a revocation (idempotent).
#[allow(clippy::too_many_arguments)]
async fn revoke(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    serial: &str,
    ca_kind: &str,
    tenant_id: &str,
    component_id: &str,
    reason: &str,
    not_after: UnixTime,
    now: UnixTime,
) -> Result<(), StoreError> {
    let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM revoked_certificates WHERE serial = $1")
        .bind(serial)
        .fetch_one(&mut **tx)
        .await
        .db()?;
    if exists == 0 {
        sqlx::query(
            "INSERT INTO revoked_certificates (serial, ca_kind, tenant_id, component_id, reason, revoked_at, not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(serial)
        .bind(ca_kind)
        .bind(tenant_id)
        .bind(component_id)
        .bind(reason)
        .bind(now)
        .bind(not_after)
        .execute(&mut **tx)
        .await
        .db()?;
    }
    Ok(())
}
