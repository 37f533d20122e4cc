#![no_main]
//! A conditional-access policy's JSON as the admin API stores it: parsed,
//! checked, written back (the same rules come back) and evaluated.
use postern_policy::{ClientKind, Policy, PolicyRules, PolicyState, RiskLevel, Subject};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(rules) = serde_json::from_slice::<PolicyRules>(data) else {
        return;
    };
    let _ = rules.problems();
    let again: PolicyRules = serde_json::from_slice(&serde_json::to_vec(&rules).unwrap()).unwrap();
    assert_eq!(again, rules);
    let policy = Policy {
        id: "p".into(),
        name: "p".into(),
        state: PolicyState::Enabled,
        rules,
    };
    let groups = vec!["g1".to_owned()];
    let subject = Subject {
        user_id: Some("u1"),
        group_ids: &groups,
        app_id: Some("a1"),
        client_id: Some("c1"),
        ip: "192.0.2.7".parse().unwrap(),
        risk: RiskLevel::Medium,
        client_kind: ClientKind::Browser,
        assigned: Some(true),
    };
    let _ = postern_policy::evaluate(&[policy], &[], &subject);
});
