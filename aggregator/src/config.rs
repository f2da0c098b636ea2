//! The aggregator's configuration (TOML). Every key is documented here;
//! `deploy/examples/aggregator.toml` is loaded by a test.

use std::net::SocketAddr;
use std::path::PathBuf;

use footprint_core::config::{ConfigError, ConfigFile, Problems};
use serde::{Deserialize, Serialize};

/// `[tls]`: mutual TLS for the collectors' streams (and `Query` clients) on `grpc_listen`.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// PEM certificate chain of the aggregator; its names must match what collectors dial.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM CA certificate(s) that every client certificate must chain to.
    pub client_ca_file: PathBuf,
    /// How often the three files are checked for change, seconds; a changed set is loaded for
    /// new connections without a restart (open streams keep theirs).
    #[serde(default = "default_reload_interval_s")]
    pub reload_interval_s: u64,
}

fn default_reload_interval_s() -> u64 {
    30
}

impl GrpcTlsConfig {
    pub fn server_files(&self) -> footprint_proto::tls::ServerFiles {
        footprint_proto::tls::ServerFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: Some(self.client_ca_file.clone()),
            client_cert_optional: false,
            alpn: vec![b"h2".to_vec()],
        }
    }
}

/// `footprint-aggregator --config FILE`.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Address of the gRPC server (`Ingest`, `Query`). Loopback unless you mean otherwise.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP server (`/api/v1/…`, `/metrics`). Loopback unless you mean otherwise.
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Accept plaintext listeners on addresses other than loopback. A `grpc_listen` without
    /// `[tls]`, or an `http_listen` without TLS in `web_config_file`, beyond loopback is refused
    /// unless this is true, and then warned about at every start: keep such a network closed to
    /// others (a NetworkPolicy, a firewall).
    #[serde(default)]
    pub insecure: bool,
    /// Mutual TLS on the gRPC listener: collectors present a certificate from `client_ca_file`,
    /// and may only report for a host their certificate names.
    #[serde(default)]
    pub tls: Option<GrpcTlsConfig>,
    /// The HTTP listener's TLS and bearer tokens, in the web-config format Prometheus exporters
    /// use (`tls_server_config`) plus `bearer_tokens` (docs/SECURITY.md). Absent: plaintext and
    /// open, which only loopback allows unless `insecure`. The tokens also guard gRPC `Query`.
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
    /// Directory holding the ledger (`footprint.sqlite`). Created if missing.
    pub data_dir: PathBuf,
    /// Length of an attribution window, seconds; windows align to the epoch.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u32,
    /// Readings stamped further than this ahead of the aggregator's clock are rejected, seconds.
    #[serde(default = "default_max_future_skew_s")]
    pub max_future_skew_s: u64,
    /// Two readings of a meter further apart than this make a gap: the energy between them is
    /// still exact (counters), but its spread in time is interpolated and flagged, seconds.
    #[serde(default = "default_max_sample_gap_s")]
    pub max_sample_gap_s: u64,
    /// Readings are packed into hourly per-meter chunks (a few bytes, or less, per reading
    /// instead of ~45) once their hour ended this many seconds before what still reads them:
    /// the host's built windows, the site's settled hours. Late data for a packed hour unpacks it.
    #[serde(default = "default_compact_after_s")]
    pub compact_after_s: u64,
    /// Batches committed together at most (group commit); acks wait for the commit.
    #[serde(default = "default_group_commit_max_batches")]
    pub group_commit_max_batches: usize,
    /// When the writer finds fewer batches waiting than it may commit together, it waits this
    /// many milliseconds for more before committing (0: never waits). Every commit is an
    /// `fsync`: waiting a little makes fewer, larger commits, at the cost of that much ack
    /// latency.
    #[serde(default = "default_group_commit_wait_ms")]
    pub group_commit_wait_ms: u64,
    /// Bytes of received batches (encoded size) that may wait for their commit, across all
    /// streams. Past it, streams are answered RESOURCE_EXHAUSTED and collectors back off. A
    /// single batch larger than this is refused outright: keep it at least 8 MiB, the most a
    /// collector's spool merges into one batch after a long outage.
    #[serde(default = "default_ingest_budget_bytes")]
    pub ingest_budget_bytes: u64,
    /// How long a batch may wait for room in the ingest budget before that answer, ms. While it
    /// waits its stream reads nothing more, so the collector slows to what the ledger commits
    /// (flow control); a refusal instead costs a reconnect and a resend, and under a sustained
    /// burst those feed on each other (BENCHMARKS.md, overload).
    #[serde(default = "default_overload_wait_ms")]
    pub overload_wait_ms: u64,
    /// The largest plausible power per meter kind; a reading implying more is rejected.
    #[serde(default)]
    pub limits: PowerLimits,
    /// What one collector may send: message size, items and meters per message, batches a
    /// second.
    #[serde(default)]
    pub input_limits: crate::limits::InputLimits,
    /// How a host's energy is split between its jobs.
    #[serde(default)]
    pub attribution: AttributionConfig,
    /// The facility's overhead when there is no site meter.
    #[serde(default)]
    pub facility: FacilityConfig,
    /// Grid intensity and contracted supply, for location- and market-based carbon.
    #[serde(default)]
    pub carbon: CarbonConfig,
    /// Devices' embodied carbon.
    #[serde(default)]
    pub embodied: EmbodiedConfig,
    /// How long the ledger keeps window detail.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// The disclosure report: the facility's description, the KPIs Footprint cannot measure,
    /// and the key that signs reports (`footprint_exporters::report::DisclosureConfig`).
    #[serde(default)]
    pub disclosure: footprint_exporters::report::DisclosureConfig,
    /// The grid signal: intensity thresholds for its level, and zones' coordinates.
    #[serde(default)]
    pub grid: crate::grid::GridConfig,
    /// The InfluxDB 2 exporter (`url`, off by default).
    #[serde(default)]
    pub influxdb: crate::influx::InfluxConfig,
    /// Parquet history written as days settle (`dir`, off by default).
    #[serde(default)]
    pub parquet: crate::parquet_history::ParquetConfig,
    /// What `/metrics` exposes of the ledger: how long and how many jobs' series.
    #[serde(default)]
    pub metrics: crate::exposition::MetricsConfig,
    /// Where hosts stand, for totals per hall and rack: `[[placement]] host = "gpu-node-01",
    /// hall = "A", rack = "A03"`. Hosts not listed are grouped under hall and rack "unplaced".
    #[serde(default)]
    pub placement: Vec<PlacementConfig>,
}

