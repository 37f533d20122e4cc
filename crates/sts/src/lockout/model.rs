//! Smart lockout against a model (issue 14 item 2): random sequences of right,
//! wrong and inconclusive password checks from a familiar and an unfamiliar
//! network, with time moved on a manual clock, drive the real [`Sts`] on a
//! temporary SQLite database. After every step the decision (locked until when,
//! or proceed), what a failure locked, and the stored counters of both classes of
//! location must equal what a plain in-memory model of the rules says.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use postern_keyring::{Keyring, SecretString};
use postern_store::testing::TestDatabase;
use postern_store::{Backend, LocationClass, LockoutState, NewTenant, NewUser, TenantSettings};
use postern_time::{Clock, ManualClock, UnixTime};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use url::Url;

use super::{
    AttemptOutcome, FAMILIAR_FOR, LockoutDecision, MAX_LOCKOUT_DOUBLINGS, OBSERVATION_WINDOW, REFRESH_FAMILIAR_AFTER,
    REMEMBERED_BAD_PASSWORDS,
};
use crate::client_ip::ClientIp;
use crate::{Sts, StsConfig};

/// The two networks attempts come from.
const NETWORKS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 1, 1, 5)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
];

/// What a password check concluded.
#[derive(Clone, Copy, Debug)]
enum Check {
    Right,
    /// The n-th of a few wrong passwords (so repeats happen).
    Wrong(u8),
    /// The directory did not answer.
    Inconclusive,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Attempt { network: usize, check: Check },
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let check = prop_oneof![
        1 => Just(Check::Right),
        8 => (0u8..8).prop_map(Check::Wrong),
        1 => Just(Check::Inconclusive),
    ];
    prop_oneof![
        10 => ((0usize..2), check).prop_map(|(network, check)| Step::Attempt { network, check }),
        // Within a lockout period, past the familiar network's refresh, past the
        // observation window, past the time a network stays familiar.
        3 => (0u64..700).prop_map(Step::Wait),
        1 => (3_000u64..5_000).prop_map(Step::Wait),
        1 => (80_000u64..100_000).prop_map(Step::Wait),
        1 => Just(Step::Wait(FAMILIAR_FOR.as_secs() + 1)),
    ]
}

/// The model's counters of one class of location.
#[derive(Clone, Debug, Default)]
struct Counters {
    failures: i64,
    lockout_count: i64,
    locked_until: i64,
    last_failure_at: i64,
    /// Wrong passwords remembered, oldest first.
    bad: VecDeque<u8>,
}

impl Counters {
    fn state(&self) -> LockoutState {
        LockoutState {
            failures: self.failures,
            lockout_count: self.lockout_count,
            locked_until: UnixTime::from_secs(self.locked_until),
            last_failure_at: UnixTime::from_secs(self.last_failure_at),
        }
    }
}

/// What the model expects of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Locked(i64),
    /// Proceeds; the failure locked the account until then, if it did.
    Proceeds(Option<i64>),
}

/// The rules of smart lockout, written plainly.
#[derive(Debug, Default)]
struct Model {
    threshold: i64,
    period: i64,
    /// Last successful sign-in from each network.
    networks: [Option<i64>; 2],
    familiar: Counters,
    unfamiliar: Counters,
}

impl Model {
    fn attempt(&mut self, now: i64, network: usize, check: Check) -> Expected {
        let seen = self.networks[network];
        let familiar_since = now - i64::try_from(FAMILIAR_FOR.as_secs()).unwrap();
        let counters = if seen.is_some_and(|s| s > familiar_since) {
            &mut self.familiar
        } else {
            &mut self.unfamiliar
        };
        if counters.locked_until > now {
            return Expected::Locked(counters.locked_until);
        }
        // Failures older than the observation window are forgotten.
        if counters.last_failure_at <= now - i64::try_from(OBSERVATION_WINDOW.as_secs()).unwrap() {
            counters.failures = 0;
            counters.lockout_count = 0;
        }
        match check {
            Check::Inconclusive => Expected::Proceeds(None),
            Check::Right => {
                let refresh = i64::try_from(REFRESH_FAMILIAR_AFTER.as_secs()).unwrap();
                if seen.is_none_or(|s| now - s >= refresh) {
                    self.networks[network] = Some(now);
                }
                counters.failures = 0;
                counters.lockout_count = 0;
                counters.bad.clear();
                Expected::Proceeds(None)
            }
            Check::Wrong(password) => {
                if counters.bad.contains(&password) {
                    return Expected::Proceeds(None);
                }
                if counters.bad.len() >= REMEMBERED_BAD_PASSWORDS {
                    counters.bad.pop_front();
                }
                counters.bad.push_back(password);
                counters.last_failure_at = now;
                counters.failures += 1;
                if counters.failures < self.threshold {
                    return Expected::Proceeds(None);
                }
                let doublings = counters.lockout_count.min(i64::from(MAX_LOCKOUT_DOUBLINGS));
                counters.locked_until = now + self.period * (1 << doublings);
                counters.failures = 0;
                counters.lockout_count += 1;
                Expected::Proceeds(Some(counters.locked_until))
            }
        }
    }
}

