//! Conditional access (SEC-2): the one evaluation of a tenant's policies, made
//! for every sign-in (before the password is checked, and again once the user
//! is authenticated), every code `/authorize` issues (single sign-on included,
//! every client), device approvals, refresh grants, and the front door's
//! admission of each app session ([`Sts::app_admits_from`]).
//!
//! The STS gathers the facts (the user and their groups, the app and whether
//! the user is assigned to it, the client's address, the sign-in risk, the
//! kind of client) and `postern_policy::evaluate` decides. Policies and named
//! locations are cached per tenant behind the store's routing generation, so a
//! change made here applies at once (other instances: within the cache's time).

use std::sync::Arc;

use postern_policy::{ClientKind, Decision, NamedLocation, Policy, RiskAssessment, Subject};
use postern_store::{App, SigninEvent, SigninOutcome, Tenant, User};
use serde::Serialize;

use crate::Sts;
use crate::client_ip::ClientIp;
use crate::error::StsError;

/// A tenant's policies and named locations, as last read.
#[derive(Debug, Default)]
pub(crate) struct TenantRules {
    policies: Vec<Policy>,
    locations: Vec<NamedLocation>,
}

/// What is being decided.
#[derive(Clone, Debug)]
pub struct AccessRequest<'a> {
    /// The tenant.
    pub tenant: &'a Tenant,
    /// The sign-in name (typed, normalized), for brute-force signals.
    pub username: &'a str,
    /// The account, when the name is one.
    pub user: Option<&'a User>,
    /// The OAuth client signed in to.
    pub client_id: Option<&'a str>,
    /// The published app, when known (else found from the client).
    pub app: Option<&'a App>,
    /// The client's address.
    pub ip: ClientIp,
    /// How the client signs in.
    pub client_kind: ClientKind,
    /// A risk already assessed for this sign-in (reused after the password, as
    /// a successful sign-in makes its network familiar).
    pub risk: Option<RiskAssessment>,
}

/// A decision and the risk it was made at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessVerdict {
    /// What to do, and why.
    pub decision: Decision,
    /// The sign-in risk, with its signals.
    pub risk: RiskAssessment,
}

/// One policy that applied, as the sign-in log keeps it.
#[derive(Serialize)]
struct Applied<'a> {
    policy: &'a str,
    id: &'a str,
    state: postern_policy::PolicyState,
    grants: &'a [postern_policy::Grant],
    effect: Option<postern_policy::Effect>,
    why: &'a [String],
}

impl AccessVerdict {
    /// The sign-in log's record of the decision: effect, reasons, what
    /// report-only policies would have done, the policies that applied (with
    /// their grants and why), and the risk with its signals.
    pub fn log_record(&self) -> serde_json::Value {
        let applied: Vec<Applied<'_>> = self
            .decision
            .applied()
            .map(|e| Applied {
                policy: &e.policy,
                id: &e.policy_id,
                state: e.state,
                grants: &e.grants,
                effect: e.effect,
                why: &e.why,
            })
            .collect();
        serde_json::json!({
            "effect": self.decision.effect,
            "reasons": self.decision.reasons,
            "report_only": {
                "would_be": self.decision.report_only_effect,
                "policies": applied.iter().filter(|a| a.state == postern_policy::PolicyState::ReportOnly)
                    .map(|a| a.policy).collect::<Vec<_>>(),
            },
            "policies": applied,
            "risk": self.risk,
        })
    }

    /// Whether the log should hear of it even when nothing was enforced: a
    /// policy applied (report-only included) or the sign-in carries risk.
    pub fn noteworthy(&self) -> bool {
        self.decision.applied().next().is_some() || !self.risk.signals.is_empty()
    }
}

/// The `detail` of a sign-in event that carries a decision: `{"note", "access"}`.
pub(crate) fn detail_with(note: &str, verdict: &AccessVerdict) -> String {
    serde_json::json!({ "note": note, "access": verdict.log_record() }).to_string()
}

