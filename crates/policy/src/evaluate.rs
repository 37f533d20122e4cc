//! The one evaluation of a tenant's policies for one sign-in or request.
//!
//! Deterministic: every policy that is not disabled is evaluated, in order of
//! name then ID, whatever order they came in; the grants of the enforced
//! policies that apply are combined, and block wins over everything. Report-only
//! policies are evaluated the same way, and what they would have done is
//! reported beside the decision, never enforced. A built-in rule refuses
//! legacy authentication (a non-interactive password grant) before any policy.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    AppRef, ClientKind, Conditions, Grant, LocationRef, NamedLocation, Policy, PolicyState, RiskLevel, UserRef,
};

/// What is known of the sign-in or request being decided.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    /// The user, when the name belongs to an account.
    pub user_id: Option<&'a str>,
    /// The IDs of the user's groups.
    pub group_ids: &'a [String],
    /// The published app, when the client is an app's.
    pub app_id: Option<&'a str>,
    /// The OAuth client.
    pub client_id: Option<&'a str>,
    /// The client's address.
    pub ip: IpAddr,
    /// The sign-in risk level.
    pub risk: RiskLevel,
    /// How the client signs in.
    pub client_kind: ClientKind,
    /// Whether the user is assigned to the app; `None` when the client is no
    /// app's (nothing to assign).
    pub assigned: Option<bool>,
}

/// What a decision (or a policy) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Nothing demanded.
    #[default]
    Allow,
    /// A second factor is needed.
    RequireMfa,
    /// Refused.
    Block,
}

impl Effect {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::RequireMfa => "require_mfa",
            Effect::Block => "block",
        }
    }
}

/// How one policy fared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The policy's ID (`builtin:…` for built-in rules).
    pub policy_id: String,
    /// Its name.
    pub policy: String,
    /// Its state.
    pub state: PolicyState,
    /// Whether every condition holds.
    pub applies: bool,
    /// Why it applies (one line per condition), or the condition that failed.
    pub why: Vec<String>,
    /// Its grants.
    pub grants: Vec<Grant>,
    /// What it does (or, report-only, would do) to this sign-in, when it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
}

/// The decision, with its explanation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What is enforced.
    pub effect: Effect,
    /// Why, in a sentence per enforced reason (empty when allowed).
    pub reasons: Vec<String>,
    /// What would be enforced if report-only policies were enabled.
    pub report_only_effect: Effect,
    /// Every policy evaluated, in evaluation order.
    pub evaluations: Vec<Evaluation>,
}

impl Decision {
    /// Whether the sign-in is refused.
    pub fn blocked(&self) -> bool {
        self.effect == Effect::Block
    }

    /// Whether a second factor is demanded (and nothing refuses).
    pub fn requires_mfa(&self) -> bool {
        self.effect == Effect::RequireMfa
    }

    /// The policies that apply, enforced and report-only: what the sign-in log
    /// keeps.
    pub fn applied(&self) -> impl Iterator<Item = &Evaluation> {
        self.evaluations.iter().filter(|e| e.applies)
    }

    /// The first reason, for a page or an error.
    pub fn reason(&self) -> Option<&str> {
        self.reasons.first().map(String::as_str)
    }
}

/// Evaluates `policies` (with the tenant's `locations`) for `subject`.
pub fn evaluate(policies: &[Policy], locations: &[NamedLocation], subject: &Subject<'_>) -> Decision {
    let mut decision = Decision::default();
    if subject.client_kind == ClientKind::LegacyPassword {
        decision.effect = Effect::Block;
        decision.report_only_effect = Effect::Block;
        decision
            .reasons
            .push("legacy authentication (a password grant without the sign-in pages) is refused".to_owned());
        decision.evaluations.push(Evaluation {
            policy_id: "builtin:legacy-authentication".to_owned(),
            policy: "Refuse legacy authentication".to_owned(),
            state: PolicyState::Enabled,
            applies: true,
            why: vec!["client: legacy password grant".to_owned()],
            grants: vec![Grant::Block],
            effect: Some(Effect::Block),
        });
        return decision;
    }
    let mut ordered: Vec<&Policy> = policies.iter().filter(|p| p.state != PolicyState::Disabled).collect();
    ordered.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    for policy in ordered {
        let evaluation = evaluate_one(policy, locations, subject);
        if let Some(effect) = evaluation.effect {
            decision.report_only_effect = decision.report_only_effect.max(effect);
            if policy.state == PolicyState::Enabled && effect > Effect::Allow {
                if effect > decision.effect {
                    decision.effect = effect;
                }
                decision.reasons.push(reason(policy, effect, subject));
            }
        }
        decision.evaluations.push(evaluation);
    }
    // Block wins: only block reasons explain a block.
    if decision.effect == Effect::Block {
        decision.reasons.retain(|r| r.starts_with("blocked"));
    }
    decision.report_only_effect = decision.report_only_effect.max(decision.effect);
    decision
}

fn reason(policy: &Policy, effect: Effect, subject: &Subject<'_>) -> String {
    match effect {
        Effect::Block if policy.rules.grants.contains(&Grant::Block) => {
            format!("blocked by the access policy \"{}\"", policy.name)
        }
        Effect::Block => format!(
            "blocked by the access policy \"{}\": the user is not assigned to this application",
            policy.name
        ),
        Effect::RequireMfa => format!(
            "the access policy \"{}\" requires multi-factor authentication",
            policy.name
        ),
        Effect::Allow => format!("allowed by \"{}\" ({})", policy.name, subject.client_kind),
    }
}

