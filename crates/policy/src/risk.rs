//! Sign-in risk without I/O: the signals and the level they add up to, the list
//! of anonymising networks (parsed from text), and the arithmetic of impossible
//! travel. The STS gathers the facts (files, sign-in history, GeoIP) and asks
//! here what they mean.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{RiskLevel, parse_range};

/// What raised the risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The address is on the list of anonymising networks (Tor exits, VPNs).
    AnonymizingNetwork,
    /// The user has signed in before, never from this network.
    UnfamiliarNetwork,
    /// The user's last sign-in was too far away to have travelled since.
    ImpossibleTravel,
    /// Many accounts failed from this network recently.
    PasswordSpraying,
    /// This account failed from many networks recently.
    BruteForce,
    /// An administrator set the user's risk.
    UserRisk,
}

/// One signal, with its level and a sentence explaining it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskSignal {
    /// What it is.
    pub kind: SignalKind,
    /// How risky it makes the sign-in.
    pub level: RiskLevel,
    /// Why, with the facts (no secret).
    pub detail: String,
}

/// The sign-in risk: the highest level of its signals, and the signals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskAssessment {
    /// The level.
    pub level: RiskLevel,
    /// Every signal raised.
    pub signals: Vec<RiskSignal>,
}

impl RiskAssessment {
    /// Adds a signal; the level is the highest seen.
    pub fn raise(&mut self, kind: SignalKind, level: RiskLevel, detail: impl Into<String>) {
        self.level = self.level.max(level);
        self.signals.push(RiskSignal {
            kind,
            level,
            detail: detail.into(),
        });
    }

    /// Whether a signal of `kind` was raised.
    pub fn has(&self, kind: SignalKind) -> bool {
        self.signals.iter().any(|s| s.kind == kind)
    }
}

/// A list of addresses and ranges (anonymising networks), one per line in its
/// text form; `#` starts a comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressList {
    addresses: HashSet<IpAddr>,
    ranges: Vec<IpNet>,
}

impl AddressList {
    /// Parses the text of a list. Returns the list and the lines it could not
    /// read (1-based line number and the line).
    pub fn parse(text: &str) -> (AddressList, Vec<(usize, String)>) {
        let mut list = AddressList::default();
        let mut bad = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            // Tor's exit list says "ExitAddress 1.2.3.4 2024-…": take the address.
            let token = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["ExitAddress", addr, ..] => (*addr).to_owned(),
                [one] => (*one).to_owned(),
                _ => {
                    if !line.starts_with("ExitNode")
                        && !line.starts_with("Published")
                        && !line.starts_with("LastStatus")
                    {
                        bad.push((n + 1, raw.to_owned()));
                    }
                    continue;
                }
            };
            match parse_range(&token) {
                Ok(net) if net.prefix_len() == net.max_prefix_len() => {
                    list.addresses.insert(net.addr());
                }
                Ok(net) => list.ranges.push(net),
                Err(_) => bad.push((n + 1, raw.to_owned())),
            }
        }
        (list, bad)
    }

    /// Whether `ip` is listed.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.addresses.contains(&ip) || self.ranges.iter().any(|r| r.contains(&ip))
    }

    /// How many entries the list has.
    pub fn len(&self) -> usize {
        self.addresses.len() + self.ranges.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A place on Earth and when the user was there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sighting {
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// Unix seconds.
    pub at: i64,
}

/// A journey that could not have been made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Travel {
    /// Great-circle distance in kilometres.
    pub km: f64,
    /// Hours between the two sightings.
    pub hours: f64,
    /// The speed it would have taken, in km/h.
    pub kmh: f64,
}

/// Mean Earth radius in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0;
/// Journeys shorter than this are never impossible: GeoIP places addresses
/// of one city (or one mobile operator) hundreds of kilometres apart.
pub const MIN_TRAVEL_KM: f64 = 500.0;

