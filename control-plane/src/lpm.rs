//! Longest-prefix match over IPv4 and IPv6 prefixes: a binary trie per address family, one level
//! per bit, so a lookup costs at most 32 or 128 steps whatever the table size.
//!
//! Prefixes are inserted, changed and removed in place (a withdrawn BGP route costs two walks,
//! not a rebuild). Removal unlinks the nodes no longer on the way to any prefix and keeps them
//! on a free list that insertion takes from first, so the table's size follows the prefixes it
//! holds now, not every prefix ever inserted: an appliance reporting fresh /128s at every
//! report cannot grow it.

use std::net::IpAddr;

use oca_protocol::prefix::Prefix;

const NONE: u32 = u32::MAX;

#[derive(Clone)]
struct Node {
    child: [u32; 2],
    value: u32,
}

/// A prefix table mapping prefixes to values of type `T`.
pub struct PrefixTable<T> {
    v4: Vec<Node>,
    v6: Vec<Node>,
    /// Unlinked nodes of each family, reused before the vectors grow.
    free4: Vec<u32>,
    free6: Vec<u32>,
    values: Vec<(Prefix, T)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        let root = Node {
            child: [NONE, NONE],
            value: NONE,
        };
        PrefixTable {
            v4: vec![root.clone()],
            v6: vec![root],
            free4: Vec::new(),
            free6: Vec::new(),
            values: Vec::new(),
        }
    }
}

fn bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

impl<T> PrefixTable<T> {
    /// Inserts (or replaces) the value for `prefix`; returns the old value.
    pub fn insert(&mut self, prefix: Prefix, value: T) -> Option<T> {
        let (addr, _) = bits(prefix.addr());
        let (nodes, free) = if prefix.addr().is_ipv4() {
            (&mut self.v4, &mut self.free4)
        } else {
            (&mut self.v6, &mut self.free6)
        };
        let mut at = 0usize;
        for i in 0..u32::from(prefix.bits()) {
            let bit = ((addr >> (127 - i)) & 1) as usize;
            if nodes[at].child[bit] == NONE {
                let fresh = Node {
                    child: [NONE, NONE],
                    value: NONE,
                };
                let idx = match free.pop() {
                    Some(idx) => {
                        nodes[idx as usize] = fresh;
                        idx
                    }
                    None => {
                        nodes.push(fresh);
                        (nodes.len() - 1) as u32
                    }
                };
                nodes[at].child[bit] = idx;
            }
            at = nodes[at].child[bit] as usize;
        }
        if nodes[at].value != NONE {
            let slot = &mut self.values[nodes[at].value as usize].1;
            return Some(std::mem::replace(slot, value));
        }
        nodes[at].value = self.values.len() as u32;
        self.values.push((prefix, value));
        None
    }

    /// The trie node of exactly `prefix`, if the walk to it exists.
    fn node_of(&self, prefix: &Prefix) -> Option<usize> {
        let (addr, _) = bits(prefix.addr());
        let nodes = if prefix.addr().is_ipv4() {
            &self.v4
        } else {
            &self.v6
        };
        let mut at = 0usize;
        for i in 0..u32::from(prefix.bits()) {
            let bit = ((addr >> (127 - i)) & 1) as usize;
            let next = nodes[at].child[bit];
            if next == NONE {
                return None;
            }
            at = next as usize;
        }
        Some(at)
    }

