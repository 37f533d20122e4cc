//! Conditional access without I/O: policies (conditions and grants), named locations, sign-in risk, and one deterministic evaluation that explains itself.
//!
//! The STS loads a tenant's policies and named locations from the store, works
//! out the facts of a sign-in (who, which app, from where, how risky, which
//! kind of client) and asks [`evaluate`] what to do. The answer is a
//! [`Decision`]: allow, require MFA, or block, with the reason for each policy
//! that applied, report-only policies included, for the sign-in log and the
//! admin API's "what if".
#![warn(missing_docs)]

mod evaluate;
#[cfg(test)]
mod matrix;
mod model;
mod risk;

pub use evaluate::{Decision, Effect, Evaluation, Subject, evaluate};
pub use model::{
    AppRef, ClientKind, Conditions, Grant, LocationRef, NamedLocation, ParseError, Policy, PolicyRules, PolicyState,
    RiskLevel, Selection, UserRef, parse_range,
};
pub use risk::{
    AddressList, MIN_TRAVEL_KM, RiskAssessment, RiskSignal, Sighting, SignalKind, Travel, distance_km,
    impossible_travel,
};
