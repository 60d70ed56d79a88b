//! Fuzzing the host/guest boundary: random records (keys, bytes, near-valid
//! documents) and random config go into every reference plugin through the
//! runtime, the same pool and instance reuse the host uses. Whatever goes in,
//! the host does not panic and the plugin answers with records or an error
//! naming the reason — never a trap, a timeout or a blown memory cap — and a
//! later good record still gets through the same pool. `just fuzz` runs many
//! more cases than `just test`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use plexus_host::config::{Kind, Limits};
use plexus_host::engine::Runtime;
use plexus_host::plugin::local::{Failure, LocalPlugin};
use proptest::prelude::*;

use crate::support::plugin;

/// A plugin under fuzz: a config that works, the keys random settings
/// override, and inputs it accepts that mutations start from.
struct Target {
    name: &'static str,
    kind: Kind,
    base: &'static [(&'static str, &'static str)],
    keys: &'static [&'static str],
    seeds: &'static [&'static str],
}

const X12_ORDERS: &str = include_str!("../../plugins/x12/fixtures/orders-004010.x12");
const X12_SUPPLIER: &str = include_str!("../../plugins/x12/fixtures/supplier-005010.x12");
const X12_846: &str = include_str!("../../plugins/x12/fixtures/inventory-846.x12");
const HL7_BATCH: &str = include_str!("../../plugins/hl7v2/fixtures/batch.hl7");
const HL7_REQUISITION: &str = include_str!("../../plugins/hl7v2/fixtures/requisition.hl7");
const FHIR_R4: &str = include_str!("../../plugins/fhir/fixtures/r4-bundle.json");
const FHIR_R5: &str = include_str!("../../plugins/fhir/fixtures/r5-bundle.json");
const CSV: &str = include_str!("../../plugins/csv-map/fixtures/st-marys-stock.csv");
const PO_JSON: &str =
    r#"{"po_number":"PO-1","status":"approved","total":{"amount":"12.50","currency":"USD"}}"#;

fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "json-filter",
            kind: Kind::Transform,
            base: &[
                ("keep", "status == approved"),
                ("route.large", "total.amount >= 10"),
            ],
            keys: &["keep", "drop", "route.large", "default_topic"],
            seeds: &[PO_JSON],
        },
        Target {
            name: "x12",
            kind: Kind::Transform,
            base: &[],
            keys: &[
                "direction",
                "source_system",
                "sender",
                "receiver",
                "version",
            ],
            seeds: &[X12_ORDERS, X12_SUPPLIER, X12_846, PO_JSON],
        },
        Target {
            name: "hl7v2",
            kind: Kind::Transform,
            base: &[],
            keys: &["source_system"],
            seeds: &[HL7_BATCH, HL7_REQUISITION],
        },
        Target {
            name: "fhir",
            kind: Kind::Transform,
            base: &[],
            keys: &["source_system"],
            seeds: &[FHIR_R4, FHIR_R5],
        },
        Target {
            name: "csv-map",
            kind: Kind::Transform,
            base: &[
                ("entity", "inventory-balance/1"),
                ("delimiter", ";"),
                ("decimal_separator", ","),
                ("date_format", "%d/%m/%Y"),
                ("key", "Artikel"),
                ("map.item.identifiers.0.value", "Artikel"),
                ("set.item.identifiers.0.system", "legacy:st-marys"),
                ("map.location.identifiers.0.value", "Lager"),
                ("set.location.identifiers.0.system", "legacy:st-marys"),
                ("map.on_hand", "Bestand"),
                ("map.uom", "ME"),
                ("map.as_of", "Stichtag"),
                ("decimals", "on_hand"),
                ("timestamps", "as_of"),
            ],
            keys: &[
                "entity",
                "map.item_id",
                "map.location_id",
                "map.on_hand",
                "map.as_of",
                "set.uom",
                "decimals",
                "dates",
                "date_format",
                "decimal_separator",
                "delimiter",
                "header",
                "key",
            ],
            seeds: &[CSV],
        },
        Target {
            name: "mllp",
            kind: Kind::Source,
            base: &[],
            keys: &[],
            seeds: &[HL7_REQUISITION, HL7_BATCH],
        },
    ]
}

/// The compiled plugins, loaded once for all cases.
fn loaded() -> &'static Vec<(Target, LocalPlugin)> {
    static LOADED: OnceLock<Vec<(Target, LocalPlugin)>> = OnceLock::new();
    LOADED.get_or_init(|| {
        let runtime = Runtime::new().unwrap();
        targets()
            .into_iter()
            .map(|t| {
                let local =
                    LocalPlugin::load(&runtime, &plugin(t.name), t.kind, BTreeMap::new(), limits())
                        .unwrap();
                (t, local)
            })
            .collect()
    })
}

fn limits() -> Limits {
    Limits {
        memory: 64 << 20,
        timeout: Duration::from_secs(10),
        concurrency: 1,
        outputs: 10_000,
        output_bytes: 64 << 20,
    }
}

/// A seed with random bytes spliced in, cut short, or replaced outright.
fn mutated(seed: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (
            0..=seed.len(),
            proptest::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(move |(at, junk)| {
                let mut bytes = seed.as_bytes().to_vec();
                bytes.splice(at..at, junk);
                bytes
            }),
        (0..=seed.len()).prop_map(move |at| seed.as_bytes()[..at].to_vec()),
        (0..seed.len().max(1), any::<u8>()).prop_map(move |(at, byte)| {
            let mut bytes = seed.as_bytes().to_vec();
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
            bytes
        }),
    ]
}

/// Config values: the plugin's own kind of words, and junk.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("inbound".to_owned()),
        Just("outbound".to_owned()),
        Just("inventory-balance/1".to_owned()),
        Just("status == approved and total.amount >= 10".to_owned()),
        Just("#1".to_owned()),
        Just("%d.%m.%Y".to_owned()),
        Just(",".to_owned()),
        Just(";".to_owned()),
        Just("false".to_owned()),
        "\\PC{0,24}",
    ]
}

fn case() -> impl Strategy<Value = (usize, usize, String, Vec<u8>, Vec<(usize, String)>)> {
    let n = targets().len();
    (0..n, 0..4usize).prop_flat_map(|(t, s)| {
        let target = &targets()[t];
        let seed = target.seeds[s % target.seeds.len()];
        let keys = target.keys.len().max(1);
        (
            Just(t),
            Just(s),
            "\\PC{0,40}",
            mutated(seed),
            proptest::collection::vec((0..keys, value()), 0..4),
        )
    })
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn fuzz_any_record_and_config_gets_records_or_an_error_never_a_fault(
        (t, s, key, payload, settings) in case()
    ) {
        let (target, compiled) = &loaded()[t];
        let mut config: BTreeMap<String, String> = target
            .base
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        config.extend(
            settings
                .into_iter()
                .filter_map(|(k, v)| target.keys.get(k).map(|k| ((*k).to_owned(), v))),
        );
        let local = compiled.reconfigured(config.clone(), limits());
        let result = rt().block_on(local.call(&key, &payload));
        if let Err(Failure::Fault(fault)) = &result {
            panic!("{} faulted with config {config:?} on {payload:?}: {fault}", target.name);
        }
        // The same pool still serves its seed afterwards.
        let seed = target.seeds[s % target.seeds.len()];
        let again = rt().block_on(local.call("seed", seed.as_bytes()));
        prop_assert!(
            !matches!(again, Err(Failure::Fault(_))),
            "{} faulted on its seed after {payload:?}: {again:?}", target.name
        );
    }
}
