//! The collector's configuration (TOML). Every key is documented here; `deploy/examples/` has
//! a config for each source, loaded by a test.

use std::path::PathBuf;

use footprint_core::config::{ConfigError, ConfigFile, Problems};
use footprint_core::time::parse_rfc3339;
use serde::{Deserialize, Serialize};

use crate::source::SourceSettings;

use crate::sources::ipmi::IpmiConfig;
use crate::sources::kubernetes::KubernetesConfig;
use crate::sources::modbus::ModbusConfig;
use crate::sources::nvml::NvmlConfig;
use crate::sources::process::ProcessConfig;
use crate::sources::rapl::RaplConfig;
use crate::sources::replay::ReplayConfig;
use crate::sources::site_replay::SiteReplayConfig;
use crate::sources::slurm::SlurmConfig;
use crate::sources::snmp::SnmpConfig;
use crate::sources::synthetic::SyntheticConfig;

/// `footprint-collector --config FILE`.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Stable identity of this collector, kept across restarts. Default: `host`.
    #[serde(default)]
    pub collector_id: Option<String>,
    /// The host this collector reports for; every meter it announces belongs to this host.
    pub host: String,
    /// The aggregator's gRPC endpoint: `https://…` with `[tls]`, `http://…` on a closed network.
    #[serde(default = "default_aggregator")]
    pub aggregator: String,
    /// TLS to the aggregator: the CA its certificate chains to, and this host's certificate and
    /// key (mutual TLS; the certificate must name `host`). Read again at every reconnect, so a
    /// renewed certificate is used without a restart.
    #[serde(default)]
    pub tls: Option<footprint_proto::tls::ClientFiles>,
    /// Allow a plaintext `http://` aggregator beyond loopback: readings and host identity then
    /// cross the network unprotected, so only on a network closed to others (a NetworkPolicy).
    #[serde(default)]
    pub insecure: bool,
    /// Time between two reads of every meter, in milliseconds (of the collector's clock).
    #[serde(default = "default_sample_interval_ms")]
    pub sample_interval_ms: u64,
    /// On the wall clock, offset this collector's ticks within the sample interval by a stable
    /// hash of its id, so a fleet's batches do not all arrive in the same instant. Readings are
    /// stamped when taken; windows and energy are unaffected. Default true.
    #[serde(default = "default_spread_ticks")]
    pub spread_ticks: bool,
    /// Samples grouped into one batch. 1 sends every tick at once.
    #[serde(default = "default_samples_per_batch")]
    pub samples_per_batch: u32,
    /// Directory of the spool (`spool.redb`): every batch is written there, durably, before it
    /// is sent, and stays until the aggregator acknowledges it, across restarts. Absent: the
    /// spool is kept in memory and what is unacknowledged is lost when the collector stops.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Size above which the spool compacts its oldest batches (fewer readings per meter, each
    /// meter's energy exact), bytes. Default 1 GiB.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Readings held in the spool longer than this (behind the newest), s, are thinned to one
    /// per meter and `spool_aged_step_s`: after a long outage time resolution goes first; energy
    /// and water stay exact and the thinned span is flagged. Default 7 days.
    #[serde(default = "default_spool_max_age_s")]
    pub spool_max_age_s: u64,
    /// The step aged readings are thinned to, s. Default 300.
    #[serde(default = "default_spool_aged_step_s")]
    pub spool_aged_step_s: u64,
    /// Seconds to keep trying to deliver the spool after sampling stops; what is left stays in
    /// the spool for the next start.
    #[serde(default = "default_flush_timeout_s")]
    pub flush_timeout_s: u64,
    /// Where the collector serves its own health on `/metrics` (readings sampled, batches
    /// acknowledged, reconnects, spool depth). Absent (the default): not served. Keep it on
    /// loopback: it has no authentication.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A simulated clock, for replays and demos. Absent: the wall clock.
    #[serde(default)]
    pub clock: Option<SimulatedClockConfig>,
    /// The sources to read, each a table with a `type` key.
    pub sources: Vec<SourceConfig>,
}

/// A clock that starts at `start` and runs `speed` times faster than real time.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedClockConfig {
    /// RFC 3339 start instant, e.g. `2024-11-01T00:00:00Z`.
    pub start: String,
    /// Simulated seconds per real second; 1440 plays a day in a minute.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// RFC 3339 instant after which the collector takes a last sample, flushes and exits.
    #[serde(default)]
    pub stop_at: Option<String>,
    /// RFC 3339 wall-clock instant at which the simulated clock read `start`. Default: when the
    /// collector starts. Set it so that a restarted collector continues the same timeline.
    #[serde(default)]
    pub real_start: Option<String>,
}