/// One policy: whether it applies, why, and what it does.
fn evaluate_one(policy: &Policy, locations: &[NamedLocation], subject: &Subject<'_>) -> Evaluation {
    let conditions = &policy.rules.conditions;
    let mut evaluation = Evaluation {
        policy_id: policy.id.clone(),
        policy: policy.name.clone(),
        state: policy.state,
        applies: false,
        why: Vec::new(),
        grants: policy.rules.grants.clone(),
        effect: None,
    };
    match conditions_hold(conditions, locations, subject) {
        Ok(why) => {
            evaluation.applies = true;
            evaluation.why = why;
            evaluation.effect = Some(effect_of(&policy.rules.grants, subject, &mut evaluation.why));
        }
        Err(failed) => evaluation.why = vec![failed],
    }
    evaluation
}

/// The combined effect of a policy's grants on `subject`.
fn effect_of(grants: &[Grant], subject: &Subject<'_>, why: &mut Vec<String>) -> Effect {
    let mut effect = Effect::Allow;
    for grant in grants {
        let this = match grant {
            Grant::Block => Effect::Block,
            Grant::RequireMfa => Effect::RequireMfa,
            Grant::RequireAssignment => match subject.assigned {
                Some(true) => {
                    why.push("assignment: the user is assigned".to_owned());
                    Effect::Allow
                }
                Some(false) => {
                    why.push("assignment: the user is not assigned".to_owned());
                    Effect::Block
                }
                None => {
                    why.push("assignment: not applicable (the client is no published app)".to_owned());
                    Effect::Allow
                }
            },
        };
        effect = effect.max(this);
    }
    effect
}

/// `Ok(why)` when every condition holds, else `Err(the first that failed)`.
fn conditions_hold(c: &Conditions, locations: &[NamedLocation], s: &Subject<'_>) -> Result<Vec<String>, String> {
    let mut why = Vec::new();
    why.push(users_match(&c.users.include, &c.users.exclude, s)?);
    why.push(apps_match(&c.apps.include, &c.apps.exclude, s)?);
    if let Some(selection) = &c.locations {
        why.push(locations_match(
            &selection.include,
            &selection.exclude,
            locations,
            s.ip,
        )?);
    }
    if !c.risk_levels.is_empty() {
        if !c.risk_levels.contains(&s.risk) {
            return Err(format!("risk: {} is not one of {}", s.risk, list(&c.risk_levels)));
        }
        why.push(format!("risk: {} is one of {}", s.risk, list(&c.risk_levels)));
    }
    if !c.client_kinds.is_empty() {
        if !c.client_kinds.contains(&s.client_kind) {
            return Err(format!(
                "client: {} is not one of {}",
                s.client_kind,
                list(&c.client_kinds)
            ));
        }
        why.push(format!("client: {} is one of {}", s.client_kind, list(&c.client_kinds)));
    }
    Ok(why)
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Which of `refs` holds the subject's user, described.
fn user_hit(refs: &[UserRef], s: &Subject<'_>) -> Option<String> {
    refs.iter().find_map(|r| match r {
        UserRef::All => Some("all users".to_owned()),
        UserRef::User(id) if s.user_id == Some(id.as_str()) => Some(format!("user {id}")),
        UserRef::Group(id) if s.user_id.is_some() && s.group_ids.iter().any(|g| g == id) => {
            Some(format!("member of group {id}"))
        }
        _ => None,
    })
}

fn users_match(include: &[UserRef], exclude: &[UserRef], s: &Subject<'_>) -> Result<String, String> {
    if let Some(hit) = user_hit(exclude, s) {
        return Err(format!("users: excluded ({hit})"));
    }
    match user_hit(include, s) {
        Some(hit) => Ok(format!("users: included ({hit})")),
        None if s.user_id.is_none() => {
            Err("users: no such account, and the policy names no one but accounts".to_owned())
        }
        None => Err("users: not included".to_owned()),
    }
}

fn app_hit(refs: &[AppRef], s: &Subject<'_>) -> Option<String> {
    refs.iter().find_map(|r| match r {
        AppRef::All => Some("all applications".to_owned()),
        AppRef::App(id) if s.app_id == Some(id.as_str()) => Some(format!("app {id}")),
        AppRef::Client(id) if s.client_id == Some(id.as_str()) => Some(format!("client {id}")),
        _ => None,
    })
}

fn apps_match(include: &[AppRef], exclude: &[AppRef], s: &Subject<'_>) -> Result<String, String> {
    if let Some(hit) = app_hit(exclude, s) {
        return Err(format!("apps: excluded ({hit})"));
    }
    app_hit(include, s)
        .map(|hit| format!("apps: included ({hit})"))
        .ok_or_else(|| "apps: not included".to_owned())
}

fn location_hit(refs: &[LocationRef], locations: &[NamedLocation], ip: IpAddr) -> Option<String> {
    refs.iter().find_map(|r| match r {
        LocationRef::Any => Some("any address".to_owned()),
        LocationRef::Trusted => locations.iter().filter(|l| l.trusted).find_map(|l| {
            l.range_holding(ip)
                .map(|net| format!("{net} of trusted location \"{}\"", l.name))
        }),
        LocationRef::Named(id) => locations.iter().filter(|l| &l.id == id).find_map(|l| {
            l.range_holding(ip)
                .map(|net| format!("{net} of location \"{}\"", l.name))
        }),
        LocationRef::Range(net) => net.contains(&ip).then(|| format!("range {net}")),
    })
}

fn locations_match(
    include: &[LocationRef],
    exclude: &[LocationRef],
    locations: &[NamedLocation],
    ip: IpAddr,
) -> Result<String, String> {
    let ip = ip.to_canonical();
    if let Some(hit) = location_hit(exclude, locations, ip) {
        return Err(format!("location: {ip} excluded ({hit})"));
    }
    location_hit(include, locations, ip)
        .map(|hit| format!("location: {ip} included ({hit})"))
        .ok_or_else(|| format!("location: {ip} not included"))
}
