//! Match tolerances from the connector's config: a default set, and
//! overrides per supplier, item category or facility. For each field the most
//! specific setting wins — supplier, then category, then facility, then the
//! default.
//!
//! ```toml
//! config = { price_tolerance_pct = "2", "price_tolerance_pct.supplier.123456789" = "5",
//!            "quantity_tolerance_pct.category.unspsc:42" = "10", "price_cap.facility.0614141000012" = "250" }
//! ```

use std::str::FromStr as _;

use rust_decimal::Decimal;

use crate::ledger::Tolerances;

/// The tolerance fields, by config key.
const FIELDS: [&str; 3] = ["quantity_tolerance_pct", "price_tolerance_pct", "price_cap"];
/// Override scopes, most specific first.
const SCOPES: [&str; 3] = ["supplier", "category", "facility"];

/// The default tolerances and every override, and how long an invoice may
/// wait for its receipt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    default: Tolerances,
    /// (field, scope, id, value).
    overrides: Vec<(&'static str, &'static str, String, Decimal)>,
    /// `receipt_grace`, seconds: how long an invoice billing more than was
    /// received is held (`awaiting_receipt`) before it is an exception.
    pub receipt_grace: i64,
    /// `currency`: the exposure currency when the order is unknown.
    pub currency: Option<String>,
}

/// Where an order line stands: whose, what, and for which facility.
pub struct Scope<'a> {
    /// The supplier's first identifier.
    pub supplier: &'a str,
    /// The line's category (`unspsc:42`, `uncategorized`).
    pub category: &'a str,
    /// The facility's first identifier.
    pub facility: &'a str,
}

impl Policy {
    /// Read the tolerance keys of a connector's config; other keys are left alone.
    pub fn from_config(entries: &[(String, String)]) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for (key, text) in entries {
            match key.as_str() {
                "receipt_grace" => {
                    policy.receipt_grace = seconds(text)
                        .ok_or_else(|| format!("config `receipt_grace` = {text:?}: write a duration such as \"48h\", \"30m\" or \"0s\""))?;
                    continue;
                }
                "currency" => {
                    policy.currency = Some(text.clone());
                    continue;
                }
                _ => {}
            }
            let mut parts = key.splitn(3, '.');
            let first = parts.next();
            let Some(field) = FIELDS.iter().copied().find(|f| first == Some(*f)) else {
                continue;
            };
            let value = Decimal::from_str(text.trim())
                .map_err(|e| format!("config `{key}` = {text:?}: {e}"))?;
            if value.is_sign_negative() {
                return Err(format!("config `{key}` = {text:?}: must not be negative"));
            }
            if value > Decimal::from(1_000_000_000_000_i64) {
                return Err(format!("config `{key}` = {text:?}: at most 1000000000000"));
            }
            match (parts.next(), parts.next()) {
                (None, _) => match field {
                    "quantity_tolerance_pct" => policy.default.quantity_pct = value,
                    "price_tolerance_pct" => policy.default.price_pct = value,
                    _ => policy.default.price_cap = Some(value),
                },
                (Some(scope), Some(id)) if !id.is_empty() => {
                    let Some(scope) = SCOPES.iter().copied().find(|s| *s == scope) else {
                        return Err(format!(
                            "config `{key}`: {scope:?} is not supplier, category or facility"
                        ));
                    };
                    policy.overrides.push((field, scope, id.to_owned(), value));
                }
                _ => {
                    return Err(format!(
                        "config `{key}`: write `{field}` or `{field}.<supplier|category|facility>.<id>`"
                    ));
                }
            }
        }
        Ok(policy)
    }

    /// A digest of the whole policy: when it changes, open exceptions are
    /// looked at again (a tolerance change may resolve them).
    pub fn fingerprint(&self) -> String {
        format!(
            "{:016x}",
            crate::ledger::fnv(format!("{self:?}").as_bytes())
        )
    }

    /// The tolerances for an order line.
    pub fn resolve(&self, at: &Scope) -> Tolerances {
        let pick = |field: &str| {
            SCOPES.iter().find_map(|scope| {
                let id = match *scope {
                    "supplier" => at.supplier,
                    "category" => at.category,
                    _ => at.facility,
                };
                self.overrides
                    .iter()
                    .find(|(f, s, i, _)| *f == field && s == scope && i == id)
                    .map(|(_, _, _, value)| *value)
            })
        };
        Tolerances {
            quantity_pct: pick("quantity_tolerance_pct").unwrap_or(self.default.quantity_pct),
            price_pct: pick("price_tolerance_pct").unwrap_or(self.default.price_pct),
            price_cap: pick("price_cap").or(self.default.price_cap),
        }
    }
}

/// A duration as `<n>s`, `<n>m`, `<n>h` or `<n>d`, in seconds.
fn seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let n: i64 = text[..text.len() - 1].parse().ok()?;
    (n >= 0).then(|| n.checked_mul(unit))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_most_specific_setting_wins_field_by_field() {
        let policy = Policy::from_config(&config(&[
            ("currency", "EUR"),
            ("price_tolerance_pct", "3"),
            ("price_tolerance_pct.facility.F1", "4"),
            ("price_tolerance_pct.supplier.S1", "5"),
            ("quantity_tolerance_pct.category.unspsc:42", "10"),
            ("price_cap.facility.F1", "250"),
        ]))
        .unwrap();
        let at = |supplier, category, facility| Scope {
            supplier,
            category,
            facility,
        };
        let t = policy.resolve(&at("S1", "unspsc:42", "F1"));
        assert_eq!(t.price_pct, Decimal::new(5, 0));
        assert_eq!(t.quantity_pct, Decimal::new(10, 0));
        assert_eq!(t.price_cap, Some(Decimal::new(250, 0)));
        let t = policy.resolve(&at("S2", "unspsc:43", "F1"));
        assert_eq!(t.price_pct, Decimal::new(4, 0));
        assert_eq!(t.quantity_pct, Decimal::ZERO);
        let t = policy.resolve(&at("S2", "unspsc:43", "F2"));
        assert_eq!(
            t,
            Tolerances {
                price_pct: Decimal::new(3, 0),
                ..Tolerances::default()
            }
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let error = |pairs| Policy::from_config(&config(pairs)).unwrap_err();
        assert!(
            error(&[("price_tolerance_pct", "two")])
                .starts_with("config `price_tolerance_pct` = \"two\": ")
        );
        assert!(error(&[("price_cap", "-1")]).contains("must not be negative"));
        assert!(error(&[("price_cap.region.EU", "1")]).contains("\"region\" is not supplier"));
        assert!(error(&[("price_cap.supplier", "1")]).contains("write `price_cap` or"));
        assert!(
            error(&[("receipt_grace", "2 days")])
                .starts_with("config `receipt_grace` = \"2 days\"")
        );
        assert!(error(&[("receipt_grace", "-1h")]).contains("a duration"));
    }

    #[test]
    fn the_receipt_grace_is_a_duration() {
        let grace = |text| {
            Policy::from_config(&config(&[("receipt_grace", text)]))
                .unwrap()
                .receipt_grace
        };
        assert_eq!(grace("48h"), 172_800);
        assert_eq!(grace("15m"), 900);
        assert_eq!(grace("0s"), 0);
        assert_eq!(grace("2d"), 172_800);
        assert_eq!(Policy::default().receipt_grace, 0);
    }
}