/// The registry of sources: each line is a `type` of `[[sources]]` table, its config (a struct
/// of `sources/` implementing [`SourceSettings`]) and what it reads, which `--help` shows.
macro_rules! source_registry {
    ($($name:literal => $variant:ident($config:ty), $help:literal;)*) => {
        /// One source. `type` picks the variant.
        #[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
        #[serde(tag = "type")]
        pub enum SourceConfig {
            $(#[doc = $help] #[serde(rename = $name)] $variant($config),)*
        }

        impl SourceConfig {
            /// The source's settings, whatever its type.
            pub fn settings(&self) -> &dyn SourceSettings {
                match self {
                    $(Self::$variant(config) => config,)*
                }
            }
        }

        /// Every source `type`, with what it reads.
        pub const SOURCE_TYPES: &[(&str, &str)] = &[$(($name, $help),)*];
    };
}

source_registry! {
    "replay" => Replay(ReplayConfig),
        "A simulated host: GPU energy counters integrated from a recorded power trace (default: \
         Cornell BioHPC, Nov-Dec 2024) while jobs hold the GPUs, RAPL package and DRAM counters \
         (idle + per held core) that wrap like the real ones; the jobs are announced as \
         allocations.";
    "site_replay" => SiteReplay(SiteReplayConfig),
        "A simulated facility meter (and water meter): the IT load of the hosts it lists times \
         an hourly PUE (WUE), plus a base.";
    "synthetic" => Synthetic(SyntheticConfig),
        "Many GPU meters at a steady power, for load tests (`footprint loadgen`).";
    "rapl" => Rapl(RaplConfig),
        "This host's CPU packages, DRAM, core and uncore energy from the kernel's powercap tree \
         (/sys/class/powercap/intel-rapl:*); energy_uj is readable by root only since Linux \
         5.10, and zones that cannot be read are left out with a warning.";
    "nvml" => Nvml(NvmlConfig),
        "NVIDIA GPUs through the driver's libnvidia-ml: board energy counters (power integrated \
         where a GPU has none, flagged interpolated), power limits, the jobs of their compute \
         processes as allocations, per-job busy time for sharing a GPU, MIG instances. Without \
         a driver the source says NVML is absent.";
    "snmp" => Snmp(SnmpConfig),
        "A PDU over SNMP v2c/v3 (APC rPDU2, Raritan PDU2, ServerTech Sentry4, Eaton ePDU, or OIDs \
         from config): this host's outlets, and for inspection others and the whole PDU; coarse \
         energy registers filled in with power between steps.";
    "modbus" => Modbus(ModbusConfig),
        "Site meters over Modbus TCP (facility energy, water): the register map (function, \
         address, type, word order, scale, unit) in config.";
    "slurm" => Slurm(SlurmConfig),
        "Which Slurm job holds which GPUs and CPUs here: the prolog/epilog hooks of \
         deploy/slurm/, the job's cgroup (v1 or v2) or processes for CPUs and CPU time.";
    "process" => Process(ProcessConfig),
        "Plain processes as jobs (FOOTPRINT_JOB=job-id in their environment, or a configured \
         command line), with their CPU time.";
    "kubernetes" => Kubernetes(KubernetesConfig),
        "Pods holding GPUs or exclusive CPUs on a Kubernetes node, from the kubelet's \
         pod-resources socket.";
    "ipmi" => Ipmi(IpmiConfig),
        "Whole-host power from the BMC (IPMI DCMI through ipmitool), integrated, for hosts with \
         neither a metered PDU outlet nor RAPL.";
}

fn default_aggregator() -> String {
    "http://127.0.0.1:7411".to_owned()
}
fn default_sample_interval_ms() -> u64 {
    1_000
}
fn default_spread_ticks() -> bool {
    true
}
fn default_samples_per_batch() -> u32 {
    1
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
/// Default of `spool_max_age_s`.
pub fn default_spool_max_age_s() -> u64 {
    7 * 86_400
}
/// Default of `spool_aged_step_s`.
pub fn default_spool_aged_step_s() -> u64 {
    300
}
fn default_flush_timeout_s() -> u64 {
    30
}
fn default_speed() -> f64 {
    1.0
}

impl CollectorConfig {
    pub fn collector_id(&self) -> &str {
        self.collector_id.as_deref().unwrap_or(&self.host)
    }
}

/// A trace file named in config, or the embedded default.
pub(crate) fn load_trace(path: Option<&PathBuf>) -> Result<crate::trace::PowerTrace, String> {
    match path {
        None => crate::trace::PowerTrace::parse(crate::trace::EMBEDDED_TRACE),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            crate::trace::PowerTrace::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

/// Whether `endpoint` is `http://` to an address other than loopback (`localhost`, 127.0.0.0/8,
/// `::1`).
fn plaintext_beyond_loopback(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Ok(uri) = authority.parse::<tonic::codegen::http::uri::Authority>() else {
        return false;
    };
    let host = uri.host().trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

impl ConfigFile for CollectorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        problems.check(!self.host.trim().is_empty(), "host", "must not be empty");
        if let Some(id) = &self.collector_id {
            problems.check(!id.trim().is_empty(), "collector_id", "must not be empty");
        }
        problems.check(
            self.aggregator.starts_with("http://") || self.aggregator.starts_with("https://"),
            "aggregator",
            "must be an http:// or https:// URL",
        );
        problems.check(
            self.insecure || !plaintext_beyond_loopback(&self.aggregator),
            "aggregator",
            "a plaintext http:// endpoint beyond loopback crosses a network unprotected: use \
             https:// with [tls], or set insecure = true on a closed network",
        );
        problems.check(
            self.aggregator.starts_with("https://") == self.tls.is_some(),
            "aggregator",
            "an https:// endpoint needs [tls] (ca_file, cert_file, key_file), and [tls] needs an \
             https:// endpoint",
        );
        if let Some(Err(error)) = self.tls.as_ref().map(|tls| tls.load(b"h2")) {
            problems.check(false, "tls", error.to_string());
        }
        problems.check(
            self.sample_interval_ms > 0,
            "sample_interval_ms",
            "must be above 0",
        );
        problems.check(
            self.samples_per_batch > 0,
            "samples_per_batch",
            "must be above 0",
        );
        problems.check(
            self.spool_max_bytes >= 1 << 20,
            "spool_max_bytes",
            "must be at least 1 MiB (1048576)",
        );
        problems.check(
            self.spool_aged_step_s > 0 && self.spool_aged_step_s <= self.spool_max_age_s,
            "spool_aged_step_s",
            "must be above 0 and at most spool_max_age_s",
        );
        problems.check(
            !self.sources.is_empty(),
            "sources",
            "at least one source is needed",
        );
        if let Some(clock) = &self.clock {
            let start = parse_rfc3339(&clock.start);
            if let Err(message) = &start {
                problems.add("clock.start", message.clone());
            }
            problems.check(
                clock.speed.is_finite() && clock.speed > 0.0,
                "clock.speed",
                "must be a positive number",
            );
            if let Some(Err(message)) = clock.real_start.as_deref().map(parse_rfc3339) {
                problems.add("clock.real_start", message);
            }
            if let Some(stop_at) = &clock.stop_at {
                match (parse_rfc3339(stop_at), &start) {
                    (Err(message), _) => problems.add("clock.stop_at", message),
                    (Ok(stop), Ok(start)) if stop <= *start => {
                        problems.add("clock.stop_at", "must be after clock.start")
                    }
                    _ => {}
                }
            }
        }
        let mut meter_ids = std::collections::BTreeSet::new();
        for (index, source) in self.sources.iter().enumerate() {
            let path = format!("sources[{index}]");
            source.settings().validate(&path, &mut problems);
            for meter in source.settings().meter_ids() {
                if !meter_ids.insert(meter.clone()) {
                    problems.add(
                        path.clone(),
                        format!("meter {meter:?} is read by another source too"),
                    );
                }
            }
        }
        let nvml_allocations = self
            .sources
            .iter()
            .any(|s| matches!(s, SourceConfig::Nvml(nvml) if nvml.process_allocations));
        for (index, source) in self.sources.iter().enumerate() {
            if let SourceConfig::Process(process) = source
                && process.allocations
                && nvml_allocations
            {
                problems.add(
                    format!("sources[{index}].allocations"),
                    "an nvml source reports process jobs with their GPUs already: set one of the two to false",
                );
            }
        }
        problems.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::plaintext_beyond_loopback;

    #[test]
    fn plaintext_is_allowed_on_loopback_only() {
        for local in [
            "http://127.0.0.1:7411",
            "http://127.8.0.1:7411",
            "http://localhost:7411",
            "http://[::1]:7411/",
            "https://10.0.0.5:7411",
        ] {
            assert!(!plaintext_beyond_loopback(local), "{local}");
        }
        for remote in [
            "http://10.0.0.5:7411",
            "http://footprint.example.net:7411",
            "http://0.0.0.0:7411",
            "http://[fd00::1]:7411/path",
        ] {
            assert!(plaintext_beyond_loopback(remote), "{remote}");
        }
    }
}
