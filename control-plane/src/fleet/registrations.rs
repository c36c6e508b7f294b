//! Registrations applied to the view in place: a new appliance, a new ISP site, and changes to
//! a site's parent or an appliance's URL and capacity, without reloading the view (which reads
//! every appliance's routes and inventory under the view's write lock: seconds at 20,000
//! appliances, while no play is answered).
//!
//! What cannot be placed in place says so (the caller then reloads the view whole):
//! - a new IXP site: its region's IXP sites must stay one run of site numbers
//!   ([`Snapshot::region_fallback_numbers`]), and the numbers after it would shift;
//! - a site whose kind or region changed, or an appliance that moved to another site: their
//!   numbers, and every holder list sorted by them, would change;
//! - an appliance whose site the view does not know yet.
//!
//! A new ISP site takes the next unused number. Sites are numbered by (region, IXP sites first,
//! id) at load so that one site and one region's IXP sites are each a run; an ISP site is only
//! ever looked up on its own, so a number out of that order keeps every run intact. The next
//! reload numbers it in order again.

use std::collections::HashSet;

use oca_protocol::admin::{Site, SiteKind};

use super::{Candidate, SiteInfo, Snapshot};

/// Why a registration needs the whole view reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// A new IXP site, or a site's kind or region changed.
    SiteRenumbered,
    /// An appliance moved to another site.
    ApplianceMoved,
    /// An appliance of a site the view does not hold.
    UnknownSite,
}

impl Snapshot {
    /// Applies a site as committed: a new ISP site or a new parent in place.
    pub fn put_site(&mut self, s: &Site) -> Result<(), Reload> {
        if let Some(cur) = self.sites.get_mut(&s.id) {
            if cur.kind != s.kind || cur.region != s.region {
                return Err(Reload::SiteRenumbered);
            }
            cur.parent.clone_from(&s.parent);
            return Ok(());
        }
        // An appliance may name a site with no row (numbered after every region at load).
        if s.kind == SiteKind::Ixp || self.site_nos.contains_key(&s.id) {
            return Err(Reload::SiteRenumbered);
        }
        let next = self.site_nos.values().max().map_or(0, |n| n + 1);
        self.site_nos.insert(s.id.clone(), next);
        self.sites.insert(
            s.id.clone(),
            SiteInfo {
                kind: s.kind,
                parent: s.parent.clone(),
                region: s.region.clone(),
            },
        );
        Ok(())
    }

    /// Applies an appliance as committed: a new one joins its site holding nothing and hearing
    /// nothing until it reports, kept out of steering for `gate` if the live checks say so
    /// (its own verdict only: recomputing every appliance's cost a pass over the fleet per
    /// registration); a known one takes its new URL and capacity.
    pub fn put_appliance(&mut self, a: Candidate, gate: Option<String>) -> Result<(), Reload> {
        if let Some(&i) = self.index.get(&a.id) {
            let cur = &mut self.appliances[i];
            if cur.site != a.site {
                return Err(Reload::ApplianceMoved);
            }
            cur.url = a.url;
            cur.capacity_bps = a.capacity_bps;
            return Ok(());
        }
        let (Some(&n), true) = (self.site_nos.get(&a.site), self.sites.contains_key(&a.site))
        else {
            return Err(Reload::UnknownSite);
        };
        let i = self.appliances.len();
        self.index.insert(a.id.clone(), i);
        self.by_site.entry(a.site.clone()).or_default().push(i);
        self.appliances.push(a);
        self.site_no.push(n);
        self.statics.push(Vec::new());
        self.bgp.push(None);
        self.held.push(HashSet::new());
        self.inventory_seqs.push(None);
        if let Some(why) = gate {
            self.gates.insert(i, why);
        }
        Ok(())
    }
}
