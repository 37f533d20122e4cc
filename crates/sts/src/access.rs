//! Who a published app admits: the one decision both the front door (on every
//! request, behind its cache) and the authorization endpoint (before it issues a
//! code to the app's client) make, so the two can never disagree. It is the
//! baseline (the user exists, is enabled and assigned) and then the tenant's
//! conditional access policies ([`Sts::evaluate_access`]) for where the user
//! is and how they signed in.

use postern_policy::ClientKind;
use postern_store::{App, StoreError, User};

use crate::Sts;
use crate::client_ip::ClientIp;
use crate::conditional::AccessRequest;
use crate::error::StsError;

/// Why an app refuses a user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The account is disabled.
    #[error("the user's account is disabled")]
    Disabled,
    /// No such user in the app's tenant (deleted since signing in).
    #[error("the user's account no longer exists")]
    NoSuchUser,
    /// Neither the user nor any of their groups is assigned to the app.
    #[error("the user is not assigned to this application")]
    NotAssigned,
    /// A conditional access policy blocks the user here; the reason names it.
    #[error("{0}")]
    Policy(String),
}

impl Denial {
    /// The reason addressed to the user, to follow "You are signed in as X, but".
    pub fn to_user(&self) -> String {
        match self {
            Denial::Disabled => "your account is disabled".to_owned(),
            Denial::NoSuchUser => "your account no longer exists".to_owned(),
            Denial::NotAssigned => "you are not assigned to this application; ask its administrator".to_owned(),
            Denial::Policy(reason) => format!("your access was {reason}"),
        }
    }
}

/// Whether an app admits a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; the user's group names (for the backend's identity headers).
    Allowed {
        /// Group names.
        groups: Vec<String>,
    },
    /// Admitted once the session has a second factor: a policy requires MFA
    /// and this session has none. The front door sends the user back to sign
    /// in, where the STS asks for it.
    StepUp(String),
    /// Refused, and why.
    Denied(Denial),
}

/// Where and how the user is, for the policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The client's address.
    pub ip: ClientIp,
    /// Whether the session has a second factor.
    pub mfa: bool,
    /// How the client signs in.
    pub client_kind: ClientKind,
}

impl Sts {
    /// The baseline alone (exists, enabled, assigned), without policies: for
    /// callers that know nothing of the client's whereabouts.
    pub async fn app_admits(&self, app: &App, user_id: &str) -> Result<Admission, StsError> {
        self.admission(app, user_id, None).await
    }

    /// Whether `app` admits `user_id` now, at `presence`: the user exists in
    /// the app's tenant, is enabled, and is assigned to the app directly or
    /// through a group; then the tenant's policies, which may block, or demand
    /// a second factor the session lacks. Not cached: callers that ask on every
    /// request keep their own cache around it.
    pub async fn app_admits_from(&self, app: &App, user_id: &str, presence: &Presence) -> Result<Admission, StsError> {
        self.admission(app, user_id, Some(presence)).await
    }

    async fn admission(&self, app: &App, user_id: &str, presence: Option<&Presence>) -> Result<Admission, StsError> {
        let user = match self.store.user(&app.tenant_id, user_id).await {
            Ok(u) => u,
            Err(StoreError::NotFound) => return Ok(Admission::Denied(Denial::NoSuchUser)),
            Err(e) => return Err(e.into()),
        };
        self.admission_of(app, &user, presence).await
    }

    /// [`Sts::admission`] of a user this request has just read from the app's
    /// tenant (not read again).
    pub(crate) async fn admission_of(
        &self,
        app: &App,
        user: &User,
        presence: Option<&Presence>,
    ) -> Result<Admission, StsError> {
        if user.tenant_id != app.tenant_id {
            return Ok(Admission::Denied(Denial::NoSuchUser));
        }
        if !user.enabled {
            return Ok(Admission::Denied(Denial::Disabled));
        }
        if !self.store.user_assigned_to_app(&app.id, &user.id).await? {
            return Ok(Admission::Denied(Denial::NotAssigned));
        }
        if let Some(presence) = presence {
            let tenant = self.store.tenant(&app.tenant_id).await?;
            let verdict = self
                .evaluate_access(AccessRequest {
                    tenant: &tenant,
                    username: &user.username,
                    user: Some(user),
                    client_id: Some(&app.client_id),
                    app: Some(app),
                    ip: presence.ip,
                    client_kind: presence.client_kind,
                    risk: None,
                })
                .await?;
            let outcome = Sts::outcome_of(&verdict, presence.mfa);
            self.log_decision(
                &tenant,
                user,
                Some(&app.client_id),
                presence.ip,
                outcome,
                "app access",
                &verdict,
            )
            .await?;
            if verdict.decision.blocked() {
                let reason = verdict.decision.reason().unwrap_or("blocked by an access policy");
                return Ok(Admission::Denied(Denial::Policy(reason.to_owned())));
            }
            if verdict.decision.requires_mfa() && !presence.mfa {
                let reason = verdict
                    .decision
                    .reason()
                    .unwrap_or("multi-factor authentication is required");
                return Ok(Admission::StepUp(reason.to_owned()));
            }
        }
        let groups = self
            .store
            .user_groups(&app.tenant_id, &user.id)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect();
        Ok(Admission::Allowed { groups })
    }
}
