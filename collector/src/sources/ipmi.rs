//! `type = "ipmi"`: whole-host power from the BMC (IPMI DCMI Get Power Reading), for hosts with
//! neither a metered PDU outlet nor RAPL. The BMC gives instantaneous power only, so it is
//! integrated between reads by the trapezoid rule into a `HOST_ENERGY` counter, flagged
//! interpolated.
//!
//! The BMC is asked through `ipmitool` (`-I open` for this host's own BMC via `/dev/ipmi0`, or
//! `-I lanplus` over the network), the tool every BMC vendor tests against. The password goes
//! through `IPMI_PASSWORD` (`-E`), never the command line, where any local user could read it.
//! BMCs refresh DCMI readings every second or few and answer slowly, so the BMC is asked at most
//! every `interval_ms`; ticks in between report nothing (the next reading covers them).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::v1::{MeterInfo, MeterKind, Quality, Reading};
use serde::{Deserialize, Serialize};

use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};
use crate::sources::power_model::SampledPowerCounter;

/// The host's BMC.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpmiConfig {
    /// `open` (this host's BMC through the kernel's IPMI driver) or `lanplus` (RMCP+).
    #[serde(default)]
    pub interface: IpmiInterface,
    /// For `lanplus`: the BMC's address.
    #[serde(default)]
    pub host: Option<String>,
    /// For `lanplus`: the BMC's UDP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// For `lanplus`: the BMC user.
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the password (first line). Absent: no password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// RMCP+ cipher suite; 3 (SHA1, AES-128) answers without the slow suite lookup.
    #[serde(default = "default_cipher_suite")]
    pub cipher_suite: u8,
    /// The ipmitool program.
    #[serde(default = "default_ipmitool")]
    pub ipmitool: PathBuf,
    /// Shortest time between two reads of the BMC, ms.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Longest wait for one read, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The meter's id.
    #[serde(default = "default_meter")]
    pub meter: String,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum IpmiInterface {
    #[default]
    Open,
    Lanplus,
}

fn default_port() -> u16 {
    623
}
fn default_cipher_suite() -> u8 {
    3
}
fn default_ipmitool() -> PathBuf {
    PathBuf::from("ipmitool")
}
fn default_interval_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_meter() -> String {
    "ipmi:host".to_owned()
}

/// The power in a `ipmitool dcmi power reading` answer, W; the reason when there is none.
pub fn parse_power_reading(text: &str) -> Result<u64, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .map(|rest| rest.trim_start_matches(':').trim())
    };
    if let Some(state) = field("Power reading state is")
        && state != "activated"
    {
        return Err(format!("the BMC's power reading is {state}"));
    }
    let reading = field("Instantaneous power reading")
        .ok_or_else(|| "no \"Instantaneous power reading\" in ipmitool's answer".to_owned())?;
    reading
        .strip_suffix("Watts")
        .map(str::trim)
        .and_then(|watts| watts.parse::<u64>().ok())
        .ok_or_else(|| format!("{reading:?} is not a power in Watts"))
}

impl IpmiConfig {
    /// Reads the password file; the BMC is first asked at the first sample.
    ///
    /// # Errors
    /// The password file cannot be read.
    pub fn build(&self) -> Result<IpmiSource, String> {
        let password = match &self.password_file {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("password_file {}: {e}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
        };
        let target = match self.interface {
            IpmiInterface::Open => "this host's BMC (ipmitool -I open)".to_owned(),
            IpmiInterface::Lanplus => format!(
                "the BMC at {}:{} (ipmitool -I lanplus)",
                self.host.as_deref().unwrap_or_default(),
                self.port
            ),
        };
        Ok(IpmiSource {
            info: MeterInfo {
                meter_id: self.meter.clone(),
                kind: MeterKind::HostEnergy as i32,
                device: "host".into(),
                method: format!(
                    "IPMI DCMI instantaneous power of {target}, integrated between reads (trapezoid rule)"
                ),
                ..MeterInfo::default()
            },
            config: self.clone(),
            password,
            counter: SampledPowerCounter::new(),
            last_read: None,
        })
    }
}

impl SourceSettings for IpmiConfig {
    fn meter_ids(&self) -> Vec<String> {
        vec![self.meter.clone()]
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            self.interface == IpmiInterface::Open || self.host.is_some(),
            format!("{path}.host"),
            "required with interface = \"lanplus\"",
        );
        super::check_timeout_ms(problems, path, self.timeout_ms);
        problems.check(
            !self.meter.trim().is_empty(),
            format!("{path}.meter"),
            "must not be empty",
        );
    }

