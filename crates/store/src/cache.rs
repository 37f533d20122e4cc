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

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most entries held.
pub const MAX_ENTRIES: usize = 4096;

/// How long an entry may serve without the generation moving.
pub const TIME_TO_LIVE: Duration = Duration::from_secs(2);

struct Entry<V> {
    value: V,
    read_at: Instant,
    generation: u64,
}

/// Values of type `V` by key `K`, read under a [`crate::Store::routing_generation`].
pub struct ReadCache<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    ttl: Duration,
}

impl<K, V> std::fmt::Debug for ReadCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("ReadCache")
            .field("entries", &entries)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    /// An empty cache whose entries serve for at most `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The cached value for `key` if still good under `generation`.
    pub fn get(&self, key: &K, generation: u64) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        (entry.generation == generation && entry.read_at.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    /// Remembers `value`, read after the generation was `generation`.
    pub fn put(&self, key: K, value: V, generation: u64) {
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
                read_at: Instant::now(),
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

impl Default for SigninReads {
    fn default() -> Self {
        Self {
            app_of_client: ReadCache::new(TIME_TO_LIVE),
            clients: ReadCache::new(TIME_TO_LIVE),
            user_groups: ReadCache::new(TIME_TO_LIVE),
            assigned: ReadCache::new(TIME_TO_LIVE),
            user_risk: ReadCache::new(TIME_TO_LIVE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_generation_or_age_invalidates() {
        let cache = ReadCache::new(Duration::from_millis(50));
        cache.put("a", 1, 7);
        assert_eq!(cache.get(&"a", 7), Some(1));
        assert_eq!(cache.get(&"a", 8), None, "generation moved");
        assert_eq!(cache.get(&"b", 7), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"a", 7), None, "too old");
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
