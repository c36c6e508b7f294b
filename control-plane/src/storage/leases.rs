//! The stream-lease rule both engines apply inside their lease transaction
//! ([`crate::storage::LeaseStore::take_leases`]): one rule, so SQLite and PostgreSQL grant the
//! same plays.

use std::collections::HashMap;

use crate::storage::{LeaseRequest, LeaseRow};

/// Each subscriber's leases on record: (title, expiry).
pub type Held = HashMap<String, Vec<(String, i64)>>;

/// Decides `requests` in order against `held` (the requests' subscribers' leases on record),
/// which it updates with each grant: a request is refused when its subscriber's other leases
/// unexpired at the request's `now` already fill its `max_streams`; otherwise it is granted,
/// renewing a lease on the same title (the later expiry kept) or taking a new slot. Returns
/// whether each was granted, and the leases to write (one per subscriber and title).
pub fn decide(requests: &[LeaseRequest], held: &mut Held) -> (Vec<bool>, Vec<LeaseRow>) {
    let mut written: HashMap<(String, String), i64> = HashMap::new();
    let granted = requests
        .iter()
        .map(|r| {
            let l = &r.lease;
            let leases = held.entry(l.subscriber.clone()).or_default();
            let others = leases
                .iter()
                .filter(|(t, e)| *e > r.now && *t != l.title)
                .count();
            if others >= r.max_streams as usize {
                return false;
            }
            let expires = match leases.iter_mut().find(|(t, _)| *t == l.title) {
                Some(lease) => {
                    lease.1 = lease.1.max(l.expires);
                    lease.1
                }
                None => {
                    leases.push((l.title.clone(), l.expires));
                    l.expires
                }
            };
            written.insert((l.subscriber.clone(), l.title.clone()), expires);
            true
        })
        .collect();
    let mut rows: Vec<LeaseRow> = written
        .into_iter()
        .map(|((subscriber, title), expires)| LeaseRow {
            subscriber,
            title,
            expires,
        })
        .collect();
    // Key order: two replicas' batches write rows in one order and never deadlock.
    rows.sort_by(|a, b| (&a.subscriber, &a.title).cmp(&(&b.subscriber, &b.title)));
    (granted, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(title: &str, max_streams: u32, now: i64, expires: i64) -> LeaseRequest {
        LeaseRequest {
            lease: LeaseRow {
                subscriber: "u".into(),
                title: title.into(),
                expires,
            },
            max_streams,
            now,
        }
    }

    #[test]
    fn a_plan_s_limit_counts_leases_on_record_and_earlier_grants_but_not_renewals() {
        let mut held = Held::new();
        held.insert("u".into(), vec![("a".into(), 100), ("old".into(), 5)]);
        let (granted, rows) = decide(
            &[
                req("b", 2, 10, 200), // a + b: 2, the expired one holds nothing
                req("c", 2, 10, 200), // refused
                req("a", 2, 10, 300), // a renewal takes no new slot
                req("b", 2, 10, 150), // renewal keeps the later expiry
            ],
            &mut held,
        );
        assert_eq!(granted, [true, false, true, true]);
        let got: Vec<(&str, i64)> = rows.iter().map(|r| (r.title.as_str(), r.expires)).collect();
        assert_eq!(got, [("a", 300), ("b", 200)]);
    }
}
