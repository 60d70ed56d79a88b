//! The SLA watches: orders not acknowledged by their `ack_due_at`, and orders
//! past their need-by date with nothing received. Time comes from
//! `clock-tick/1` records (the `ticker` source makes one per schedule), so the
//! watches run at the pace the operator chooses and a replayed tick finds the
//! same. One kv entry lists the orders being watched; each overdue order is
//! raised once per code.

use std::collections::{BTreeMap, BTreeSet};

use plexus_sdk::canonical::PurchaseOrder;
use serde::{Deserialize, Serialize};

/// The orders being watched, by PO number.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watchlist(BTreeMap<String, Watched>);

/// What is awaited of one order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watched {
    /// When the supplier's acknowledgement is due (RFC 3339, UTC).
    ack_due_at: Option<String>,
    /// The earliest need-by date of the order or its lines.
    need_by: Option<String>,
    acked: bool,
    received: bool,
    /// Codes already raised for it.
    raised: BTreeSet<String>,
}

/// An overdue order: its PO number, the code and what is late.
pub type Overdue = (String, &'static str, String);

impl Watchlist {
    /// Watch an order (a changed order keeps what was already seen of it).
    pub fn order(&mut self, po: &PurchaseOrder) {
        let need_by = po
            .lines
            .iter()
            .filter_map(|l| l.need_by.clone())
            .chain(po.need_by.clone())
            .min();
        let watched = self.0.entry(po.po_number.clone()).or_default();
        watched.ack_due_at.clone_from(&po.ack_due_at);
        watched.need_by = need_by;
        self.forget_settled();
    }

    /// The supplier acknowledged `po`.
    pub fn acked(&mut self, po: &str) {
        if let Some(watched) = self.0.get_mut(po) {
            watched.acked = true;
        }
        self.forget_settled();
    }

    /// Something was received against `po`.
    pub fn received(&mut self, po: &str) {
        if let Some(watched) = self.0.get_mut(po) {
            watched.received = true;
        }
        self.forget_settled();
    }

    /// The orders overdue at `now` (RFC 3339, UTC) not raised yet; marks them raised.
    pub fn due(&mut self, now: &str) -> Vec<Overdue> {
        let today = now.get(..10).unwrap_or(now);
        let mut overdue = Vec::new();
        for (po, watched) in &mut self.0 {
            if let Some(due) = &watched.ack_due_at
                && !watched.acked
                && due.as_str() < now
                && watched.raised.insert("ack_overdue".into())
            {
                overdue.push((
                    po.clone(),
                    "ack_overdue",
                    format!("no acknowledgement of {po}, due {due}"),
                ));
            }
            if let Some(need_by) = &watched.need_by
                && !watched.received
                && need_by.as_str() < today
                && watched.raised.insert("receipt_overdue".into())
            {
                overdue.push((
                    po.clone(),
                    "receipt_overdue",
                    format!("nothing received on {po}, needed by {need_by}"),
                ));
            }
        }
        self.forget_settled();
        overdue
    }

    /// Stop watching orders with nothing left to wait for or to raise.
    fn forget_settled(&mut self) {
        self.0.retain(|_, w| {
            let ack_open = w.ack_due_at.is_some() && !w.acked && !w.raised.contains("ack_overdue");
            let receipt_open =
                w.need_by.is_some() && !w.received && !w.raised.contains("receipt_overdue");
            ack_open || receipt_open
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(ack_due_at: Option<&str>, need_by: Option<&str>) -> PurchaseOrder {
        let path = format!("{}/fixtures/po.json", env!("CARGO_MANIFEST_DIR"));
        let mut po: PurchaseOrder =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        po.ack_due_at = ack_due_at.map(str::to_owned);
        po.need_by = need_by.map(str::to_owned);
        po
    }

    #[test]
    fn an_order_is_raised_once_per_lapse_and_forgotten_when_settled() {
        let mut watch = Watchlist::default();
        watch.order(&order(Some("2026-11-03T12:00:00Z"), Some("2026-11-10")));
        assert_eq!(watch.due("2026-11-03T11:59:59Z"), []);
        assert_eq!(
            watch.due("2026-11-03T12:00:01Z"),
            [(
                "PO-1001".to_owned(),
                "ack_overdue",
                "no acknowledgement of PO-1001, due 2026-11-03T12:00:00Z".to_owned()
            )]
        );
        assert_eq!(watch.due("2026-11-04T00:00:00Z"), [], "raised once");
        assert_eq!(
            watch.due("2026-11-10T23:00:00Z"),
            [],
            "due at the end of the day"
        );
        assert_eq!(watch.due("2026-11-11T00:00:00Z")[0].1, "receipt_overdue");
        assert_eq!(watch, Watchlist::default(), "nothing left to watch");
    }

    #[test]
    fn acknowledged_and_received_orders_are_not_overdue() {
        let mut watch = Watchlist::default();
        watch.order(&order(Some("2026-11-03T12:00:00Z"), Some("2026-11-10")));
        watch.acked("PO-1001");
        watch.received("PO-1001");
        assert_eq!(watch.due("2026-12-01T00:00:00Z"), []);
        assert_eq!(watch, Watchlist::default());
        watch.order(&order(None, None));
        assert_eq!(
            watch,
            Watchlist::default(),
            "an order without deadlines is not watched"
        );
    }
}