/// One STS on one database for every case; each case has its own tenant.
struct Bench {
    sts: Arc<Sts>,
    clock: Arc<ManualClock>,
    cases: AtomicU32,
    _db: TestDatabase,
}

async fn bench() -> Bench {
    let db = TestDatabase::new(Backend::Sqlite).await.unwrap();
    let store = db.store().await.unwrap();
    let keyring = Arc::new(Keyring::from_text(Keyring::generate_entry(1).unwrap().expose()).unwrap());
    let clock = ManualClock::starting_at(UnixTime::from_secs(1_700_000_000));
    let config = StsConfig::new(Url::parse("https://login.example.test").unwrap());
    let sts = Sts::new(store, keyring, clock.clone(), config).await.unwrap();
    Bench {
        sts,
        clock,
        cases: AtomicU32::new(0),
        _db: db,
    }
}

async fn run_case(bench: &Bench, threshold: i64, period: i64, steps: &[Step]) -> Result<(), TestCaseError> {
    let case = bench.cases.fetch_add(1, Ordering::SeqCst);
    let domain = format!("case{case}.test");
    let settings = TenantSettings {
        lockout_threshold: threshold,
        lockout_seconds: period,
        require_mfa: false,
    };
    let new_tenant = NewTenant {
        name: format!("case{case}"),
        display_name: format!("Case {case}"),
        is_system: false,
        settings,
    };
    let admin = NewUser::cloud(&format!("user@{domain}"), "User", None);
    let store = bench.sts.store.clone();
    let (tenant, user) = store
        .create_tenant_with_admin(new_tenant, &domain, admin, None, bench.clock.now())
        .await
        .unwrap();
    let account = user.username.clone();
    let mut model = Model {
        threshold,
        period,
        ..Model::default()
    };
    for (i, step) in steps.iter().enumerate() {
        let (network, check) = match *step {
            Step::Wait(secs) => {
                bench.clock.advance(Duration::from_secs(secs));
                continue;
            }
            Step::Attempt { network, check } => (network, check),
        };
        let now = bench.clock.now().secs();
        let expected = model.attempt(now, network, check);
        let ip = ClientIp(NETWORKS[network]);
        let decision = bench
            .sts
            .check_lockout(&tenant, &account, Some(&user), ip, None)
            .await
            .unwrap();
        let actual = match decision {
            LockoutDecision::Locked { until } => Expected::Locked(until.secs()),
            LockoutDecision::Busy => return Err(TestCaseError::fail(format!("step {i}: busy with nothing in flight"))),
            LockoutDecision::Proceed(attempt) => {
                let password = match check {
                    Check::Wrong(n) => SecretString::from(format!("wrong password {n}")),
                    _ => SecretString::from("unused"),
                };
                let outcome = match check {
                    Check::Right => AttemptOutcome::Success { user_id: &user.id, ip },
                    Check::Wrong(_) => AttemptOutcome::Failure { password: &password },
                    Check::Inconclusive => AttemptOutcome::Inconclusive,
                };
                let locked = bench.sts.record_attempt(&tenant, *attempt, outcome).await.unwrap();
                Expected::Proceeds(locked.map(UnixTime::secs))
            }
        };
        prop_assert_eq!(&actual, &expected, "step {}: {:?} at {}", i, step, now);
        for (class, counters) in [
            (LocationClass::Familiar, &model.familiar),
            (LocationClass::Unfamiliar, &model.unfamiliar),
        ] {
            let stored = store.lockout_state(&tenant.id, &account, class).await.unwrap();
            prop_assert_eq!(stored, counters.state(), "step {}: {:?} counters", i, class);
        }
    }
    Ok(())
}

#[test]
fn smart_lockout_follows_the_model() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = runtime.block_on(bench());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = (1i64..=4, 1i64..=600, proptest::collection::vec(step(), 1..60));
    runner
        .run(&cases, |(threshold, period, steps)| {
            runtime.block_on(run_case(&bench, threshold, period, &steps))
        })
        .unwrap();
}
