//! `csv-map`: one canonical record per row of a legacy system's CSV export,
//! with the column mapping in connector config.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `entity` | the schema emitted, e.g. `inventory-balance/1`; the topic is its name with `_` | required |
//! | `map.<field>` | the column for a field: a header name, or `#<n>` (1-based) | |
//! | `set.<field>` | a constant for a field | |
//! | `decimals` | comma-separated fields that hold decimals | none |
//! | `dates`, `timestamps` | fields that hold dates; timestamps get `T00:00:00Z` | none |
//! | `date_format` | how the file writes dates: `%Y`, `%y`, `%m`, `%d` and literals | `%Y-%m-%d` |
//! | `decimal_separator` | `.` or `,` (then `.` and spaces group thousands) | `.` |
//! | `delimiter` | one character | `,` |
//! | `header` | whether the first row names the columns | `true` |
//! | `key` | the column of the record key | the row number |
//! | `source_system` | provenance `source_system` | `csv` |
//!
//! Fields are dotted paths, numbers index arrays: `map.item.identifiers.0.value`.
//! The real-file mess is taken in stride: a byte-order mark, quoted fields
//! with delimiters, quotes or line breaks inside, CRLF, blank trailing lines.
//! A row with the wrong number of columns, an unknown column, a value that is
//! not a decimal or a date is a permanent error naming the line and field.

use plexus_sdk::{Error, Record, Transform, clock, config};
use serde_json::{Map, Value};

/// A parsed mapping.
#[derive(Debug, Default)]
pub struct Mapping {
    schema: String,
    columns: Vec<(String, String)>,
    constants: Vec<(String, String)>,
    decimals: Vec<String>,
    dates: Vec<String>,
    timestamps: Vec<String>,
    date_format: String,
    decimal_comma: bool,
    delimiter: u8,
    header: bool,
    key: Option<String>,
    source_system: String,
}

