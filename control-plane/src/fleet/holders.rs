//! Which appliances hold each content id, sharded so a large first inventory never rehashes the
//! whole index under the fleet's write lock.

use std::collections::{HashMap, HashSet};

/// Which appliances hold each content id, in shards: a first inventory of a million files grows
/// the index one shard at a time, so no single insert under the fleet's write lock rehashes it
/// all.
pub(super) struct Holders {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<HashMap<String, HashSet<usize>>>,
}

impl Default for Holders {
    fn default() -> Holders {
        Holders {
            hasher: Default::default(),
            shards: vec![HashMap::new(); 256],
        }
    }
}

impl Holders {
    fn shard(&self, content: &str) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(content) % self.shards.len() as u64) as usize
    }

    /// The appliances holding `content`.
    pub(super) fn get(&self, content: &str) -> Option<&HashSet<usize>> {
        self.shards[self.shard(content)].get(content)
    }

    pub(super) fn insert(&mut self, content: &str, appliance: usize) {
        let s = self.shard(content);
        match self.shards[s].get_mut(content) {
            Some(set) => {
                set.insert(appliance);
            }
            None => {
                self.shards[s].insert(content.to_string(), HashSet::from([appliance]));
            }
        }
    }

    pub(super) fn remove(&mut self, content: &str, appliance: usize) {
        let s = self.shard(content);
        if let Some(set) = self.shards[s].get_mut(content) {
            set.remove(&appliance);
            if set.is_empty() {
                self.shards[s].remove(content);
            }
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &String> {
        self.shards.iter().flat_map(HashMap::keys)
    }
}