/// `[[placement]]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// The host, as its collector names it.
    pub host: String,
    /// The hall it stands in.
    pub hall: String,
    /// The rack it stands in.
    pub rack: String,
}

/// `[attribution]`: the site's attribution policy; reports name every setting.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    /// Where a CPU package's (and DRAM's) baseline power goes when jobs report CPU time:
    /// `by_cores` (to the jobs by cores held × time, unheld cores idle) or `idle`.
    #[serde(default)]
    pub cpu_baseline: CpuBaseline,
    /// Baseline (idle) power of one CPU package, W; the energy above it is dynamic and follows
    /// each job's CPU time. 0: all package energy is dynamic.
    #[serde(default)]
    pub package_baseline_w: f64,
    /// Baseline power of one DRAM zone, W.
    #[serde(default)]
    pub dram_baseline_w: f64,
    /// For hosts without an outlet (PDU or IPMI) meter: PSU loss, fans, NICs and disks as a
    /// fraction of GPU + CPU + DRAM energy (0.08 = 8 %), flagged estimated. 0 adds nothing.
    #[serde(default)]
    pub host_overhead_factor: f64,
}

/// `attribution.cpu_baseline`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CpuBaseline {
    #[default]
    ByCores,
    Idle,
}

/// `[ledger]`.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Days of window detail (one row per host, job and window) kept behind the settled hours;
    /// older hours keep only their hourly roll-ups. Both are re-derivable from the readings,
    /// which are kept: `footprint explain` rebuilds an aged hour's windows on demand, and late
    /// data for an aged hour rebuilds it. 0 rolls an hour up and drops its detail as soon as it
    /// settles.
    #[serde(default = "default_window_detail_days")]
    pub window_detail_days: u32,
}

