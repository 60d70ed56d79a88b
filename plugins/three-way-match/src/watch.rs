//! The orders a clock tick must look at again. Time comes from
//! `clock-tick/1` records (the `ticker` source makes one per schedule), so
//! invoices held for their receipt, acknowledgements due and deliveries due
//! are decided at the pace the operator chooses, and a replayed tick finds
//! the same. The orders are spread over [`SHARDS`] kv entries by a hash of
//! the PO number (so no entry grows past what the bus stores in one value);
//! each lists, per order, when the time alone next changes what it comes to,
//! and whether it has open exceptions (which a tolerance change may resolve).
//! A shard remembers which orders each recent tick found due, so a tick
//! retried after a failure looks at them again rather than at none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// kv entries the watchlist is spread over.
pub const SHARDS: u64 = 32;
/// Recent ticks whose due orders a shard remembers.
const REMEMBERED_TICKS: usize = 16;

/// The shard holding order `po`.
pub fn shard(po: &str) -> u64 {
    crate::ledger::fnv(po.as_bytes()) % SHARDS
}

/// One shard of the orders being watched, and the policy they were last
/// looked at under.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watchlist {
    /// The fingerprint of the matching policy at the last tick.
    policy: String,
    /// PO number → what is awaited of it.
    orders: BTreeMap<String, Watched>,
    /// Tick → the orders it found due, and whether the policy had changed.
    #[serde(default)]
    ticks: BTreeMap<String, (Vec<String>, bool)>,
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
        self.due_for(&now.to_string(), now, fingerprint)
    }

    /// As [`Watchlist::due`] for the tick `tick`: the same tick asked again
    /// (a retry) gets the same orders.
    pub fn due_for(&mut self, tick: &str, now: i64, fingerprint: &str) -> (Vec<String>, bool) {
        if let Some(earlier) = self.ticks.get(tick) {
            return earlier.clone();
        }
        let found = self.find_due(now, fingerprint);
        self.ticks.insert(tick.to_owned(), found.clone());
        while self.ticks.len() > REMEMBERED_TICKS {
            self.ticks.pop_first();
        }
        found
    }

    fn find_due(&mut self, now: i64, fingerprint: &str) -> (Vec<String>, bool) {
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

    #[test]
    fn a_retried_tick_finds_the_orders_it_found_before() {
        let mut watch = Watchlist::default();
        watch.due_for("t0", 0, "p1");
        watch.note("PO-1", 1, Some(100), false);
        let first = watch.due_for("t1", 100, "p2");
        assert_eq!(first, (vec!["PO-1".to_owned()], true));
        // The order was looked at (nothing awaited any more), then the tick
        // failed elsewhere and comes again.
        watch.note("PO-1", 2, None, false);
        assert_eq!(watch.due_for("t1", 100, "p2"), first);
        assert_eq!(watch.due_for("t2", 200, "p2"), (vec![], false));
        for i in 0..40 {
            watch.due_for(&format!("u{i:02}"), 300, "p2");
        }
        assert!(watch.ticks.len() <= REMEMBERED_TICKS, "bounded");
    }
}
