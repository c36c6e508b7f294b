//! Gates: appliances the live checks keep out of steering (unreachable from the control plane,
//! or not qualified when qualification is required), each with its reason, which steering's
//! `explain=1` shows. The live checks own the verdicts (`domain::live`); the view keeps a copy
//! by appliance index so steering's filter step costs one lookup in a map that is usually
//! empty. A reload of the view starts with no gates: whoever reloads sets them again
//! (`App::fleet`).

use super::Snapshot;

impl Snapshot {
    /// Recomputes every appliance's gate: `reason(id)` says why it must be skipped, if it must.
    pub fn set_gates(&mut self, reason: &dyn Fn(&str) -> Option<String>) {
        self.gates = self
            .appliances
            .iter()
            .enumerate()
            .filter_map(|(i, a)| reason(&a.id).map(|r| (i, r)))
            .collect();
    }

    /// Why the appliance at index `i` is kept out of steering, none when it is not.
    pub fn gate(&self, i: usize) -> Option<&str> {
        if self.gates.is_empty() {
            return None;
        }
        self.gates.get(&i).map(String::as_str)
    }

    /// A file appliance `i` holds (the prober fetches a range of it), none when it holds none.
    pub fn any_held(&self, i: usize) -> Option<&str> {
        self.held.get(i)?.iter().next().map(|id| &**id)
    }
}