fn list(text: Option<&String>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

impl Mapping {
    /// Read the mapping from config pairs.
    pub fn from_config(pairs: &[(String, String)]) -> Result<Mapping, String> {
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let schema = get("entity")
            .cloned()
            .ok_or("config `entity` is required, e.g. \"inventory-balance/1\"")?;
        if !schema.contains('/') {
            return Err(format!(
                "config `entity` {schema:?} is not a schema id like \"inventory-balance/1\""
            ));
        }
        let delimiter = match get("delimiter").map(String::as_bytes) {
            None => b',',
            Some([d]) => *d,
            Some(_) => return Err("config `delimiter` must be one character".into()),
        };
        let decimal_comma = match get("decimal_separator").map(String::as_str) {
            None | Some(".") => false,
            Some(",") => true,
            Some(other) => {
                return Err(format!(
                    "config `decimal_separator` {other:?} must be \".\" or \",\""
                ));
            }
        };
        let mapping = Mapping {
            columns: pairs
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("map.")?.to_owned(), v.clone())))
                .collect(),
            constants: pairs
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("set.")?.to_owned(), v.clone())))
                .collect(),
            decimals: list(get("decimals")),
            dates: list(get("dates")),
            timestamps: list(get("timestamps")),
            date_format: get("date_format")
                .cloned()
                .unwrap_or_else(|| "%Y-%m-%d".into()),
            decimal_comma,
            delimiter,
            header: get("header").is_none_or(|h| h != "false"),
            key: get("key").cloned(),
            source_system: get("source_system")
                .cloned()
                .unwrap_or_else(|| "csv".into()),
            schema,
        };
        if mapping.columns.is_empty() {
            return Err("no `map.<field>` entries: nothing to map".into());
        }
        Ok(mapping)
    }

    /// The subject suffix: `inventory-balance/1` → `inventory_balance`.
    pub fn topic(&self) -> String {
        self.schema
            .split('/')
            .next()
            .unwrap_or_default()
            .replace('-', "_")
    }

    /// Map a whole file; `received_at` stamps the provenance.
    pub fn rows(&self, input: &[u8], received_at: &str) -> Result<Vec<(String, Value)>, String> {
        let input = input.strip_prefix("\u{feff}".as_bytes()).unwrap_or(input);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .has_headers(self.header)
            .flexible(false)
            .from_reader(input);
        let headers: Vec<String> = if self.header {
            reader
                .headers()
                .map_err(|e| format!("line 1: {e}"))?
                .iter()
                .map(|h| h.trim().to_owned())
                .collect()
        } else {
            Vec::new()
        };
        let column = |spec: &str| -> Result<usize, String> {
            if let Some(n) = spec.strip_prefix('#') {
                return n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(|n| n - 1)
                    .ok_or(format!("column {spec:?} is not #<n> with n from 1"));
            }
            headers
                .iter()
                .position(|h| h == spec)
                .ok_or_else(|| format!("no column {spec:?} in the header ({})", headers.join(", ")))
        };
        let columns: Vec<(String, usize)> = self
            .columns
            .iter()
            .map(|(f, c)| Ok((f.clone(), column(c)?)))
            .collect::<Result<_, String>>()?;
        let key_column = self.key.as_deref().map(column).transpose()?;

        let mut out = Vec::new();
        for row in reader.records() {
            let row = row.map_err(|e| match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    pos,
                    expected_len,
                    len,
                } => {
                    let line = pos.as_ref().map_or(0, |p| line_of(input, p));
                    format!("line {line}: {len} columns, but the first row has {expected_len}")
                }
                _ => match e.position() {
                    Some(p) => format!("line {}: {e}", line_of(input, p)),
                    None => e.to_string(),
                },
            })?;
            let line = row.position().map_or(0, |p| line_of(input, p));
            if row.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            let mut record = Value::Object(Map::new());
            for (field, index) in &columns {
                let raw = row
                    .get(*index)
                    .ok_or_else(|| format!("line {line}: no column {} for {field}", index + 1))?
                    .trim();
                let value = self
                    .convert(field, raw)
                    .map_err(|e| format!("line {line}, field {field}: {e}"))?;
                set(&mut record, field, value).map_err(|e| format!("field {field}: {e}"))?;
            }
            for (field, constant) in &self.constants {
                set(&mut record, field, Value::String(constant.clone()))
                    .map_err(|e| format!("field {field}: {e}"))?;
            }
            let key = match key_column {
                Some(k) => row.get(k).unwrap_or_default().trim().to_owned(),
                None => line.to_string(),
            };
            let provenance = serde_json::json!({ "source_system": self.source_system, "source_record_id": key, "received_at": received_at });
            set(&mut record, "provenance", provenance)?;
            out.push((key, record));
        }
        Ok(out)
    }

    fn convert(&self, field: &str, raw: &str) -> Result<Value, String> {
        if self.decimals.iter().any(|f| f == field) {
            return decimal(raw, self.decimal_comma)
                .map(Value::String)
                .ok_or_else(|| format!("{raw:?} is not a decimal"));
        }
        let timestamp = self.timestamps.iter().any(|f| f == field);
        if timestamp || self.dates.iter().any(|f| f == field) {
            let date = parse_date(raw, &self.date_format)
                .ok_or_else(|| format!("{raw:?} is not a date in the form {}", self.date_format))?;
            return Ok(Value::String(if timestamp {
                format!("{date}T00:00:00Z")
            } else {
                date
            }));
        }
        Ok(Value::String(raw.to_owned()))
    }
}

/// The 1-based line a record starts on. (The csv crate counts `\n` only, so
/// after a CRLF a record's own position is still on the line before.)
fn line_of(input: &[u8], position: &csv::Position) -> u64 {
    let start = usize::try_from(position.byte())
        .unwrap_or(usize::MAX)
        .min(input.len());
    let skipped = input[start..]
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    1 + input[..start + skipped]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64
}