    fn nodes_mut(&mut self, prefix: &Prefix) -> &mut Vec<Node> {
        if prefix.addr().is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// The value stored for exactly `prefix`.
    pub fn get(&self, prefix: &Prefix) -> Option<&T> {
        let node = self.node_of(prefix)?;
        let nodes = if prefix.addr().is_ipv4() {
            &self.v4
        } else {
            &self.v6
        };
        let v = nodes[node].value;
        (v != NONE).then(|| &self.values[v as usize].1)
    }

    /// The value stored for exactly `prefix`, to change in place.
    pub fn get_mut(&mut self, prefix: &Prefix) -> Option<&mut T> {
        let node = self.node_of(prefix)?;
        let v = self.nodes_mut(prefix)[node].value;
        (v != NONE).then(|| &mut self.values[v as usize].1)
    }

    /// Removes `prefix`; returns its value. The last stored value moves into its slot, so this
    /// is two walks whatever the table size.
    pub fn remove(&mut self, prefix: &Prefix) -> Option<T> {
        let node = self.node_of(prefix)?;
        let idx = self.nodes_mut(prefix)[node].value;
        if idx == NONE {
            return None;
        }
        self.nodes_mut(prefix)[node].value = NONE;
        self.prune(prefix);
        let (_, value) = self.values.swap_remove(idx as usize);
        if let Some((moved, _)) = self.values.get(idx as usize) {
            let moved = *moved;
            let at = self
                .node_of(&moved)
                .expect("every stored prefix has its node");
            self.nodes_mut(&moved)[at].value = idx;
        }
        Some(value)
    }

    /// Unlinks the nodes at the end of `prefix`'s walk that lead to no value any more, deepest
    /// first, onto the free list.
    fn prune(&mut self, prefix: &Prefix) {
        let (addr, _) = bits(prefix.addr());
        let (nodes, free) = if prefix.addr().is_ipv4() {
            (&mut self.v4, &mut self.free4)
        } else {
            (&mut self.v6, &mut self.free6)
        };
        // The walk: path[d] is the node at depth d (the root at 0), at most 129 of them.
        let mut path = [0u32; 129];
        let depth = usize::from(prefix.bits());
        for i in 0..depth {
            let bit = ((addr >> (127 - i)) & 1) as usize;
            path[i + 1] = nodes[path[i] as usize].child[bit];
        }
        for d in (1..=depth).rev() {
            let n = &nodes[path[d] as usize];
            if n.value != NONE || n.child != [NONE, NONE] {
                break;
            }
            let bit = ((addr >> (127 - (d - 1))) & 1) as usize;
            nodes[path[d - 1] as usize].child[bit] = NONE;
            free.push(path[d]);
        }
    }

    /// Trie nodes in use (both families, roots included): what the table costs in memory.
    pub fn nodes_in_use(&self) -> usize {
        self.v4.len() + self.v6.len() - self.free4.len() - self.free6.len()
    }

    /// How many prefixes the table holds.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every prefix with its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Prefix, &T)> + '_ {
        self.values.iter().map(|(p, v)| (p, v))
    }

    /// The longest prefix containing `ip`, with its value.
    pub fn longest_match(&self, ip: IpAddr) -> Option<(&Prefix, &T)> {
        self.matches(ip).last()
    }