/// Great-circle distance between two sightings (haversine), in kilometres.
pub fn distance_km(a: &Sighting, b: &Sighting) -> f64 {
    let (la1, la2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dla = la2 - la1;
    let dlo = (b.longitude - a.longitude).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The journey from `before` to `now`, if it is impossible: longer than
/// [`MIN_TRAVEL_KM`] and faster than `max_kmh`.
pub fn impossible_travel(before: &Sighting, now: &Sighting, max_kmh: f64) -> Option<Travel> {
    let km = distance_km(before, now);
    if km < MIN_TRAVEL_KM {
        return None;
    }
    // At least a minute apart, so two sign-ins in one second are not infinitely fast.
    let seconds = (now.at - before.at).max(60) as f64;
    let hours = seconds / 3600.0;
    let kmh = km / hours;
    (kmh > max_kmh).then_some(Travel { km, hours, kmh })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_the_highest_signal() {
        let mut r = RiskAssessment::default();
        assert_eq!(r.level, RiskLevel::None);
        r.raise(SignalKind::UnfamiliarNetwork, RiskLevel::Low, "new network");
        r.raise(SignalKind::AnonymizingNetwork, RiskLevel::High, "tor");
        r.raise(SignalKind::BruteForce, RiskLevel::Medium, "many networks");
        assert_eq!(r.level, RiskLevel::High);
        assert_eq!(r.signals.len(), 3);
        assert!(r.has(SignalKind::BruteForce));
        assert!(!r.has(SignalKind::UserRisk));
    }

    #[test]
    fn address_lists_read_plain_lines_cidrs_and_tor_exit_lists() {
        let text = "# Tor exits\n198.51.100.7\n203.0.113.0/24  # a VPN\n\nExitNode ABCDEF\nPublished 2024-01-01\nExitAddress 192.0.2.99 2024-01-01 10:00:00\n2001:db8::/32\nnonsense here too\n300.0.0.1\n";
        let (list, bad) = AddressList::parse(text);
        assert_eq!(list.len(), 4);
        for ip in [
            "198.51.100.7",
            "203.0.113.200",
            "192.0.2.99",
            "2001:db8::1",
            "::ffff:198.51.100.7",
        ] {
            assert!(list.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.51.100.8", "192.0.2.98", "2001:db9::1"] {
            assert!(!list.contains(ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![9, 10]);
    }

    fn at(latitude: f64, longitude: f64, at: i64) -> Sighting {
        Sighting {
            latitude,
            longitude,
            at,
        }
    }

    #[test]
    fn distances_are_great_circles() {
        // Paris to New York: about 5,837 km.
        let d = distance_km(&at(48.8566, 2.3522, 0), &at(40.7128, -74.0060, 0));
        assert!((d - 5837.0).abs() < 15.0, "{d}");
        assert!(distance_km(&at(10.0, 10.0, 0), &at(10.0, 10.0, 0)) < 1e-9);
        // Antipodes: half the circumference.
        let d = distance_km(&at(0.0, 0.0, 0), &at(0.0, 180.0, 0));
        assert!((d - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1.0, "{d}");
    }

    #[test]
    fn travel_is_impossible_only_when_far_and_fast() {
        let paris = at(48.8566, 2.3522, 0);
        // New York an hour later: ~5,800 km/h.
        let t = impossible_travel(&paris, &at(40.7128, -74.0060, 3600), 1000.0).unwrap();
        assert!((t.kmh - 5837.0).abs() < 20.0, "{t:?}");
        assert!((t.hours - 1.0).abs() < 1e-9);
        // Twelve hours later: a flight, possible.
        assert!(impossible_travel(&paris, &at(40.7128, -74.0060, 12 * 3600), 1000.0).is_none());
        // Lyon (~390 km) a minute later: too close to judge.
        assert!(impossible_travel(&paris, &at(45.764, 4.8357, 60), 1000.0).is_none());
        // The same second counts as a minute, not as infinite speed.
        let t = impossible_travel(&paris, &at(40.7128, -74.0060, 0), 1000.0).unwrap();
        assert!(t.kmh.is_finite());
    }
}