/// `1 234,50` (comma) or `1234.50` (dot) to `1234.50`.
fn decimal(raw: &str, comma: bool) -> Option<String> {
    let cleaned: String = if comma {
        raw.chars()
            .filter(|c| *c != '.' && !c.is_whitespace())
            .map(|c| if c == ',' { '.' } else { c })
            .collect()
    } else {
        raw.chars().filter(|c| !c.is_whitespace()).collect()
    };
    let digits = cleaned.strip_prefix('-').unwrap_or(&cleaned);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.ends_with('.'));
    ok.then_some(cleaned)
}

/// Parse `raw` by `format` (`%Y %y %m %d`, other characters literal) to `YYYY-MM-DD`.
fn parse_date(raw: &str, format: &str) -> Option<String> {
    let (mut y, mut m, mut d) = (None, None, None);
    let mut rest = raw;
    let mut fmt = format.chars();
    while let Some(c) = fmt.next() {
        if c != '%' {
            rest = rest.strip_prefix(c)?;
            continue;
        }
        let spec = fmt.next()?;
        let len = rest
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count()
            .min(if spec == 'Y' { 4 } else { 2 });
        let (digits, after) = rest.split_at(len);
        let n: u32 = digits.parse().ok()?;
        match spec {
            'Y' if len == 4 => y = Some(n),
            'y' if len == 2 => y = Some(2000 + n),
            'm' => m = Some(n),
            'd' => d = Some(n),
            _ => return None,
        }
        rest = after;
    }
    let (y, m, d) = (y?, m?, d?);
    (rest.is_empty() && (1..=12).contains(&m) && (1..=31).contains(&d))
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// Put `value` at a dotted path, creating objects and arrays on the way.
fn set(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next_is_index = parts.get(i + 1).is_some_and(|p| p.parse::<usize>().is_ok());
        let empty = || {
            if next_is_index {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            }
        };
        node = match (node, part.parse::<usize>()) {
            (Value::Array(items), Ok(index)) => {
                while items.len() <= index {
                    items.push(Value::Null);
                }
                if items[index].is_null() && !last {
                    items[index] = empty();
                }
                &mut items[index]
            }
            (Value::Object(map), _) => map.entry(part.to_string()).or_insert_with(empty),
            _ => return Err(format!("{part:?} does not fit the fields around it")),
        };
        if last {
            *node = value;
            return Ok(());
        }
    }
    Ok(())
}

struct CsvMap;

impl Transform for CsvMap {
    fn transform(input: Record) -> Result<Vec<Record>, Error> {
        let mapping = Mapping::from_config(&config::all())
            .map_err(|e| Error::Permanent(format!("csv-map config: {e}")))?;
        let rows = mapping
            .rows(&input.payload, &clock::now_rfc3339())
            .map_err(Error::Permanent)?;
        let topic = mapping.topic();
        Ok(rows
            .into_iter()
            .map(|(key, json)| {
                Record::new(key, serde_json::to_vec(&json).unwrap_or_default())
                    .with_schema(mapping.schema.clone())
                    .with_topic(topic.clone())
                    .with_content_type("application/json")
            })
            .collect())
    }
}

