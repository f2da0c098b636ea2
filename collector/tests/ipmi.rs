//! The IPMI source against OpenIPMI's simulated BMC (`ipmi_sim`) with our DCMI power plug-in,
//! over RMCP+ through the real ipmitool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peers;

use footprint_collector::source::Source;
use footprint_collector::sources::ipmi::IpmiConfig;
use footprint_core::UnixNanos;
use footprint_proto::v1::{MeterKind, Quality};

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600 * SECOND;

#[tokio::test]
async fn dcmi_power_is_integrated_into_host_energy() {
    let dir = tempfile::tempdir().unwrap();
    let power = dir.path().join("power");
    std::fs::write(&power, "192\n").unwrap();
    let bmc = peers::ipmi_sim(&power);
    let password = dir.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let config: IpmiConfig = toml::from_str(&format!(
        "interface = 'lanplus'\nhost = '127.0.0.1'\nport = {}\nuser = 'admin'\npassword_file = {password:?}\ninterval_ms = 5000",
        bmc.port
    ))
    .unwrap();
    let mut source = config.build().unwrap();
    assert_eq!(source.meters()[0].kind, MeterKind::HostEnergy as i32);

    let first = source.sample(UnixNanos(T0)).await.unwrap();
    assert_eq!(first.readings[0].value, 0);
    assert_eq!(first.readings[0].quality, Quality::Interpolated as i32);
    // Within interval_ms the BMC is not asked again.
    assert!(
        source
            .sample(UnixNanos(T0 + SECOND))
            .await
            .unwrap()
            .readings
            .is_empty()
    );
    // 192 W, then 308 W ten seconds later: 2 500 J by the trapezoid rule.
    std::fs::write(&power, "308\n").unwrap();
    let second = source.sample(UnixNanos(T0 + 10 * SECOND)).await.unwrap();
    assert_eq!(second.readings[0].value, 2_500_000);

    // A reading the BMC marks inactive is refused, not taken for 0 W.
    std::fs::remove_file(&power).unwrap();
    let error = source
        .sample(UnixNanos(T0 + 20 * SECOND))
        .await
        .unwrap_err();
    assert!(error.contains("deactivated"), "{error}");

    // A wrong password is a clear failure.
    std::fs::write(&password, "wrong\n").unwrap();
    let mut refused = config.build().unwrap();
    assert!(refused.sample(UnixNanos(T0)).await.is_err());
}
