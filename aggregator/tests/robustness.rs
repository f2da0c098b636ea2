//! Fuzzing on stable Rust, with proptest (the CI machine has one toolchain, so no `cargo fuzz`):
//! whatever comes over the network or from a file — an ingest batch, an OpenADR event, a
//! grid-intensity feed, a config, a web config, a certificate file — is refused with a message naming the field, never a panic.
//! (The staged-record, chunk and report decoders have theirs beside them:
//! `tables::staged`, `tables::chunk`, `report::verify`.) `PROPTEST_CASES=100000 cargo test
//! -p footprint-aggregator --test robustness` runs longer by hand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use footprint_aggregator::config::AggregatorConfig;
use footprint_aggregator::grid::events;
use footprint_aggregator::store::validate;
use footprint_core::config::ConfigFile;
use footprint_proto::v1::Batch;
use proptest::prelude::*;
use prost::Message;

/// JSON values that look like OpenADR events often enough to reach the deep checks.
fn event_like() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "[A-Z_]{0,24}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("2023-11-16T10:00:00Z"),
            Just("PT1H"),
            Just("P9999Y"),
            Just("P0Y0M0DT1H0M0S"),
            Just("IMPORT_CAPACITY_LIMIT"),
            Just("SIMPLE"),
            Just("GHG"),
            Just("-PT5M"),
            Just("P1Y"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("id"),
                        Just("programID"),
                        Just("eventName"),
                        Just("priority"),
                        Just("intervalPeriod"),
                        Just("start"),
                        Just("duration"),
                        Just("intervals"),
                        Just("payloads"),
                        Just("type"),
                        Just("values"),
                        Just("objectType"),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| {
                serde_json::Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn openadr_events_are_parsed_or_refused_naming_a_field(
        event in event_like(),
        floor in prop::option::of(0.0f64..1_000.0),
    ) {
        let body = serde_json::to_vec(&event).unwrap();
        match events::parse(&body, floor) {
            Ok(parsed) => {
                for interval in &parsed.intervals {
                    prop_assert!(interval.start_ns < interval.end_ns);
                }
            }
            Err(error) => prop_assert!(error.to_string().contains(':'), "{error}"),
        }
    }

    #[test]
    fn arbitrary_bytes_as_an_event_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = events::parse(&bytes, Some(10.0));
    }

    #[test]
    fn intensity_feeds_are_read_or_refused(
        rows in prop::collection::vec(
            (
                prop_oneof![Just("2023-11-16T10:00:00Z".to_owned()), "[0-9T:Z -]{0,25}"],
                prop_oneof![Just("DE".to_owned()), "[A-Z]{0,3}"],
                prop_oneof![Just("123.4".to_owned()), "[-0-9.eE]{0,8}"],
            ),
            0..20
        ),
        header in prop_oneof![
            Just("datetime,zone,carbon_intensity_gco2_per_kwh".to_owned()),
            Just("Datetime (UTC),Zone id,Carbon intensity gCO₂eq/kWh (direct)".to_owned()),
            "[a-z_, ]{0,40}",
        ],
        starting in any::<bool>(),
    ) {
        let mut text = header;
        for (at, zone, value) in rows {
            text.push_str(&format!("\n{at},{zone},{value}"));
        }
        let convention = starting.then_some(footprint_core::carbon::HourConvention::Starting);
        match footprint_core::carbon::parse_feed(&text, convention) {
            // What is read is whole hours, in order, of a named zone.
            Ok(feed) => {
                for hour in &feed.hours {
                    prop_assert_eq!(hour.hour_ns.rem_euclid(3_600_000_000_000), 0);
                    prop_assert!(!hour.zone.is_empty());
                }
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn configs_load_or_name_the_key(text in "[a-z_\\[\\]=\"0-9. \n]{0,200}") {
        // A refusal names where: `key: why`, or the line of a TOML syntax error.
        if let Err(error) = AggregatorConfig::from_toml(&text) {
            prop_assert!(error.to_string().contains(':'), "{error}");
        }
    }

    #[test]
    fn web_configs_load_or_name_the_key(
        text in "(tls_server_config|bearer_tokens|cert_file|name|sha256|scopes|projects|read|[a-z0-9_\\-:\\[\\], \n])*",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, &text).unwrap();
        if let Err(error) = footprint_aggregator::auth::WebConfig::load(&path) {
            prop_assert!(error.to_string().contains("web.yml: "), "{error}");
        }
    }

    #[test]
    fn arbitrary_certificate_files_are_refused_naming_the_file(
        cert in prop::collection::vec(any::<u8>(), 0..600),
        key in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key).unwrap();
        let files = footprint_proto::tls::ServerFiles {
            cert_file: dir.path().join("cert.pem"),
            key_file: dir.path().join("key.pem"),
            client_ca_file: None,
            client_cert_optional: false,
            alpn: vec![b"h2".to_vec()],
        };
        let error = files.load().expect_err("random bytes are no certificate and key");
        prop_assert!(error.to_string().contains("_file"), "{error}");
    }

    #[test]
    fn arbitrary_batches_decode_or_not_and_every_part_is_checked(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let Ok(batch) = Batch::decode(bytes.as_slice()) else {
            return Ok(());
        };
        for meter in &batch.meters {
            let _ = validate::check_meter(meter, |_| true);
        }
        for reading in &batch.readings {
            let _ = validate::reading_quality(reading);
        }
        for allocation in &batch.allocations {
            let _ = validate::check_allocation(allocation, 1_700_000_000_000_000_000, 60_000_000_000, |_| true);
        }
    }
}
