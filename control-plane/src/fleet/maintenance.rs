//! The maintenance windows the fleet view keeps: those not over when it was loaded, indexed by
//! appliance and by site so steering looks at an appliance's own windows only. Whether one is
//! in force is decided per call with the caller's `now`, so a scheduled window starts, and any
//! window ends, without a reload; creating or ending one marks the view stale
//! ([`crate::app::App::fleet_changed`]).

use std::collections::HashMap;

use oca_protocol::admin::{MaintenanceWindow, TargetKind};

use crate::domain::maintenance;

/// Windows by target.
#[derive(Default)]
pub struct Windows {
    all: Vec<MaintenanceWindow>,
    by_appliance: HashMap<String, Vec<usize>>,
    by_site: HashMap<String, Vec<usize>>,
}

impl Windows {
    /// Indexes `all`.
    pub fn new(all: Vec<MaintenanceWindow>) -> Windows {
        let mut w = Windows {
            all,
            ..Windows::default()
        };
        for (i, window) in w.all.iter().enumerate() {
            let by = match window.target_kind {
                TargetKind::Appliance => &mut w.by_appliance,
                TargetKind::Site => &mut w.by_site,
            };
            by.entry(window.target.clone()).or_default().push(i);
        }
        w
    }

    /// The window in force at `now` on appliance `appliance` of site `site`, if any.
    pub fn in_force(&self, appliance: &str, site: &str, now: i64) -> Option<&MaintenanceWindow> {
        if self.all.is_empty() {
            return None;
        }
        let own = self.by_appliance.get(appliance).into_iter().flatten();
        let site_wide = self.by_site.get(site).into_iter().flatten();
        let mine = own.chain(site_wide).map(|&i| &self.all[i]);
        maintenance::in_force(mine, appliance, site, now)
    }

    /// Every window kept.
    pub fn all(&self) -> &[MaintenanceWindow] {
        &self.all
    }
}
