//! Rendezvous (highest-random-weight) hashing of content ids over disks.
//!
//! The score of a disk for an id is `mix64(fnv1a64(disk_key || 0x00 || id))`; the disk with the
//! highest score holds the id. The function is spelled out here so that every part of the system
//! (daemon, fill agent, tools in other languages) places the same id on the same disk.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// The splitmix64 finaliser: FNV alone clusters on short keys that differ in their last bytes.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous score of `disk_key` for `id`; higher wins.
pub fn score(disk_key: &str, id: &str) -> u64 {
    mix64(fnv1a64(&[disk_key.as_bytes(), &[0], id.as_bytes()]))
}

/// Indices of `disk_keys` ordered from the disk that should hold `id` to the least preferred.
pub fn rank<'k>(disk_keys: impl IntoIterator<Item = &'k str>, id: &str) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = disk_keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| (score(k, id), i))
        .collect();
    // Ties (astronomically rare) break on the index so the order is total and stable.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_vectors() {
        // Pinned (and computed independently in Python) so that a change to the function, which
        // would move every file, fails loudly.
        assert_eq!(
            score("/srv/oca/disk0", "80100172_1080p.mp4"),
            0xd4df_c119_2cf7_9f72
        );
        assert_eq!(rank(["/d0", "/d1", "/d2"], "abc"), vec![1, 2, 0]);
    }

    #[test]
    fn spreads_evenly_and_moves_little_when_a_disk_goes() {
        let disks = ["/d0", "/d1", "/d2", "/d3"];
        let mut counts = [0usize; 4];
        let mut moved = 0;
        for n in 0..20_000 {
            let id = format!("title{n}_720p.mp4");
            let first = rank(disks, &id)[0];
            counts[first] += 1;
            let without_d3 = rank(disks[..3].iter().copied(), &id)[0];
            if first != 3 && without_d3 != first {
                moved += 1;
            }
        }
        for c in counts {
            assert!((4_500..5_500).contains(&c), "uneven spread {counts:?}");
        }
        assert_eq!(
            moved, 0,
            "ids not on the removed disk must stay where they are"
        );
    }
}