    fn build_source(&self, _context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build()?))
    }
}

/// The running `ipmi` source.
pub struct IpmiSource {
    info: MeterInfo,
    config: IpmiConfig,
    password: Option<String>,
    counter: SampledPowerCounter,
    last_read: Option<i64>,
}

impl std::fmt::Debug for IpmiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiSource")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl IpmiSource {
    async fn read_power_w(&self) -> Result<u64, String> {
        let mut command = tokio::process::Command::new(&self.config.ipmitool);
        match self.config.interface {
            IpmiInterface::Open => {
                command.args(["-I", "open"]);
            }
            IpmiInterface::Lanplus => {
                command
                    .args(["-I", "lanplus", "-H"])
                    .arg(self.config.host.as_deref().unwrap_or_default())
                    .arg("-p")
                    .arg(self.config.port.to_string())
                    .arg("-C")
                    .arg(self.config.cipher_suite.to_string());
                if let Some(user) = &self.config.user {
                    command.arg("-U").arg(user);
                }
                if let Some(password) = &self.password {
                    command.arg("-E").env("IPMI_PASSWORD", password);
                }
            }
        }
        command
            .args(["dcmi", "power", "reading"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let run = tokio::time::timeout(
            Duration::from_millis(self.config.timeout_ms),
            command.output(),
        )
        .await
        .map_err(|_| {
            format!(
                "ipmitool: no answer within {} ms (a gap; the next reading covers it)",
                self.config.timeout_ms
            )
        })?
        .map_err(|e| format!("{}: {e}", self.config.ipmitool.display()))?;
        let stdout = String::from_utf8_lossy(&run.stdout);
        if !run.status.success() {
            let stderr = String::from_utf8_lossy(&run.stderr);
            return Err(format!(
                "ipmitool dcmi power reading failed: {}{}",
                stderr.trim(),
                stdout.trim()
            ));
        }
        parse_power_reading(&stdout)
    }
}

#[async_trait]
impl Source for IpmiSource {
    fn name(&self) -> &str {
        "ipmi"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        vec![self.info.clone()]
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let interval_ns = i64::try_from(self.config.interval_ms)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000);
        if self
            .last_read
            .is_some_and(|last| at.0.saturating_sub(last) < interval_ns)
        {
            return Ok(Sample::default());
        }
        let watts = self.read_power_w().await?;
        self.last_read = Some(at.0);
        let value = self.counter.record(at.0, watts.saturating_mul(1_000));
        Ok(Sample {
            readings: vec![Reading {
                quality: Quality::Interpolated as i32,
                ..measured_reading(&self.info.meter_id, value, at)
            }],
            ..Sample::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_readings_parse_or_say_why() {
        let answer = "\n    Instantaneous power reading:                   192 Watts\n    Minimum during sampling period:                192 Watts\n    Power reading state is:                   activated\n";
        assert_eq!(parse_power_reading(answer), Ok(192));
        let off = answer.replace("activated", "deactivated");
        assert!(
            parse_power_reading(&off)
                .unwrap_err()
                .contains("deactivated")
        );
        assert!(parse_power_reading("").is_err());
        assert!(parse_power_reading("Instantaneous power reading: lots Watts").is_err());
    }
}
