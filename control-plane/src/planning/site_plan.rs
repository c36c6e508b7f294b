//! A site's plan: what each site keeps, and on which of its appliances (docs/architecture.md, "Fill manifest").
//!
//! Content is taken in popularity order until the site's storage is used; each file goes to the
//! appliances that rank highest for it by rendezvous hashing weighted by storage (so adding or
//! removing one appliance moves only the files that rank it first, its share), `copies`
//! replicas for the most popular files and one for the rest.

use std::collections::HashMap;

/// Share of each appliance's storage the planner leaves free (filesystem overhead, fills in
/// progress).
pub const RESERVE: f64 = 0.05;

/// One appliance as the planner sees it.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Appliance id.
    pub id: String,
    /// Storage it reported, in bytes.
    pub storage_bytes: u64,
}

/// One file to place.
#[derive(Clone, Debug)]
pub struct Item {
    /// Content id.
    pub id: String,
    /// Size in bytes.
    pub size: u64,
}

/// A site's plan.
#[derive(Debug, Default)]
pub struct SitePlan {
    /// Content ids per appliance, most popular first.
    pub by_appliance: HashMap<String, Vec<String>>,
    /// The replicas of each planned file, in rendezvous order (the first fills first).
    pub replicas: HashMap<String, Vec<String>>,
}

/// Weighted rendezvous score of `appliance` for `content`: higher wins.
pub fn weight_score(appliance: &str, content: &str, weight: u64) -> f64 {
    let h = oca_store::placement::score(appliance, content);
    let u = (h as f64 + 0.5) / 18_446_744_073_709_551_616.0;
    -(weight.max(1) as f64) / u.ln()
}

/// Plans a site: `items` in popularity order; the first `hot` get `copies` replicas.
pub fn plan_site(slots: &[Slot], items: &[Item], copies: usize, hot: usize) -> SitePlan {
    let mut left: Vec<f64> = slots
        .iter()
        .map(|s| s.storage_bytes as f64 * (1.0 - RESERVE))
        .collect();
    let mut plan = SitePlan::default();
    let mut order: Vec<(f64, usize)> = Vec::with_capacity(slots.len());
    // Once no appliance has room for the smallest file, nothing after fits either: a full
    // site stops there rather than scoring the rest of the catalog (most of it, in a large
    // catalog: the fleet benchmark's reports spent most of their planning time past the end).
    let smallest = items.iter().map(|i| i.size).min().unwrap_or(0) as f64;
    for (rank, item) in items.iter().enumerate() {
        if left.iter().all(|&l| l < smallest) {
            break;
        }
        let want = if rank < hot { copies.max(1) } else { 1 };
        order.clear();
        order.extend(
            slots
                .iter()
                .enumerate()
                .map(|(i, s)| (weight_score(&s.id, &item.id, s.storage_bytes), i)),
        );
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut chosen = Vec::new();
        for &(_, i) in &order {
            if chosen.len() == want {
                break;
            }
            if left[i] >= item.size as f64 {
                left[i] -= item.size as f64;
                chosen.push(slots[i].id.clone());
            }
        }
        for a in &chosen {
            plan.by_appliance
                .entry(a.clone())
                .or_default()
                .push(item.id.clone());
        }
        if !chosen.is_empty() {
            plan.replicas.insert(item.id.clone(), chosen);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<Slot> {
        (0..n)
            .map(|i| Slot {
                id: format!("oca{i}"),
                storage_bytes: 1 << 40,
            })
            .collect()
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                id: format!("t{i}_1080p.mp4"),
                size: 1 << 30,
            })
            .collect()
    }

    #[test]
    fn adding_or_removing_an_appliance_moves_only_its_share() {
        let content = items(2000);
        let before = plan_site(&slots(10), &content, 2, 200);
        let after_add = plan_site(&slots(11), &content, 2, 200);
        let mut moved = 0;
        for (id, reps) in &before.replicas {
            let now = &after_add.replicas[id];
            for r in reps {
                if !now.contains(r) {
                    moved += 1;
                    // What left an old appliance went to the new one.
                    assert!(
                        now.contains(&"oca10".to_string()),
                        "{id}: {reps:?} -> {now:?}"
                    );
                }
            }
        }
        let new_share = after_add.by_appliance["oca10"].len();
        assert_eq!(moved, new_share, "only the new appliance's share moved");
        assert!(
            (100..=300).contains(&new_share),
            "about 1/11 of 2,200 replicas: {new_share}"
        );
        // Removing oca3: only its files get a new home.
        let mut fewer = slots(10);
        fewer.remove(3);
        let after_remove = plan_site(&fewer, &content, 2, 200);
        for (id, reps) in &before.replicas {
            let now = &after_remove.replicas[id];
            if !reps.contains(&"oca3".to_string()) {
                assert_eq!(reps, now, "{id} moved though oca3 did not hold it");
            }
        }
    }

    #[test]
    fn popular_files_get_copies_storage_is_respected_and_weight_counts() {
        let mut s = slots(4);
        s[0].storage_bytes = 3 << 30; // room for 2 files after the reserve
        let content = items(40);
        let plan = plan_site(&s, &content, 3, 5);
        for (rank, item) in content.iter().enumerate() {
            let n = plan.replicas[&item.id].len();
            assert_eq!(n, if rank < 5 { 3 } else { 1 }, "{}", item.id);
        }
        assert!(plan.by_appliance.get("oca0").map_or(0, Vec::len) <= 2);
        // Weighted: an appliance with four times the storage gets about four times the files.
        let weighted = vec![
            Slot {
                id: "big".into(),
                storage_bytes: 4 << 40,
            },
            Slot {
                id: "small".into(),
                storage_bytes: 1 << 40,
            },
        ];
        let plan = plan_site(&weighted, &items(5000), 1, 0);
        let (b, sm) = (
            plan.by_appliance["big"].len(),
            plan.by_appliance["small"].len(),
        );
        assert!((3.2..4.8).contains(&(b as f64 / sm as f64)), "{b} / {sm}");
    }

    #[test]
    fn a_site_too_full_for_large_files_still_takes_a_smaller_one_further_down() {
        let s = vec![Slot {
            id: "oca0".into(),
            storage_bytes: 3 << 30,
        }];
        let mut content = items(5);
        content[4].size = 1 << 20;
        let plan = plan_site(&s, &content, 1, 0);
        let kept = &plan.by_appliance["oca0"];
        assert_eq!(kept, &["t0_1080p.mp4", "t1_1080p.mp4", "t4_1080p.mp4"]);
    }

    #[test]
    fn a_full_site_keeps_the_most_popular() {
        let mut s = slots(2);
        for x in &mut s {
            x.storage_bytes = 10 << 30;
        }
        let plan = plan_site(&s, &items(100), 1, 0);
        let kept: usize = plan.by_appliance.values().map(Vec::len).sum();
        assert_eq!(kept, 18, "9 GiB usable on each");
        assert!(plan.replicas.contains_key("t0_1080p.mp4"));
        assert!(!plan.replicas.contains_key("t99_1080p.mp4"));
    }
}
