//! Which appliances hold each content id, sharded so a large first inventory never rehashes the
//! whole index under the fleet's write lock.
//!
//! Each content's holders are a list of appliance indices sorted by (site number, index), where
//! the view numbers sites so that a region's IXP sites are one run of numbers
//! ([`super::Snapshot::site_no`]). Steering then finds the holders inside a client's
//! neighbourhood by binary search, one run of sites at a time, instead of looking at every
//! holder in the fleet: a popular file on hundreds of sites costs a play only the holders near
//! its client.

use std::collections::HashMap;
use std::sync::Arc;

/// Which appliances hold each content id, in shards: a first inventory of a million files grows
/// the index one shard at a time, so no single insert under the fleet's write lock rehashes it
/// all.
pub(super) struct Holders {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<HashMap<Arc<str>, Vec<u32>>>,
}

impl Default for Holders {
    fn default() -> Holders {
        Holders {
            hasher: Default::default(),
            shards: vec![HashMap::new(); 256],
        }
    }
}

/// Where appliance `i` sorts in a holder list, by the site numbers `site_no`.
fn key(site_no: &[u32], i: u32) -> (u32, u32) {
    (site_no[i as usize], i)
}

/// The position of appliance `i` in the holder list `list` (`Err`: where it would go).
pub(super) fn find(list: &[u32], site_no: &[u32], i: usize) -> Result<usize, usize> {
    let want = (site_no[i], i as u32);
    list.binary_search_by_key(&want, |&j| key(site_no, j))
}

/// The part of the holder list `list` at sites numbered in `sites`.
pub(super) fn within<'l>(
    list: &'l [u32],
    site_no: &[u32],
    sites: &std::ops::Range<u32>,
) -> &'l [u32] {
    let lo = list.partition_point(|&j| site_no[j as usize] < sites.start);
    let hi = lo + list[lo..].partition_point(|&j| site_no[j as usize] < sites.end);
    &list[lo..hi]
}

impl Holders {
    fn shard(&self, content: &str) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(content) % self.shards.len() as u64) as usize
    }

    /// The appliances holding `content`, sorted by (site number, index); empty when none.
    pub(super) fn get(&self, content: &str) -> &[u32] {
        self.shards[self.shard(content)]
            .get(content)
            .map_or(&[], Vec::as_slice)
    }

    /// Records that appliance `appliance` holds `content` (`site_no`: every appliance's site
    /// number); returns the index's copy of the id, for the appliance's held set to share.
    pub(super) fn insert(&mut self, content: &str, appliance: usize, site_no: &[u32]) -> Arc<str> {
        let s = self.shard(content);
        let shard = &mut self.shards[s];
        let Some(id) = shard.get_key_value(content).map(|(id, _)| id.clone()) else {
            let id: Arc<str> = Arc::from(content);
            shard.insert(id.clone(), vec![appliance as u32]);
            return id;
        };
        let list = shard.get_mut(content).expect("found above");
        if let Err(at) = find(list, site_no, appliance) {
            list.insert(at, appliance as u32);
        }
        id
    }

    /// Records that appliance `appliance` no longer holds `content`.
    pub(super) fn remove(&mut self, content: &str, appliance: usize, site_no: &[u32]) {
        let s = self.shard(content);
        if let Some(list) = self.shards[s].get_mut(content) {
            if let Ok(at) = find(list, site_no, appliance) {
                list.remove(at);
            }
            if list.is_empty() {
                self.shards[s].remove(content);
            }
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().flat_map(HashMap::keys).map(|id| &**id)
    }
}