/// Long enough for late data from a collector that was down for days, and for a month's review
/// of the detail.
fn default_window_detail_days() -> u32 {
    35
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            window_detail_days: default_window_detail_days(),
        }
    }
}

/// `[facility]`.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FacilityConfig {
    /// PUE assumed for windows without a site energy meter (flagged estimated). Unset: no
    /// overhead is added without a meter.
    pub assumed_pue: Option<f64>,
    /// The site has a facility energy meter: hours wait for it to report instead of settling
    /// on IT energy alone while its collector has not connected yet.
    #[serde(default)]
    pub require_site_meter: bool,
    /// Longest the site waits, in seconds, for a host or site meter whose collector has sent
    /// nothing: after that, hours settle without it. Whatever it delivers later for those hours
    /// reopens them; they are settled again and marked revised (`hour_revisions`), as are host
    /// windows that late allocations or readings changed (`window_revisions`).
    #[serde(default = "default_max_wait_s")]
    pub max_wait_s: u64,
}

fn default_max_wait_s() -> u64 {
    3_600
}

impl Default for FacilityConfig {
    fn default() -> Self {
        Self {
            assumed_pue: None,
            require_site_meter: false,
            max_wait_s: default_max_wait_s(),
        }
    }
}

/// `[carbon]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CarbonConfig {
    /// The grid zone the site draws from, as the intensity feeds name it (`DE`, `CISO`, …).
    #[serde(default)]
    pub zone: String,
    /// Intensity files imported at start whose layout says which hour a timestamp names (our
    /// `datetime,zone,carbon_intensity_gco2_per_kwh` CSV, Electricity Maps CSV or JSON, WattTime
    /// v3: the hour it starts; see `footprint_core::carbon`). Importing twice changes nothing.
    #[serde(default)]
    pub intensity_files: Vec<PathBuf>,
    /// Intensity files with the hour convention stated here, for layouts that do not state it
    /// (the EIA-930 re-export) or to read one differently.
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
    /// Residual-mix factor for energy no contract covers, g/kWh. Unset: the grid average.
    pub residual_mix_g_per_kwh: Option<f64>,
    /// Where the residual-mix factor is from (publisher and edition, e.g. "AIB European
    /// Residual Mixes 2023, Germany"), shown beside every market-based figure priced with it.
    #[serde(default)]
    pub residual_mix_source: String,
    /// The year the residual-mix factor is for.
    #[serde(default)]
    pub residual_mix_year: Option<u16>,
    /// Guarantees of origin retired for the site per year, MWh, spread evenly over the year's
    /// hours; an hour's unused share carries forward within the year.
    #[serde(default)]
    pub guarantees_of_origin_mwh_per_year: f64,
    /// Power purchase agreements, matched hour by hour.
    #[serde(default)]
    pub ppa: Vec<PpaConfig>,
}

/// `[[carbon.feeds]]`: an intensity file and which hour its timestamps name.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// The file (any layout `intensity_files` takes).
    pub path: PathBuf,
    /// `starting`: a timestamp names the hour it starts (Electricity Maps, WattTime); `ending`:
    /// the hour it ends (EIA's own files, "UTC time at end of hour").
    pub hour_convention: footprint_core::carbon::HourConvention,
}

/// `[[carbon.ppa]]`: one contract's hourly delivery: a flat power, an hourly file, or both added.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PpaConfig {
    /// Name in reports.
    pub name: String,
    /// Constant delivery, kW.
    #[serde(default)]
    pub flat_kw: f64,
    /// CSV `datetime,kwh` with each hour's delivery (hours not listed deliver nothing).
    pub hourly_kwh_csv: Option<PathBuf>,
}

