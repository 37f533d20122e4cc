//! The policy matrix: each condition (included, excluded, not named) against
//! each grant, report-only against enforced, block against everything, and
//! the order of policies against the decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use crate::{
    AppRef, ClientKind, Conditions, Effect, Grant, LocationRef, NamedLocation, Policy, PolicyRules, PolicyState,
    RiskLevel, Selection, Subject, UserRef, evaluate,
};

fn all_conditions() -> Conditions {
    Conditions {
        users: Selection {
            include: vec![UserRef::All],
            exclude: vec![],
        },
        apps: Selection {
            include: vec![AppRef::All],
            exclude: vec![],
        },
        locations: None,
        risk_levels: vec![],
        client_kinds: vec![],
    }
}

fn policy(name: &str, state: PolicyState, conditions: Conditions, grants: &[Grant]) -> Policy {
    Policy {
        id: format!("id-{name}"),
        name: name.to_owned(),
        state,
        rules: PolicyRules {
            conditions,
            grants: grants.to_vec(),
        },
    }
}

fn locations() -> Vec<NamedLocation> {
    vec![
        NamedLocation {
            id: "loc-office".into(),
            name: "office".into(),
            ranges: vec!["192.0.2.0/24".parse().unwrap()],
            trusted: true,
        },
        NamedLocation {
            id: "loc-tor".into(),
            name: "tor".into(),
            ranges: vec!["198.51.100.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            trusted: false,
        },
    ]
}

/// Alice (in group "staff"), using app "wiki" (client "wiki-client") from the
/// office with a browser, no risk, assigned.
struct Facts {
    user_id: Option<&'static str>,
    groups: Vec<String>,
    app_id: Option<&'static str>,
    client_id: Option<&'static str>,
    ip: IpAddr,
    risk: RiskLevel,
    kind: ClientKind,
    assigned: Option<bool>,
}

impl Facts {
    fn alice() -> Self {
        Facts {
            user_id: Some("alice"),
            groups: vec!["staff".into()],
            app_id: Some("wiki"),
            client_id: Some("wiki-client"),
            ip: "192.0.2.10".parse().unwrap(),
            risk: RiskLevel::None,
            kind: ClientKind::Browser,
            assigned: Some(true),
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            user_id: self.user_id,
            group_ids: &self.groups,
            app_id: self.app_id,
            client_id: self.client_id,
            ip: self.ip,
            risk: self.risk,
            client_kind: self.kind,
            assigned: self.assigned,
        }
    }
}

/// A condition under test: conditions that name it, a subject it holds for,
/// and one it does not.
struct Case {
    name: &'static str,
    conditions: Conditions,
    holds: Facts,
    fails: Facts,
}

fn with(f: impl FnOnce(&mut Conditions)) -> Conditions {
    let mut c = all_conditions();
    f(&mut c);
    c
}

fn facts(f: impl FnOnce(&mut Facts)) -> Facts {
    let mut x = Facts::alice();
    f(&mut x);
    x
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "users include a user",
            conditions: with(|c| c.users.include = vec![UserRef::User("alice".into())]),
            holds: Facts::alice(),
            fails: facts(|f| f.user_id = Some("bob")),
        },
        Case {
            name: "users include a group",
            conditions: with(|c| c.users.include = vec![UserRef::Group("staff".into())]),
            holds: Facts::alice(),
            fails: facts(|f| f.groups = vec!["guests".into()]),
        },
        Case {
            name: "users include all, an unknown account too",
            conditions: all_conditions(),
            holds: facts(|f| {
                f.user_id = None;
                f.groups.clear();
            }),
            fails: facts(|f| f.kind = ClientKind::LegacyPassword),
        },
        Case {
            name: "users exclude a user",
            conditions: with(|c| c.users.exclude = vec![UserRef::User("alice".into())]),
            holds: facts(|f| f.user_id = Some("bob")),
            fails: Facts::alice(),
        },
        Case {
            name: "users exclude a group",
            conditions: with(|c| c.users.exclude = vec![UserRef::Group("staff".into())]),
            holds: facts(|f| f.groups.clear()),
            fails: Facts::alice(),
        },
        Case {
            name: "a group names no unknown account",
            conditions: with(|c| c.users.include = vec![UserRef::Group("staff".into())]),
            holds: Facts::alice(),
            fails: facts(|f| f.user_id = None),
        },
        Case {
            name: "apps include an app",
            conditions: with(|c| c.apps.include = vec![AppRef::App("wiki".into())]),
            holds: Facts::alice(),
            fails: facts(|f| {
                f.app_id = Some("crm");
                f.client_id = Some("crm-client");
            }),
        },
        Case {
            name: "apps include a client",
            conditions: with(|c| c.apps.include = vec![AppRef::Client("postern-cli".into())]),
            holds: facts(|f| {
                f.app_id = None;
                f.client_id = Some("postern-cli");
            }),
            fails: Facts::alice(),
        },
        Case {
            name: "apps exclude an app",
            conditions: with(|c| c.apps.exclude = vec![AppRef::App("wiki".into())]),
            holds: facts(|f| f.app_id = Some("crm")),
            fails: Facts::alice(),
        },
        Case {
            name: "locations include a range",
            conditions: with(|c| {
                c.locations = Some(Selection {
                    include: vec![LocationRef::Range("203.0.113.0/24".parse().unwrap())],
                    exclude: vec![],
                })
            }),
            holds: facts(|f| f.ip = "203.0.113.9".parse().unwrap()),
            fails: Facts::alice(),
        },
        Case {
            name: "locations include a named location (IPv6, and IPv4-mapped)",
            conditions: with(|c| {
                c.locations = Some(Selection {
                    include: vec![LocationRef::Named("loc-tor".into())],
                    exclude: vec![],
                })
            }),
            holds: facts(|f| f.ip = "2001:db8::5".parse().unwrap()),
            fails: facts(|f| f.ip = "::ffff:203.0.113.9".parse().unwrap()),
        },
        Case {
            name: "locations include the mapped form of a named range",
            conditions: with(|c| {
                c.locations = Some(Selection {
                    include: vec![LocationRef::Named("loc-tor".into())],
                    exclude: vec![],
                })
            }),
            holds: facts(|f| f.ip = "::ffff:198.51.100.4".parse().unwrap()),
            fails: Facts::alice(),
        },
        Case {
            name: "locations: any but trusted",
            conditions: with(|c| {
                c.locations = Some(Selection {
                    include: vec![LocationRef::Any],
                    exclude: vec![LocationRef::Trusted],
                })
            }),
            holds: facts(|f| f.ip = "203.0.113.9".parse().unwrap()),
            fails: Facts::alice(),
        },
        Case {
            name: "locations include trusted",
            conditions: with(|c| {
                c.locations = Some(Selection {
                    include: vec![LocationRef::Trusted],
                    exclude: vec![],
                })
            }),
            holds: Facts::alice(),
            fails: facts(|f| f.ip = "198.51.100.4".parse().unwrap()),
        },
        Case {
            name: "risk levels",
            conditions: with(|c| c.risk_levels = vec![RiskLevel::Medium, RiskLevel::High]),
            holds: facts(|f| f.risk = RiskLevel::High),
            fails: facts(|f| f.risk = RiskLevel::Low),
        },
        Case {
            name: "client kinds",
            conditions: with(|c| c.client_kinds = vec![ClientKind::DeviceFlow, ClientKind::Refresh]),
            holds: facts(|f| f.kind = ClientKind::Refresh),
            fails: Facts::alice(),
        },
    ]
}

