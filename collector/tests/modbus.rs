//! The Modbus source against a pymodbus meter on loopback (`tests/peers/modbus_meter.py`):
//! exact totals in base units, both word orders, a growing counter, a u16 register wrapping,
//! an exception for one register while the rest is read, and a closed port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peers;

use std::time::{Duration, Instant};

use footprint_collector::source::Source;
use footprint_collector::sources::modbus::ModbusConfig;
use footprint_core::UnixNanos;
use footprint_proto::v1::MeterKind;

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600 * SECOND;

fn register(
    name: &str,
    kind: &str,
    address: u16,
    value_type: &str,
    order: &str,
    unit: &str,
    scale: &str,
) -> String {
    format!(
        "[[registers]]\nname = '{name}'\nkind = '{kind}'\naddress = {address}\ntype = '{value_type}'\nword_order = '{order}'\nunit = '{unit}'\nscale = '{scale}'\n"
    )
}

fn config(port: u16, registers: &[String]) -> ModbusConfig {
    toml::from_str(&format!(
        "address = '127.0.0.1:{port}'\ntimeout_ms = 2000\n{}",
        registers.concat()
    ))
    .unwrap()
}

fn water() -> String {
    register("water", "site_water", 0, "u32", "big", "L", "1")
}

#[tokio::test]
async fn totals_are_read_exactly_in_base_units_in_either_word_order() {
    let meter = peers::modbus_meter(&["--litres", "123456", "--kwh", "987654"]);
    let mut source = config(
        meter.port,
        &[
            water(),
            register("facility", "site_energy", 10, "u32", "little", "kWh", "1"),
        ],
    )
    .build()
    .unwrap();
    let meters: Vec<(String, i32)> = source
        .meters()
        .into_iter()
        .map(|m| (m.meter_id, m.kind))
        .collect();
    assert_eq!(
        meters,
        [
            ("site:water".into(), MeterKind::SiteWater as i32),
            ("site:facility".into(), MeterKind::SiteEnergy as i32)
        ]
    );
    let sample = source.sample(UnixNanos(T0)).await.unwrap();
    let values: Vec<(&[u8], u64)> = sample
        .readings
        .iter()
        .map(|r| (&r.meter_id[..], r.value))
        .collect();
    // 123 456 L = 123 456 000 mL; 987 654 kWh = 3.555 554 4 × 10^15 mJ.
    assert_eq!(
        values,
        [
            (&b"site:water"[..], 123_456_000),
            (&b"site:facility"[..], 3_555_554_400_000_000)
        ]
    );
}

#[tokio::test]
async fn a_growing_meter_is_followed() {
    let meter = peers::modbus_meter(&["--litres", "1000", "--litres-per-second", "50"]);
    let mut source = config(meter.port, &[water()]).build().unwrap();
    let first = source.sample(UnixNanos(T0)).await.unwrap().readings[0].value;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = source
        .sample(UnixNanos(T0 + SECOND))
        .await
        .unwrap()
        .readings[0]
        .value;
    assert!(second >= first + 50_000, "{first} then {second}");
    assert_eq!((second - first) % 1_000, 0, "whole litres");
}

#[tokio::test]
async fn a_u16_register_wraps_without_losing_a_count() {
    // 0.5 L per pulse; the register starts 6 counts below its wrap and counts 4 a second.
    let meter = peers::modbus_meter(&["--pulses", "65530", "--pulses-per-second", "4"]);
    let mut source = config(
        meter.port,
        &[register(
            "pulses",
            "site_water",
            20,
            "u16",
            "big",
            "L",
            "0.5",
        )],
    )
    .build()
    .unwrap();
    let first = source.sample(UnixNanos(T0)).await.unwrap().readings[0].value;
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let second = source
        .sample(UnixNanos(T0 + 3 * SECOND))
        .await
        .unwrap()
        .readings[0]
        .value;
    assert!((65_530 * 500..65_536 * 500).contains(&first), "{first}");
    assert!(
        second >= 65_536 * 500,
        "the wrap was counted through: {second}"
    );
    assert!(
        second - first <= 20 * 500 && (second - first) % 500 == 0,
        "{first} then {second}"
    );
}

#[tokio::test]
async fn a_refused_register_is_named_and_the_rest_is_read() {
    let meter = peers::modbus_meter(&[]);
    let mut source = config(
        meter.port,
        &[
            water(),
            register("missing", "site_energy", 500, "u32", "big", "kWh", "1"),
        ],
    )
    .build()
    .unwrap();
    let sample = source.sample(UnixNanos(T0)).await.unwrap();
    assert_eq!(sample.readings.len(), 1);
    assert_eq!(sample.readings[0].meter_id, "site:water");

    let mut only_missing = config(
        meter.port,
        &[register(
            "missing",
            "site_energy",
            500,
            "u32",
            "big",
            "kWh",
            "1",
        )],
    )
    .build()
    .unwrap();
    let error = only_missing.sample(UnixNanos(T0)).await.unwrap_err();
    assert!(
        error.contains("site:missing") && error.contains("register 500"),
        "{error}"
    );
}

#[tokio::test]
async fn a_closed_port_fails_fast() {
    let closed = peers::free_port(false);
    let mut source = config(closed, &[water()]).build().unwrap();
    let started = Instant::now();
    assert!(source.sample(UnixNanos(T0)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_example_config_reads_the_water_meter() {
    let meter = peers::modbus_meter(&["--litres", "42"]);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/collector-modbus.toml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("127.0.0.1:5020", &format!("127.0.0.1:{}", meter.port));
    let config: footprint_collector::config::CollectorConfig = toml::from_str(&text).unwrap();
    let footprint_collector::config::SourceConfig::Modbus(modbus) = &config.sources[0] else {
        panic!("the example's first source is not modbus");
    };
    let sample = modbus.build().unwrap().sample(UnixNanos(T0)).await.unwrap();
    assert_eq!(sample.readings[0].meter_id, "site:water");
    assert_eq!(sample.readings[0].value, 42_000);
}