/// `[embodied]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbodiedConfig {
    /// Model of GPUs whose meter does not name one.
    #[serde(default)]
    pub default_gpu_model: String,
    /// Server model of every host (its chassis, CPUs, memory and storage).
    #[serde(default)]
    pub server_model: String,
    /// Entries that replace or add to the shipped device table (same fields as
    /// `core/data/embodied-devices-v1.toml`).
    #[serde(default)]
    pub devices: Vec<footprint_core::embodied::DeviceEntry>,
}

/// Largest plausible power (or flow) of one meter, per kind.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerLimits {
    /// One GPU, W.
    #[serde(default = "default_gpu_w")]
    pub gpu_w: u64,
    /// One CPU package, W.
    #[serde(default = "default_cpu_package_w")]
    pub cpu_package_w: u64,
    /// One package's DRAM, W.
    #[serde(default = "default_dram_w")]
    pub dram_w: u64,
    /// One PDU outlet or one host (IPMI), W.
    #[serde(default = "default_host_w")]
    pub host_w: u64,
    /// A whole PDU (or an outlet read for inspection), W.
    #[serde(default = "default_pdu_w")]
    pub pdu_w: u64,
    /// The facility meter, W.
    #[serde(default = "default_site_w")]
    pub site_w: u64,
    /// The facility water meter, mL/s.
    #[serde(default = "default_site_water_ml_per_s")]
    pub site_water_ml_per_s: u64,
}

impl Default for PowerLimits {
    fn default() -> Self {
        Self {
            gpu_w: default_gpu_w(),
            cpu_package_w: default_cpu_package_w(),
            dram_w: default_dram_w(),
            host_w: default_host_w(),
            pdu_w: default_pdu_w(),
            site_w: default_site_w(),
            site_water_ml_per_s: default_site_water_ml_per_s(),
        }
    }
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7411))
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7412))
}
fn default_window_seconds() -> u32 {
    10
}
fn default_max_future_skew_s() -> u64 {
    86_400
}
fn default_max_sample_gap_s() -> u64 {
    300
}
fn default_compact_after_s() -> u64 {
    3_600
}
fn default_group_commit_max_batches() -> usize {
    256
}
fn default_group_commit_wait_ms() -> u64 {
    5
}
fn default_ingest_budget_bytes() -> u64 {
    // About half a million readings awaiting commit: under two seconds of work at this machine's
    // saturation, so overload is answered RESOURCE_EXHAUSTED instead of acks that take tens of
    // seconds.
    16 << 20
}
fn default_overload_wait_ms() -> u64 {
    30_000
}
fn default_gpu_w() -> u64 {
    5_000
}
fn default_cpu_package_w() -> u64 {
    2_000
}
fn default_dram_w() -> u64 {
    1_000
}
fn default_host_w() -> u64 {
    30_000
}
fn default_pdu_w() -> u64 {
    100_000
}
fn default_site_w() -> u64 {
    2_000_000_000
}
fn default_site_water_ml_per_s() -> u64 {
    10_000_000
}

impl AggregatorConfig {
    /// A config with every default and the given data directory.
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        Self {
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            insecure: false,
            tls: None,
            web_config_file: None,
            data_dir,
            window_seconds: default_window_seconds(),
            max_future_skew_s: default_max_future_skew_s(),
            max_sample_gap_s: default_max_sample_gap_s(),
            compact_after_s: default_compact_after_s(),
            group_commit_max_batches: default_group_commit_max_batches(),
            group_commit_wait_ms: default_group_commit_wait_ms(),
            ingest_budget_bytes: default_ingest_budget_bytes(),
            overload_wait_ms: default_overload_wait_ms(),
            limits: PowerLimits::default(),
            input_limits: Default::default(),
            attribution: AttributionConfig::default(),
            facility: FacilityConfig::default(),
            carbon: CarbonConfig::default(),
            embodied: EmbodiedConfig::default(),
            ledger: LedgerConfig::default(),
            disclosure: Default::default(),
            grid: Default::default(),
            metrics: Default::default(),
            parquet: Default::default(),
            influxdb: Default::default(),
            placement: Vec::new(),
        }
    }
}