/// What each grant does to a subject its policy applies to (assigned).
fn expected(grant: Grant) -> Effect {
    match grant {
        Grant::Block => Effect::Block,
        Grant::RequireMfa => Effect::RequireMfa,
        Grant::RequireAssignment => Effect::Allow,
    }
}

#[test]
fn each_condition_against_each_grant() {
    let locations = locations();
    for case in cases() {
        for grant in [Grant::Block, Grant::RequireMfa, Grant::RequireAssignment] {
            let policies = [policy("p", PolicyState::Enabled, case.conditions.clone(), &[grant])];
            let d = evaluate(&policies, &locations, &case.holds.subject());
            assert_eq!(d.effect, expected(grant), "{} × {grant:?} (holds): {d:#?}", case.name);
            assert!(d.evaluations[0].applies, "{} × {grant:?}", case.name);
            let d = evaluate(&policies, &locations, &case.fails.subject());
            let ignored = d
                .evaluations
                .iter()
                .all(|e| !e.applies || e.policy_id.starts_with("builtin:"));
            assert!(ignored, "{} × {grant:?} (fails): {d:#?}", case.name);
            if case.fails.kind != ClientKind::LegacyPassword {
                assert_eq!(d.effect, Effect::Allow, "{} × {grant:?} (fails)", case.name);
            }
            // Report-only: the same evaluation, nothing enforced.
            let report = [policy("p", PolicyState::ReportOnly, case.conditions.clone(), &[grant])];
            let d = evaluate(&report, &locations, &case.holds.subject());
            assert_eq!(d.effect, Effect::Allow, "{} × {grant:?} report-only", case.name);
            assert_eq!(d.report_only_effect, expected(grant), "{} × {grant:?}", case.name);
            assert!(d.evaluations[0].applies);
            // Disabled: not evaluated at all.
            let off = [policy("p", PolicyState::Disabled, case.conditions.clone(), &[grant])];
            let d = evaluate(&off, &locations, &case.holds.subject());
            assert_eq!((d.effect, d.evaluations.len()), (Effect::Allow, 0), "{}", case.name);
        }
    }
}

