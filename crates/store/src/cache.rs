//! A small read-through cache of rarely changing rows on hot paths (a tenant's
//! domains and agents' public keys at sign-in, published apps by host at the
//! front door, and what each page of a sign-in asks again: the app of an OIDC
//! client, the client, a user's groups, whether a user is assigned to an app,
//! the risk an administrator set for a user).
//!
//! An entry is used while it is younger than the time to live *and* the store's
//! routing generation has not moved since the entry was read: a change made through
//! this process is seen at once, a change made by another instance within the time
//! to live. Use a generation read *before* the query the value comes from.
//! The cache holds at most [`MAX_ENTRIES`] entries; when full it drops
//! every entry (a cheap, bounded policy; refills cost one query each).
//!
//! Age is measured on a [`Clock`](postern_time::Clock) passed in ([`ReadCache::with_clock`]; the
//! system clock by default), so tests move time instead of sleeping. If that
//! clock goes back, entries read "in the future" count as stale: a step of the
//! clock costs refills, never a value older than the time to live.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_time::{SharedClock, SystemClock};

/// Most entries held.
pub const MAX_ENTRIES: usize = 4096;

/// How long an entry may serve without the generation moving.
pub const TIME_TO_LIVE: Duration = Duration::from_secs(2);

struct Entry<V> {
    value: V,
    /// When the value was read, as [`postern_time::Clock::since_epoch`].
    read_at: Duration,
    generation: u64,
}

/// Values of type `V` by key `K`, read under a [`crate::Store::routing_generation`].
pub struct ReadCache<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    ttl: Duration,
    clock: SharedClock,
}

impl<K, V> std::fmt::Debug for ReadCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("ReadCache")
            .field("entries", &entries)
            .field("ttl", &self.ttl)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    /// An empty cache whose entries serve for at most `ttl` by the system clock.
    pub fn new(ttl: Duration) -> Self {
        Self::with_clock(ttl, Arc::new(SystemClock))
    }

    /// An empty cache whose entries serve for at most `ttl` by `clock`.
    pub fn with_clock(ttl: Duration, clock: SharedClock) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            clock,
        }
    }

    /// The cached value for `key` if still good under `generation`.
    pub fn get(&self, key: &K, generation: u64) -> Option<V> {
        let now = self.clock.since_epoch();
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        let fresh = now.checked_sub(entry.read_at).is_some_and(|age| age < self.ttl);
        (entry.generation == generation && fresh).then(|| entry.value.clone())
    }

    /// Remembers `value`, read after the generation was `generation`.
    pub fn put(&self, key: K, value: V, generation: u64) {
        let read_at = self.clock.since_epoch();
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                value,
                read_at,
                generation,
            },
        );
    }
}

/// The store's own caches of what a sign-in reads on several of its pages
/// (and the front door on each new app session). Every write that changes one
/// of these moves the routing generation: apps and their clients, OAuth
/// clients, assignments, group memberships (administrators' and the
/// directory's own at sign-in), groups, users' deletion, user risk.
#[derive(Debug)]
pub(crate) struct SigninReads {
    /// The app whose OIDC client is `(tenant ID, client ID)`, or none.
    pub app_of_client: ReadCache<(String, String), Option<crate::App>>,
    /// OAuth clients by `(tenant ID, client ID)` (found ones only).
    pub clients: ReadCache<(String, String), crate::OAuthClient>,
    /// A user's groups by `(tenant ID, user ID)`.
    pub user_groups: ReadCache<(String, String), Vec<crate::Group>>,
    /// Whether `(app ID, user ID)` is assigned, directly or through a group.
    pub assigned: ReadCache<(String, String), bool>,
    /// The risk an administrator set, by `(tenant ID, user ID)`.
    pub user_risk: ReadCache<(String, String), Option<crate::UserRisk>>,
}

impl SigninReads {
    /// Empty caches whose entries expire by `clock`.
    pub(crate) fn new(clock: &SharedClock) -> Self {
        Self {
            app_of_client: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            clients: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            user_groups: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            assigned: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            user_risk: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use postern_time::{ManualClock, UnixTime};

    fn cache_on(clock: &Arc<ManualClock>) -> ReadCache<&'static str, i32> {
        ReadCache::with_clock(TIME_TO_LIVE, clock.clone())
    }

    #[test]
    fn a_new_generation_invalidates() {
        let clock = ManualClock::starting_at(UnixTime::from_secs(1_000));
        let cache = cache_on(&clock);
        cache.put("a", 1, 7);
        assert_eq!(cache.get(&"a", 7), Some(1));
        assert_eq!(cache.get(&"a", 8), None, "generation moved");
        assert_eq!(cache.get(&"b", 7), None);
    }

    #[test]
    fn reads_serve_for_two_seconds_then_expire() {
        assert_eq!(TIME_TO_LIVE, Duration::from_secs(2));
        let clock = ManualClock::starting_at(UnixTime::from_secs(1_000));
        let cache = cache_on(&clock);
        cache.put("a", 1, 7);
        assert_eq!(cache.get(&"a", 7), Some(1), "just read");
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get(&"a", 7), Some(1), "1 s old");
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get(&"a", 7), None, "2 s old: expired");
        cache.put("a", 2, 7);
        assert_eq!(cache.get(&"a", 7), Some(2), "a new read serves again");
        clock.advance(Duration::from_secs(60));
        assert_eq!(cache.get(&"a", 7), None, "a minute old");
    }

    #[test]
    fn a_clock_gone_back_makes_entries_stale() {
        let clock = ManualClock::starting_at(UnixTime::from_secs(1_000));
        let cache = cache_on(&clock);
        cache.put("a", 1, 7);
        clock.set(UnixTime::from_secs(999));
        assert_eq!(cache.get(&"a", 7), None, "read after now: not trusted");
        clock.set(UnixTime::from_secs(1_001));
        assert_eq!(cache.get(&"a", 7), Some(1), "the clock caught up, 1 s old");
    }

    #[test]
    fn the_system_clock_serves_a_fresh_read() {
        let cache = ReadCache::new(TIME_TO_LIVE);
        cache.put("a", 1, 7);
        assert_eq!(cache.get(&"a", 7), Some(1));
    }

    #[test]
    fn stays_bounded() {
        let cache = ReadCache::new(TIME_TO_LIVE);
        for i in 0..(MAX_ENTRIES * 3) {
            cache.put(i, i, 0);
        }
        let held = cache.entries.lock().map(|e| e.len()).unwrap_or(usize::MAX);
        assert!(held <= MAX_ENTRIES, "{held}");
        assert_eq!(cache.get(&(MAX_ENTRIES * 3 - 1), 0), Some(MAX_ENTRIES * 3 - 1));
    }
}
