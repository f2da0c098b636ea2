//! The SNMP source against snmpsim serving the real APC AP8641 and AP7902B recordings of
//! snmpsim-data, over v2c and v3, with a growing counter, a slow agent and a closed port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peers;

use std::time::{Duration, Instant};

use footprint_collector::source::Source;
use footprint_collector::sources::snmp::SnmpConfig;
use footprint_core::UnixNanos;
use footprint_proto::v1::{MeterKind, Quality};

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600 * SECOND;
/// 0.1 kWh.
const TENTH_KWH_MJ: u64 = 360_000_000;

const DEVICE_ENERGY: &str = "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1";
const OUTLET_1_ENERGY: &str = "1.3.6.1.4.1.318.1.1.26.9.4.3.1.11.1";

fn recording(name: &str) -> String {
    std::fs::read_to_string(peers::snmpsim_recordings().join(format!("UPS/{name}.snmprec")))
        .unwrap()
}

/// The recording with one OID's line replaced.
fn with_line(text: &str, oid: &str, replacement: &str) -> String {
    let prefix = format!("{oid}|");
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                found = true;
                format!("{oid}|{replacement}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(found, "{oid} is not in the recording");
    lines.join("\n") + "\n"
}

fn config(port: u16, extra: &str) -> SnmpConfig {
    toml::from_str(&format!(
        "agent = '127.0.0.1:{port}'\nprofile = 'apc_rpdu2'\n{extra}"
    ))
    .unwrap()
}

fn values(sample: &footprint_collector::source::Sample) -> Vec<(String, u64, i32)> {
    sample
        .readings
        .iter()
        .map(|r| (r.meter_id_text().into_owned(), r.value, r.quality))
        .collect()
}

#[tokio::test]
async fn an_ap8641_reads_exactly_what_its_recording_holds_over_v2c_and_v3() {
    let agent = peers::snmpsim(&[("apc-8641", recording("apc-8641"))]);
    let mut source = config(
        agent.port,
        "community = 'apc-8641'\nhost_outlets = [1]\nother_outlets = [2, 3]\ndevice = true",
    )
    .build()
    .unwrap();
    let kinds: Vec<(String, i32, u64)> = source
        .meters()
        .into_iter()
        .map(|m| (m.meter_id, m.kind, m.resolution))
        .collect();
    let outlet = MeterKind::OutletEnergy as i32;
    let pdu = MeterKind::PduEnergy as i32;
    // Each energy register moves in 0.1 kWh steps, announced so the aggregator's rate check
    // allows a whole step between two close samples.
    assert_eq!(
        kinds,
        [
            ("pdu:outlet-1".into(), outlet, TENTH_KWH_MJ),
            ("pdu:outlet-2".into(), pdu, TENTH_KWH_MJ),
            ("pdu:outlet-3".into(), pdu, TENTH_KWH_MJ),
            ("pdu:device".into(), pdu, TENTH_KWH_MJ)
        ]
    );
    let measured = Quality::Measured as i32;
    let interpolated = Quality::Interpolated as i32;
    // The registers in tenths of kWh: 3046, 1225, 1530 (outlets), 19516 (device).
    let first = source.sample(UnixNanos(T0)).await.unwrap();
    assert_eq!(
        values(&first),
        [
            ("pdu:outlet-1".into(), 3_046 * TENTH_KWH_MJ, measured),
            ("pdu:outlet-2".into(), 1_225 * TENTH_KWH_MJ, measured),
            ("pdu:outlet-3".into(), 1_530 * TENTH_KWH_MJ, measured),
            ("pdu:device".into(), 19_516 * TENTH_KWH_MJ, measured)
        ]
    );
    assert_eq!(first.readings[0].value, 1_096_560_000_000);
    // One second later the registers have not moved: power fills in, 163 W, 4 W, 81 W and
    // 121 hundredths of a kW.
    let second = source.sample(UnixNanos(T0 + SECOND)).await.unwrap();
    assert_eq!(
        values(&second),
        [
            (
                "pdu:outlet-1".into(),
                3_046 * TENTH_KWH_MJ + 163_000,
                interpolated
            ),
            (
                "pdu:outlet-2".into(),
                1_225 * TENTH_KWH_MJ + 4_000,
                interpolated
            ),
            (
                "pdu:outlet-3".into(),
                1_530 * TENTH_KWH_MJ + 81_000,
                interpolated
            ),
            (
                "pdu:device".into(),
                19_516 * TENTH_KWH_MJ + 1_210_000,
                interpolated
            )
        ]
    );

    // SNMPv3 with the simulator's user, authPriv (MD5 + DES), context = the recording.
    let mut v3 = config(
        agent.port,
        "version = '3'\nhost_outlets = [1]\n[v3]\nuser = 'simulator'\nauth_protocol = 'md5'\nauth_password = 'auctoritas'\nprivacy_protocol = 'des'\nprivacy_password = 'privatus'\ncontext = 'apc-8641'",
    )
    .build()
    .unwrap();
    let over_v3 = v3.sample(UnixNanos(T0)).await.unwrap();
    assert_eq!(
        values(&over_v3),
        [("pdu:outlet-1".into(), 3_046 * TENTH_KWH_MJ, measured)]
    );
}

#[tokio::test]
async fn a_growing_register_is_followed_exactly_at_each_step() {
    // The device register grows by 2 tenths of a kWh per second from the recorded 19516.
    let live = with_line(
        &recording("apc-8641"),
        DEVICE_ENERGY,
        "2:numeric|initial=19516,rate=2",
    );
    let agent = peers::snmpsim(&[("apc-8641-live", live)]);
    let mut source = config(
        agent.port,
        "community = 'apc-8641-live'\ndevice = true\npower_fill = false",
    )
    .build()
    .unwrap();
    let first = source.sample(UnixNanos(T0)).await.unwrap().readings[0].clone();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let second = source
        .sample(UnixNanos(T0 + 1_600_000_000))
        .await
        .unwrap()
        .readings[0]
        .clone();
    assert!(first.value >= 19_516 * TENTH_KWH_MJ);
    assert_eq!(first.value % TENTH_KWH_MJ, 0, "whole register steps");
    assert_eq!(second.value % TENTH_KWH_MJ, 0);
    assert!(
        second.value >= first.value + 2 * TENTH_KWH_MJ,
        "{} then {}",
        first.value,
        second.value
    );
    assert_eq!(second.quality, Quality::Measured as i32);
}

#[tokio::test]
async fn an_ap7902b_answers_minus_one_so_its_old_power_oid_is_integrated() {
    let agent = peers::snmpsim(&[("apc-7902b", recording("apc-7902b"))]);
    // rPDU2 device energy and power are -1 (not supported): absent, never zero. The older
    // rPDU power OID holds 192 W.
    let mut source = config(agent.port, "community = 'apc-7902b'\ndevice = true")
        .build()
        .unwrap();
    let first = source.sample(UnixNanos(T0)).await.unwrap();
    let second = source.sample(UnixNanos(T0 + 10 * SECOND)).await.unwrap();
    let interpolated = Quality::Interpolated as i32;
    assert_eq!(values(&first), [("pdu:device".into(), 0, interpolated)]);
    assert_eq!(
        values(&second),
        [("pdu:device".into(), 1_920_000, interpolated)]
    );
    assert!(second.readings[0].method.contains("integrated"));

    // Its outlets have no energy or power at all: the source says so instead of reporting 0.
    let mut outlets = config(agent.port, "community = 'apc-7902b'\nhost_outlets = [1]")
        .build()
        .unwrap();
    let error = outlets.sample(UnixNanos(T0)).await.unwrap_err();
    assert!(error.contains("pdu:outlet-1"), "{error}");
}

#[tokio::test]
async fn a_slow_agent_or_a_closed_port_gives_a_gap_not_a_stall() {
    let slow = with_line(
        &recording("apc-8641"),
        OUTLET_1_ENERGY,
        "2:delay|value=3046,wait=5000",
    );
    let failing = with_line(
        &recording("apc-8641"),
        OUTLET_1_ENERGY,
        "2:error|op=get,status=generror,value=3046",
    );
    let agent = peers::snmpsim(&[
        ("apc-8641", recording("apc-8641")),
        ("apc-8641-slow", slow),
        ("apc-8641-failing", failing),
    ]);
    // An agent that answers with an error status: a clear failure naming it, at once.
    let mut erring = config(
        agent.port,
        "community = 'apc-8641-failing'\nhost_outlets = [1]",
    )
    .build()
    .unwrap();
    let error = erring.sample(UnixNanos(T0)).await.unwrap_err();
    assert!(error.contains("error status"), "{error}");

    let mut source = config(
        agent.port,
        "community = 'apc-8641-slow'\nhost_outlets = [1]\ntimeout_ms = 300",
    )
    .build()
    .unwrap();
    let started = Instant::now();
    let error = source.sample(UnixNanos(T0)).await.unwrap_err();
    assert!(error.contains("no answer within 300 ms"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The agent answers other requests again once it has served the slow one (snmpsim serves
    // one request at a time); a fresh session gets through.
    let mut healthy = config(agent.port, "community = 'apc-8641'\nhost_outlets = [1]")
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while healthy.sample(UnixNanos(T0)).await.is_err() {
        assert!(Instant::now() < deadline, "the agent never answered again");
    }

    let closed = peers::free_port(true);
    let mut dead = config(
        closed,
        "community = 'apc-8641'\nhost_outlets = [1]\ntimeout_ms = 300",
    )
    .build()
    .unwrap();
    let started = Instant::now();
    assert!(dead.sample(UnixNanos(T0)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_example_config_reads_every_device_and_outlet_meter() {
    let agent = peers::snmpsim(&[("apc-8641", recording("apc-8641"))]);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/collector-snmp.toml");
    // The example names snmpsim's usual port; this test's agent is on a free one.
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("127.0.0.1:1161", &format!("127.0.0.1:{}", agent.port));
    let config: footprint_collector::config::CollectorConfig = toml::from_str(&text).unwrap();
    let footprint_collector::config::SourceConfig::Snmp(snmp) = &config.sources[0] else {
        panic!("the example's first source is not snmp");
    };
    let sample = snmp.build().unwrap().sample(UnixNanos(T0)).await.unwrap();
    assert_eq!(sample.readings.len(), 25, "24 outlets and the device");
    assert_eq!(sample.readings[0].value, 3_046 * TENTH_KWH_MJ);
}