    /// Every prefix containing `ip`, shortest first.
    pub fn matches(&self, ip: IpAddr) -> impl Iterator<Item = (&Prefix, &T)> + '_ {
        let (addr, width) = bits(ip);
        let nodes = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        let mut at = 0u32;
        let mut depth = 0u32;
        let mut done = false;
        std::iter::from_fn(move || {
            while !done {
                let node = &nodes[at as usize];
                let value = node.value;
                if depth == width {
                    done = true;
                } else {
                    let bit = ((addr >> (127 - depth)) & 1) as usize;
                    at = node.child[bit];
                    depth += 1;
                    done = at == NONE;
                }
                if value != NONE {
                    let (p, v) = &self.values[value as usize];
                    return Some((p, v));
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn longest_wins_and_families_stay_apart() {
        let mut t = PrefixTable::default();
        t.insert(p("0.0.0.0/0"), "default");
        t.insert(p("10.0.0.0/8"), "ten");
        t.insert(p("10.1.0.0/16"), "ten-one");
        t.insert(p("2001:db8::/32"), "doc6");
        assert_eq!(
            t.longest_match("10.1.2.3".parse().unwrap()).unwrap().1,
            &"ten-one"
        );
        assert_eq!(
            t.longest_match("10.2.2.3".parse().unwrap()).unwrap().1,
            &"ten"
        );
        assert_eq!(
            t.longest_match("192.0.2.1".parse().unwrap()).unwrap().1,
            &"default"
        );
        assert_eq!(
            t.longest_match("2001:db8::1".parse().unwrap()).unwrap().1,
            &"doc6"
        );
        assert!(
            t.longest_match("2001:db9::1".parse().unwrap()).is_none(),
            "v4 default does not cover v6"
        );
        let all: Vec<_> = t
            .matches("10.1.0.9".parse().unwrap())
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(all, ["default", "ten", "ten-one"]);
        assert_eq!(t.insert(p("10.0.0.0/8"), "TEN"), Some("ten"));
        let mut host = PrefixTable::default();
        host.insert(p("192.0.2.7/32"), 1);
        host.insert(p("::1/128"), 2);
        assert_eq!(
            host.longest_match("192.0.2.7".parse().unwrap()).unwrap().1,
            &1
        );
        assert_eq!(host.longest_match("::1".parse().unwrap()).unwrap().1, &2);
    }

    /// Property: the trie agrees with a brute-force scan on random tables and addresses.
    #[test]
    fn agrees_with_brute_force() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..50 {
            let mut table = PrefixTable::default();
            let mut list: Vec<(Prefix, usize)> = Vec::new();
            let v6 = round % 2 == 1;
            for i in 0..200 {
                let len = (rnd() % if v6 { 129 } else { 33 }) as u8;
                // Few distinct high bits, so prefixes nest and overlap.
                let raw = rnd() & 0xF0F0_0000_0000_0000;
                let ip: IpAddr = if v6 {
                    IpAddr::V6(((u128::from(raw) << 64) | u128::from(rnd())).into())
                } else {
                    IpAddr::V4(((raw >> 32) as u32).into())
                };
                let prefix = Prefix::containing(ip, len).unwrap();
                table.insert(prefix, i);
                list.retain(|(q, _)| *q != prefix);
                list.push((prefix, i));
                // Every third step also removes a stored prefix, or changes one in place.
                if i % 3 == 2 && !list.is_empty() {
                    let k = (rnd() % list.len() as u64) as usize;
                    let (q, v) = list[k];
                    if i % 2 == 0 {
                        assert_eq!(table.remove(&q), Some(v));
                        assert_eq!(table.remove(&q), None, "gone");
                        list.swap_remove(k);
                    } else {
                        *table.get_mut(&q).unwrap() = v + 1000;
                        list[k].1 = v + 1000;
                    }
                }
            }
            assert_eq!(table.len(), list.len());
            for (q, v) in &list {
                assert_eq!(table.get(q), Some(v));
            }
            for _ in 0..500 {
                let raw = rnd() & 0xF0F0_F000_0000_0000 | (rnd() & 0xff);
                let ip: IpAddr = if v6 {
                    IpAddr::V6(((u128::from(raw) << 64) | u128::from(rnd() & 0xffff)).into())
                } else {
                    IpAddr::V4(((raw >> 32) as u32 | (raw as u32 & 0xff)).into())
                };
                let brute = list
                    .iter()
                    .filter(|(q, _)| q.contains(ip))
                    .max_by_key(|(q, _)| q.bits())
                    .map(|(_, v)| *v);
                assert_eq!(table.longest_match(ip).map(|(_, v)| *v), brute, "{ip}");
            }
        }
    }

    /// An appliance reporting fresh host routes at every report (each report withdrawing the
    /// last's) keeps the table at the size of one report, not of every route ever seen.
    #[test]
    fn churn_reuses_the_nodes_it_frees() {
        let mut t = PrefixTable::default();
        t.insert(p("2001:db8::/32"), 0);
        let base = t.nodes_in_use();
        let batch = |r: u32| -> Vec<Prefix> {
            (0..500u32)
                .map(|i| p(&format!("2001:db8:{r:x}:{i:x}::1/128")))
                .collect()
        };
        let mut high = 0;
        for r in 0..50 {
            let routes = batch(r);
            for q in &routes {
                t.insert(*q, 1);
            }
            high = high.max(t.nodes_in_use());
            for q in &routes {
                assert_eq!(t.remove(q), Some(1));
            }
            assert_eq!(
                t.nodes_in_use(),
                base,
                "round {r}: every freed node unlinked"
            );
        }
        assert!(
            t.v6.len() <= high,
            "{} nodes allocated, {high} at most in use",
            t.v6.len()
        );
        assert_eq!(
            t.longest_match("2001:db8::5".parse().unwrap()).unwrap().1,
            &0
        );
    }
}
