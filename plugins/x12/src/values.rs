//! Element values: dates, decimals, identifier qualifiers and check digits.

use plexus_sdk::canonical::Identifier;

use crate::parse::Segment;

/// `CCYYMMDD` (or `YYMMDD`) to `YYYY-MM-DD`.
pub fn date(seg: &Segment, n: usize) -> Result<String, String> {
    let raw = seg.el(n).trim();
    let full = match raw.len() {
        8 => raw.to_owned(),
        6 => format!("20{raw}"),
        _ => {
            return Err(format!(
                "{} element {n:02}: {raw:?} is not a date (CCYYMMDD)",
                seg.at()
            ));
        }
    };
    let ok = full.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&full[4..6].parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&full[6..8].parse::<u8>().unwrap_or(0));
    if !ok {
        return Err(format!(
            "{} element {n:02}: {raw:?} is not a date (CCYYMMDD)",
            seg.at()
        ));
    }
    Ok(format!("{}-{}-{}", &full[..4], &full[4..6], &full[6..8]))
}

/// An optional date: `None` when the element is empty.
pub fn opt_date(seg: &Segment, n: usize) -> Result<Option<String>, String> {
    if seg.el(n).trim().is_empty() {
        Ok(None)
    } else {
        date(seg, n).map(Some)
    }
}

/// An X12 decimal (R type: `10`, `12.5`, `.5`, `-3`) as a canonical decimal string.
pub fn decimal(seg: &Segment, n: usize, what: &str) -> Result<String, String> {
    let raw = seg.el(n).trim();
    normalize(raw).ok_or_else(|| {
        format!(
            "{} element {n:02}: {what} {raw:?} is not a number",
            seg.at()
        )
    })
}

fn normalize(raw: &str) -> Option<String> {
    let (sign, digits) = match raw.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", raw.strip_prefix('+').unwrap_or(raw)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// An N-type number with `places` implied decimals (TDS01 is N2): `6250` → `62.50`.
pub fn implied(seg: &Segment, n: usize, places: usize, what: &str) -> Result<String, String> {
    let raw = seg.el(n).trim();
    let (sign, digits) = raw.strip_prefix('-').map_or(("", raw), |d| ("-", d));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{} element {n:02}: {what} {raw:?} is not a number",
            seg.at()
        ));
    }
    let padded = format!("{digits:0>width$}", width = places + 1);
    let (int, frac) = padded.split_at(padded.len() - places);
    Ok(format!(
        "{sign}{}.{frac}",
        normalize(int).unwrap_or_else(|| "0".into())
    ))
}

/// Exact product of two decimal strings.
pub fn multiply(a: &str, b: &str) -> Option<String> {
    let (ma, sa) = mantissa(a)?;
    let (mb, sb) = mantissa(b)?;
    let product = ma.checked_mul(mb)?;
    Some(render(product, sa + sb))
}

fn mantissa(text: &str) -> Option<(i128, usize)> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let joined = format!("{int}{frac}");
    Some((joined.parse().ok()?, frac.len()))
}

fn render(value: i128, scale: usize) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let digits = format!("{:0>width$}", value.unsigned_abs(), width = scale + 1);
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// The canonical system of an item id qualifier (PO1/IT1/LIN pairs).
pub fn item_system(qualifier: &str) -> String {
    match qualifier {
        "UK" | "EN" | "UP" => "gtin".into(),
        "VN" | "VC" | "VP" => "vendor-part".into(),
        "BP" => "buyer-part".into(),
        "MG" => "mfr-part".into(),
        "ND" | "N4" => "ndc".into(),
        "HI" => "hibc".into(),
        other => format!("x12:{other}"),
    }
}

/// The canonical system of an N1 id qualifier (N103).
pub fn party_system(qualifier: &str) -> String {
    match qualifier {
        "UL" => "gln".into(),
        "21" => "hin".into(),
        "1" | "9" => "duns".into(),
        other => format!("x12:{other}"),
    }
}

/// An identifier; GTINs and GLNs get their check digit verified.
pub fn identifier(system: String, value: &str) -> Identifier {
    let mut id = Identifier::new(system, value.trim());
    if id.system == "gtin" || id.system == "gln" {
        id.check_digit_valid = Some(check_digit_ok(&id.value));
    }
    id
}

/// The GS1 mod-10 check (GTIN-8/12/13/14, GLN).
pub fn check_digit_ok(value: &str) -> bool {
    let digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != value.len() || !matches!(digits.len(), 8 | 12 | 13 | 14) {
        return false;
    }
    let (body, check) = digits.split_at(digits.len() - 1);
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { d * 3 } else { *d })
        .sum();
    (10 - sum % 10) % 10 == check[0]
}

/// Item identifiers from qualifier/id pairs starting at element `from`.
pub fn item_ids(seg: &Segment, from: usize) -> Vec<Identifier> {
    let mut ids = Vec::new();
    let mut n = from;
    while n < seg.len() + 1 {
        let (qualifier, value) = (seg.el(n).trim(), seg.el(n + 1).trim());
        if !qualifier.is_empty() && !value.is_empty() {
            ids.push(identifier(item_system(qualifier), value));
        }
        n += 2;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(normalize(".5").as_deref(), Some("0.5"));
        assert_eq!(normalize("0010").as_deref(), Some("10"));
        assert_eq!(normalize("-3.25").as_deref(), Some("-3.25"));
        assert_eq!(normalize("1e3"), None);
        assert_eq!(normalize("."), None);
        assert_eq!(multiply("10", "12.50").as_deref(), Some("125.00"));
        assert_eq!(multiply("0.5", "0.5").as_deref(), Some("0.25"));
        assert_eq!(multiply("-2", "3.1").as_deref(), Some("-6.2"));
    }

    #[test]
    fn check_digits() {
        assert!(check_digit_ok("00614141000036")); // GTIN-14
        assert!(check_digit_ok("0614141000012")); // GLN
        assert!(check_digit_ok("036000291452")); // UPC-A
        assert!(!check_digit_ok("036000291453"));
        assert!(!check_digit_ok("12345"));
    }
}