impl ConfigFile for AggregatorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        problems.check(
            !self.data_dir.as_os_str().is_empty(),
            "data_dir",
            "must not be empty",
        );
        if let Some(tls) = &self.tls {
            if let Err(error) = tls.server_files().load() {
                problems.check(false, "tls", error.to_string());
            }
            problems.check(
                tls.reload_interval_s > 0,
                "tls.reload_interval_s",
                "must be above 0",
            );
        }
        let web = self.web_config_file.as_ref().map(|path| {
            crate::auth::WebConfig::load(path).and_then(|web| match web.server_files() {
                Some(files) => {
                    files
                        .load()
                        .map(|_| true)
                        .map_err(|error| crate::auth::WebConfigError {
                            path: path.clone(),
                            reason: format!("tls_server_config: {error}"),
                        })
                }
                None => Ok(false),
            })
        });
        let http_tls = match web {
            Some(Ok(tls)) => tls,
            Some(Err(error)) => {
                problems.check(false, "web_config_file", error.to_string());
                false
            }
            None => false,
        };
        for (key, addr, encrypted) in [
            ("grpc_listen", self.grpc_listen, self.tls.is_some()),
            ("http_listen", self.http_listen, http_tls),
        ] {
            problems.check(
                encrypted || addr.ip().is_loopback() || self.insecure,
                key,
                format!(
                    "{addr} is beyond loopback and the listener is plaintext: configure TLS \
                     ([tls] for gRPC, web_config_file for HTTP), or set insecure = true to accept \
                     plaintext (and close the network to others), or listen on 127.0.0.1"
                ),
            );
        }
        problems.check(
            self.window_seconds > 0 && 86_400u32.is_multiple_of(self.window_seconds),
            "window_seconds",
            "must divide a day (1, 2, 5, 10, 15, 30, 60, …)",
        );
        problems.check(
            self.max_sample_gap_s > 0,
            "max_sample_gap_s",
            "must be above 0",
        );
        problems.check(
            (1..=100_000).contains(&self.group_commit_max_batches),
            "group_commit_max_batches",
            "must be between 1 and 100000",
        );
        problems.check(
            self.group_commit_wait_ms <= 1_000,
            "group_commit_wait_ms",
            "must be at most 1000 (it delays every ack)",
        );
        problems.check(
            self.ingest_budget_bytes >= 64 << 10,
            "ingest_budget_bytes",
            "must be at least 65536",
        );
        problems.check(
            self.input_limits.max_message_bytes >= crate::limits::MIN_MESSAGE_BYTES,
            "input_limits.max_message_bytes",
            format!(
                "must be at least {} (a collector's largest batch)",
                crate::limits::MIN_MESSAGE_BYTES
            ),
        );
        problems.check(
            self.input_limits.max_items_per_batch > 0
                && self.input_limits.max_meters_per_message > 0,
            "input_limits",
            "max_items_per_batch and max_meters_per_message must be above 0",
        );
        for (key, value) in [
            ("limits.gpu_w", self.limits.gpu_w),
            ("limits.cpu_package_w", self.limits.cpu_package_w),
            ("limits.dram_w", self.limits.dram_w),
            ("limits.host_w", self.limits.host_w),
            ("limits.site_w", self.limits.site_w),
            (
                "limits.site_water_ml_per_s",
                self.limits.site_water_ml_per_s,
            ),
        ] {
            problems.check(value > 0, key, "must be above 0");
        }
        let attribution = &self.attribution;
        for (key, watts) in [
            (
                "attribution.package_baseline_w",
                attribution.package_baseline_w,
            ),
            ("attribution.dram_baseline_w", attribution.dram_baseline_w),
        ] {
            problems.check(
                watts.is_finite() && (0.0..=2_000.0).contains(&watts),
                key,
                format!("{watts} is not between 0 and 2000 W"),
            );
        }
        problems.check(
            attribution.host_overhead_factor.is_finite()
                && (0.0..=1.0).contains(&attribution.host_overhead_factor),
            "attribution.host_overhead_factor",
            "must be between 0 and 1",
        );
        if let Some(pue) = self.facility.assumed_pue {
            problems.check(
                pue.is_finite() && (1.0..=5.0).contains(&pue),
                "facility.assumed_pue",
                format!("{pue} is not between 1 and 5"),
            );
        }
        for (key, message) in self.disclosure.problems() {
            problems.add(key, message);
        }
        if let Some(url) = &self.influxdb.url {
            let secure = url.starts_with("https://");
            problems.check(
                (url.starts_with("http://") && url.len() > "http://".len())
                    || (secure && url.len() > "https://".len()),
                "influxdb.url",
                format!("{url:?}: must be an http:// or https:// URL"),
            );
            problems.check(
                !secure || self.influxdb.ca_file.is_some(),
                "influxdb.ca_file",
                "an https:// url needs the CA its certificate chains to",
            );
            problems.check(
                !self.influxdb.bucket.is_empty(),
                "influxdb.bucket",
                "must be given with influxdb.url",
            );
            problems.check(
                self.influxdb.max_lines > 0,
                "influxdb.max_lines",
                "must be above 0",
            );
        }
        problems.check(
            crate::parquet_history::is_plain_name(&self.parquet.site),
            "parquet.site",
            crate::parquet_history::PLAIN_NAME,
        );
        let grid = &self.grid;
        for (key, value) in [
            ("grid.reduce_above_g_per_kwh", grid.reduce_above_g_per_kwh),
            ("grid.curtail_above_g_per_kwh", grid.curtail_above_g_per_kwh),
        ] {
            if let Some(value) = value {
                problems.check(
                    value.is_finite() && (0.0..=5_000.0).contains(&value),
                    key,
                    format!("{value} is not between 0 and 5000"),
                );
            }
        }
        if let Some(floor) = grid.min_facility_kw {
            problems.check(
                floor.is_finite() && floor >= 0.0,
                "grid.min_facility_kw",
                format!("{floor} is not a non-negative number of kW"),
            );
        }
        if let (Some(reduce), Some(curtail)) =
            (grid.reduce_above_g_per_kwh, grid.curtail_above_g_per_kwh)
        {
            problems.check(
                curtail >= reduce,
                "grid.curtail_above_g_per_kwh",
                format!("{curtail} is below grid.reduce_above_g_per_kwh ({reduce})"),
            );
        }
        for (index, location) in grid.locations.iter().enumerate() {
            problems.check(
                !location.name.trim().is_empty(),
                format!("grid.locations[{index}].name"),
                "must name the zone",
            );
            problems.check(
                (-90.0..=90.0).contains(&location.latitude)
                    && (-180.0..=180.0).contains(&location.longitude),
                format!("grid.locations[{index}]"),
                "latitude must be within ±90 and longitude within ±180",
            );
        }
        let carbon = &self.carbon;
        problems.check(
            (carbon.intensity_files.is_empty() && carbon.feeds.is_empty())
                || !carbon.zone.trim().is_empty(),
            "carbon.zone",
            "must name the site's zone when intensity files are given",
        );
        if let Some(residual) = carbon.residual_mix_g_per_kwh {
            problems.check(
                residual.is_finite() && (0.0..=2_000.0).contains(&residual),
                "carbon.residual_mix_g_per_kwh",
                format!("{residual} is not between 0 and 2000"),
            );
        }
        problems.check(
            carbon.guarantees_of_origin_mwh_per_year.is_finite()
                && carbon.guarantees_of_origin_mwh_per_year >= 0.0,
            "carbon.guarantees_of_origin_mwh_per_year",
            "must be a non-negative number",
        );
        for (index, ppa) in carbon.ppa.iter().enumerate() {
            problems.check(
                !ppa.name.trim().is_empty(),
                format!("carbon.ppa[{index}].name"),
                "must not be empty",
            );
            problems.check(
                ppa.flat_kw.is_finite() && ppa.flat_kw >= 0.0,
                format!("carbon.ppa[{index}].flat_kw"),
                "must be a non-negative number",
            );
        }
        for (index, device) in self.embodied.devices.iter().enumerate() {
            problems.check(
                matches!(device.kind.as_str(), "gpu" | "server"),
                format!("embodied.devices[{index}].kind"),
                format!("{:?} is not gpu or server", device.kind),
            );
            problems.check(
                device.lifetime_years > 0,
                format!("embodied.devices[{index}].lifetime_years"),
                "must be above 0",
            );
        }
        let mut placed = std::collections::BTreeSet::new();
        for (index, place) in self.placement.iter().enumerate() {
            problems.check(
                !place.host.trim().is_empty(),
                format!("placement[{index}].host"),
                "must not be empty",
            );
            problems.check(
                placed.insert(place.host.as_str()),
                format!("placement[{index}].host"),
                format!("{:?} is placed twice", place.host),
            );
        }
        problems.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_core::config::ConfigFile;

    #[test]
    fn a_plaintext_listener_beyond_loopback_needs_insecure() {
        let error =
            AggregatorConfig::from_toml("data_dir = '/tmp/x'\ngrpc_listen = '0.0.0.0:7411'\n")
                .expect_err("plaintext on every address");
        assert!(
            error.to_string().contains("grpc_listen: 0.0.0.0:7411"),
            "{error}"
        );
        assert!(error.to_string().contains("insecure = true"), "{error}");
        let accepted = AggregatorConfig::from_toml(
            "data_dir = '/tmp/x'\ngrpc_listen = '0.0.0.0:7411'\ninsecure = true\n",
        )
        .expect("accepted when said");
        assert!(accepted.insecure);
        assert!(
            !AggregatorConfig::from_toml("data_dir = '/tmp/x'\n")
                .unwrap()
                .insecure
        );
    }

    #[test]
    fn unknown_key_fails_with_its_path() {
        let error = AggregatorConfig::from_toml("data_dir = '/tmp/x'\n[limits]\ngpu_watts = 3\n")
            .expect_err("typo");
        assert!(error.to_string().starts_with("limits"), "{error}");
        assert!(error.to_string().contains("gpu_watts"), "{error}");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let error = AggregatorConfig::from_toml(
            "data_dir = '/tmp/x'\nwindow_seconds = 7\n[limits]\ngpu_w = 0\n",
        )
        .expect_err("two bad values");
        let text = error.to_string();
        assert!(
            text.contains("window_seconds:") && text.contains("limits.gpu_w:"),
            "{text}"
        );
    }

    #[test]
    fn window_detail_days_must_be_a_whole_number_of_days() {
        for bad in ["-1", "2.5", "'forever'"] {
            let error = AggregatorConfig::from_toml(&format!(
                "data_dir = '/tmp/x'\n[ledger]\nwindow_detail_days = {bad}\n"
            ))
            .expect_err(bad);
            let text = error.to_string();
            assert!(
                text.starts_with("ledger.window_detail_days"),
                "{bad}: {text}"
            );
        }
        let config = AggregatorConfig::from_toml("data_dir = '/tmp/x'\n").expect("minimal config");
        assert_eq!(config.ledger.window_detail_days, 35);
    }

    #[test]
    fn defaults_listen_on_loopback_only() {
        let config = AggregatorConfig::from_toml("data_dir = '/tmp/x'\n").expect("minimal config");
        assert!(config.grpc_listen.ip().is_loopback() && config.http_listen.ip().is_loopback());
    }
}