plexus_sdk::export_transform!(CsvMap);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn balances() -> Mapping {
        let pairs = [
            ("entity", "inventory-balance/1"),
            ("delimiter", ";"),
            ("decimal_separator", ","),
            ("date_format", "%d/%m/%Y"),
            ("key", "Artikel"),
            ("map.item.identifiers.0.value", "Artikel"),
            ("set.item.identifiers.0.system", "legacy:st-marys"),
            ("map.item.description", "Bezeichnung"),
            ("map.location.identifiers.0.value", "Lager"),
            ("set.location.identifiers.0.system", "legacy:st-marys"),
            ("map.on_hand", "Bestand"),
            ("map.available", "Verfuegbar"),
            ("map.uom", "ME"),
            ("map.as_of", "Stichtag"),
            ("decimals", "on_hand, available"),
            ("timestamps", "as_of"),
            ("source_system", "legacy:st-marys"),
        ];
        Mapping::from_config(&pairs.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap()
    }

    const MESSY: &str = "\u{feff}Artikel;Bezeichnung;Lager;Bestand;Verfuegbar;ME;Stichtag\r\n\
        4471;\"Kompresse 10x10; steril\";ZL-1;1.840,5;1.600;PK;24/05/2026\r\n\
        8812;\"Handschuh \"\"M\"\"\nNitril\";ZL-1;75;0;BX;24/05/2026\r\n\r\n\r\n";

    #[test]
    fn messy_files_map_field_by_field() {
        let rows = balances()
            .rows(MESSY.as_bytes(), "2026-05-24T06:00:00Z")
            .unwrap();
        assert_eq!(rows.len(), 2, "blank trailing lines are not rows");
        assert_eq!(rows[0].0, "4471");
        assert_eq!(
            rows[0].1,
            json!({
                "item": {"identifiers": [{"value": "4471", "system": "legacy:st-marys"}], "description": "Kompresse 10x10; steril"},
                "location": {"identifiers": [{"value": "ZL-1", "system": "legacy:st-marys"}]},
                "on_hand": "1840.5", "available": "1600", "uom": "PK", "as_of": "2026-05-24T00:00:00Z",
                "provenance": {"source_system": "legacy:st-marys", "source_record_id": "4471", "received_at": "2026-05-24T06:00:00Z"}
            })
        );
        assert_eq!(rows[1].1["item"]["description"], "Handschuh \"M\"\nNitril");
        assert_eq!(balances().topic(), "inventory_balance");
    }

    #[test]
    fn bad_rows_say_where() {
        let m = balances();
        let crlf = m.rows(b"Artikel;Bezeichnung;Lager;Bestand;Verfuegbar;ME;Stichtag\r\n1;a;b;1;2;EA;24/05/2026\r\n1;a;b;x;2;EA;24/05/2026\r\n", "t");
        assert_eq!(
            crlf.unwrap_err(),
            "line 3, field on_hand: \"x\" is not a decimal",
            "CRLF files count lines too"
        );
        let err = m
            .rows(
                b"Artikel;Bezeichnung;Lager;Bestand;Verfuegbar;ME;Stichtag\n1;a;b;1;2\n",
                "t",
            )
            .unwrap_err();
        assert_eq!(err, "line 2: 5 columns, but the first row has 7");
        let err = m.rows(b"Artikel;Bezeichnung;Lager;Bestand;Verfuegbar;ME;Stichtag\n1;a;b;viele;2;EA;24/05/2026\n", "t").unwrap_err();
        assert_eq!(err, "line 2, field on_hand: \"viele\" is not a decimal");
        let err = m.rows(b"Artikel;Bezeichnung;Lager;Bestand;Verfuegbar;ME;Stichtag\n1;a;b;1;2;EA;2026-05-24\n", "t").unwrap_err();
        assert_eq!(
            err,
            "line 2, field as_of: \"2026-05-24\" is not a date in the form %d/%m/%Y"
        );
        let err = m.rows(b"Item;Qty\n1;2\n", "t").unwrap_err();
        assert!(
            err.starts_with("no column \"Artikel\" in the header (Item, Qty)"),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Fuzz: any file maps or gives an error, never a panic.
        #[test]
        fn fuzz_arbitrary_files_never_panic(text in "[A-Za-z0-9;,\"\r\n ./-]{0,300}") {
            let _ = balances().rows(text.as_bytes(), "t");
        }
    }

    #[test]
    fn headerless_files_use_positions() {
        let pairs = [
            ("entity", "time-entry/1"),
            ("header", "false"),
            ("map.worker_id", "#1"),
            ("map.hours", "#2"),
            ("decimals", "hours"),
        ];
        let m = Mapping::from_config(&pairs.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap();
        let rows = m.rows(b"W-1,7.5\nW-2,8\n", "t").unwrap();
        assert_eq!(rows[1].1["worker_id"], "W-2");
        assert_eq!(
            rows[0].0, "1",
            "the row number is the key when no key column is named"
        );
        assert!(Mapping::from_config(&[("entity".into(), "x".into())]).is_err());
    }
}