impl Sts {
    /// The tenant's policies and named locations, from the cache when fresh.
    async fn tenant_rules(&self, tenant_id: &str) -> Result<Arc<TenantRules>, StsError> {
        let generation = self.store.routing_generation();
        let key = tenant_id.to_owned();
        if let Some(rules) = self.access_rules.get(&key, generation) {
            return Ok(rules);
        }
        let rules = Arc::new(TenantRules {
            policies: self.store.policies(tenant_id).await?,
            locations: self.store.locations(tenant_id).await?,
        });
        self.access_rules.put(key, rules.clone(), generation);
        Ok(rules)
    }

    /// Evaluates the tenant's policies for `request`, counting the decision
    /// in `postern_policy_decisions_total`.
    pub async fn evaluate_access(&self, request: AccessRequest<'_>) -> Result<AccessVerdict, StsError> {
        let tenant_id = &request.tenant.id;
        let verdict = self.preview_access(request).await?;
        postern_metrics::record::policy_decision(tenant_id, verdict.decision.effect.as_str());
        Ok(verdict)
    }

    /// Evaluates the tenant's policies for `request` without counting it as a
    /// decision: a what-if of the admin API, not a sign-in.
    pub async fn preview_access(&self, request: AccessRequest<'_>) -> Result<AccessVerdict, StsError> {
        let tenant = request.tenant;
        let rules = self.tenant_rules(&tenant.id).await?;
        let found_app;
        let app = match (request.app, request.client_id) {
            (Some(app), _) => Some(app),
            (None, Some(client_id)) => {
                found_app = self.store.app_of_client(&tenant.id, client_id).await?;
                found_app.as_ref()
            }
            (None, None) => None,
        };
        let group_ids: Vec<String> = match request.user {
            Some(user) => self
                .store
                .user_groups(&tenant.id, &user.id)
                .await?
                .into_iter()
                .map(|g| g.id)
                .collect(),
            None => Vec::new(),
        };
        let assigned = match (app, request.user) {
            (Some(app), Some(user)) => Some(self.store.user_assigned_to_app(&app.id, &user.id).await?),
            (Some(_), None) => Some(false),
            (None, _) => None,
        };
        let risk = match request.risk {
            Some(risk) => risk,
            None => {
                self.assess_risk(tenant, request.username, request.user, request.ip)
                    .await?
            }
        };
        let client_id = request.client_id.or(app.map(|a| a.client_id.as_str()));
        let decision = postern_policy::evaluate(
            &rules.policies,
            &rules.locations,
            &Subject {
                user_id: request.user.map(|u| u.id.as_str()),
                group_ids: &group_ids,
                app_id: app.map(|a| a.id.as_str()),
                client_id,
                ip: request.ip.0,
                risk: risk.level,
                client_kind: request.client_kind,
                assigned,
            },
        );
        Ok(AccessVerdict { decision, risk })
    }

    /// Records a decision made outside the sign-in pages (single sign-on, a
    /// refresh, the front door) in the sign-in log, when it is worth a line:
    /// anything but a success, or a policy applied, or the sign-in carries risk.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn log_decision(
        &self,
        tenant: &Tenant,
        user: &User,
        client_id: Option<&str>,
        ip: ClientIp,
        outcome: SigninOutcome,
        note: &str,
        verdict: &AccessVerdict,
    ) -> Result<(), StsError> {
        if outcome == SigninOutcome::Success && !verdict.noteworthy() {
            return Ok(());
        }
        self.store
            .log_signin(&SigninEvent {
                id: String::new(),
                tenant_id: tenant.id.clone(),
                at: self.now(),
                username: user.username.clone(),
                user_id: Some(user.id.clone()),
                client_id: client_id.map(str::to_owned),
                ip: ip.to_string(),
                outcome,
                detail: detail_with(note, verdict),
            })
            .await?;
        Ok(())
    }

    /// The log outcome of a decision for a session with (`mfa`) or without a
    /// second factor.
    pub(crate) fn outcome_of(verdict: &AccessVerdict, mfa: bool) -> SigninOutcome {
        if verdict.decision.blocked() {
            SigninOutcome::Blocked
        } else if verdict.decision.requires_mfa() && !mfa {
            SigninOutcome::Interrupted
        } else {
            SigninOutcome::Success
        }
    }
}
