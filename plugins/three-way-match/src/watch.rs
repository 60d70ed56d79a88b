//! The orders a clock tick must look at again. Time comes from
//! `clock-tick/1` records (the `ticker` source makes one per schedule), so
//! invoices held for their receipt, acknowledgements due and deliveries due
//! are decided at the pace the operator chooses, and a replayed tick finds
//! the same. One kv entry lists, per order, when the time alone next changes
//! what it comes to, and whether it has open exceptions (which a tolerance
//! change may resolve).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The orders being watched, and the policy they were last looked at under.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watchlist {
    /// The fingerprint of the matching policy at the last tick.
    policy: String,
    /// PO number → what is awaited of it.
    orders: BTreeMap<String, Watched>,
}

/// What is awaited of one order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Watched {
    /// When the time alone next changes its exceptions, Unix seconds.
    wake: Option<i64>,
    /// Whether it has open exceptions.
    open: bool,
    /// The order's ledger `seq` this was noted at: an older note never
    /// overwrites a newer one.
    seq: u64,
}

impl Watchlist {
    /// Note where order `po` stands after its ledger reached `seq`; returns
    /// whether the list changed.
    pub fn note(&mut self, po: &str, seq: u64, wake: Option<i64>, open: bool) -> bool {
        if self.orders.get(po).is_some_and(|w| w.seq >= seq) {
            return false;
        }
        if wake.is_none() && !open {
            return self.orders.remove(po).is_some();
        }
        let watched = Watched { wake, open, seq };
        if self
            .orders
            .get(po)
            .is_some_and(|w| w.wake == wake && w.open == open)
        {
            return false;
        }
        self.orders.insert(po.to_owned(), watched);
        true
    }

    /// The orders to look at again at `now` (Unix seconds) under the policy
    /// `fingerprint`: those whose wake has come and, when the policy
    /// changed, those with open exceptions. Returns them and whether the
    /// policy changed (it is remembered).
    pub fn due(&mut self, now: i64, fingerprint: &str) -> (Vec<String>, bool) {
        let changed = self.policy != fingerprint;
        if changed {
            fingerprint.clone_into(&mut self.policy);
        }
        let due = self
            .orders
            .iter()
            .filter(|(_, w)| w.wake.is_some_and(|at| at <= now) || changed && w.open)
            .map(|(po, _)| po.clone())
            .collect();
        (due, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_due_when_its_time_comes_or_the_policy_changes() {
        let mut watch = Watchlist::default();
        assert_eq!(
            watch.due(0, "p1"),
            (vec![], true),
            "the first policy is remembered"
        );
        assert!(watch.note("PO-1", 1, Some(100), false));
        assert!(watch.note("PO-2", 1, None, true));
        assert!(!watch.note("PO-2", 2, None, true), "nothing changed");
        assert_eq!(watch.due(99, "p1"), (vec![], false));
        assert_eq!(watch.due(100, "p1"), (vec!["PO-1".to_owned()], false));
        assert_eq!(watch.due(50, "p2"), (vec!["PO-2".to_owned()], true));
        assert!(
            watch.note("PO-1", 3, None, false),
            "settled orders are forgotten"
        );
        assert!(!watch.note("PO-2", 1, None, false), "an older note loses");
        assert_eq!(
            watch.due(1_000, "p2"),
            (vec![], false),
            "open, but nothing due and the same policy"
        );
    }
}