#[test]
fn require_assignment_refuses_the_unassigned_and_ignores_clients_without_apps() {
    let policies = [policy(
        "assigned only",
        PolicyState::Enabled,
        all_conditions(),
        &[Grant::RequireAssignment, Grant::RequireMfa],
    )];
    let assigned = Facts::alice();
    assert_eq!(evaluate(&policies, &[], &assigned.subject()).effect, Effect::RequireMfa);
    let not = facts(|f| f.assigned = Some(false));
    let d = evaluate(&policies, &[], &not.subject());
    assert_eq!(d.effect, Effect::Block);
    assert!(d.reason().unwrap().contains("not assigned"), "{d:#?}");
    let no_app = facts(|f| {
        f.app_id = None;
        f.assigned = None;
    });
    let d = evaluate(&policies, &[], &no_app.subject());
    assert_eq!(d.effect, Effect::RequireMfa);
    assert!(d.evaluations[0].why.iter().any(|w| w.contains("not applicable")));
}

#[test]
fn block_wins_and_the_order_of_policies_does_not_matter() {
    let mfa = policy(
        "a: mfa for all",
        PolicyState::Enabled,
        all_conditions(),
        &[Grant::RequireMfa],
    );
    let block = policy(
        "b: block high risk",
        PolicyState::Enabled,
        with(|c| c.risk_levels = vec![RiskLevel::High]),
        &[Grant::Block],
    );
    let report = policy(
        "c: report block",
        PolicyState::ReportOnly,
        all_conditions(),
        &[Grant::Block],
    );
    let risky = facts(|f| f.risk = RiskLevel::High);
    let forward = evaluate(&[mfa.clone(), block.clone(), report.clone()], &[], &risky.subject());
    let backward = evaluate(&[report.clone(), block.clone(), mfa.clone()], &[], &risky.subject());
    assert_eq!(forward, backward, "deterministic whatever the order");
    assert_eq!(forward.effect, Effect::Block);
    assert_eq!(
        forward.reasons,
        vec!["blocked by the access policy \"b: block high risk\"".to_owned()]
    );
    let names: Vec<&str> = forward.evaluations.iter().map(|e| e.policy.as_str()).collect();
    assert_eq!(names, ["a: mfa for all", "b: block high risk", "c: report block"]);

    let calm = Facts::alice();
    let d = evaluate(&[report, block, mfa], &[], &calm.subject());
    assert_eq!(d.effect, Effect::RequireMfa, "the block does not apply; MFA does");
    assert_eq!(d.report_only_effect, Effect::Block, "report-only would have blocked");
    assert_eq!(d.applied().count(), 2);
}

#[test]
fn legacy_authentication_is_refused_without_any_policy() {
    let f = facts(|f| f.kind = ClientKind::LegacyPassword);
    let d = evaluate(&[], &[], &f.subject());
    assert_eq!(d.effect, Effect::Block);
    assert!(d.reason().unwrap().contains("legacy authentication"));
    let allow_all = [policy(
        "mfa",
        PolicyState::Enabled,
        all_conditions(),
        &[Grant::RequireMfa],
    )];
    assert_eq!(evaluate(&allow_all, &[], &f.subject()).effect, Effect::Block);
}

#[test]
fn explanations_name_what_matched_and_what_did_not() {
    let p = policy(
        "tor",
        PolicyState::Enabled,
        with(|c| {
            c.users.include = vec![UserRef::Group("staff".into())];
            c.locations = Some(Selection {
                include: vec![LocationRef::Named("loc-tor".into())],
                exclude: vec![],
            });
        }),
        &[Grant::Block],
    );
    let from_tor = facts(|f| f.ip = "198.51.100.4".parse().unwrap());
    let d = evaluate(std::slice::from_ref(&p), &locations(), &from_tor.subject());
    let why = d.evaluations[0].why.join("; ");
    assert!(why.contains("member of group staff"), "{why}");
    assert!(why.contains("198.51.100.0/24 of location \"tor\""), "{why}");
    let d = evaluate(&[p], &locations(), &Facts::alice().subject());
    assert_eq!(
        d.evaluations[0].why,
        vec!["location: 192.0.2.10 not included".to_owned()]
    );
}
