//! `type = "snmp"`: a PDU's outlet and whole-device energy over SNMP v2c or v3.
//!
//! A profile names the OIDs of a PDU family; `generic` takes them from config. The outlets
//! feeding this host are its `OUTLET_ENERGY` meters (the host's measured total); other outlets
//! and the whole PDU may be read too, as `PDU_ENERGY` (stored, never attributed: a collector
//! reports only for its own host).
//!
//! PDU energy registers are coarse (APC and ServerTech count 0.1 kWh = 360 kJ, about 12 minutes
//! of a 500 W server), so where the PDU also gives power the counter is filled in between its
//! steps with integrated power ([`PowerFilledCounter`]): the reading never leaves the counter's
//! current step, so energy over any span between counter moves is exactly the counter's, and the
//! filled readings are flagged interpolated. An outlet with power but no energy register (APC
//! AP7902B-class, which answers −1) has its power integrated instead, also interpolated. −1 and
//! "no such object" mean absent, never zero.
//!
//! A slow or dead agent costs at most `timeout_ms` per sample: the sample fails, the collector
//! carries on, and the next reading covers the gap (the aggregator flags the long interval).

use std::time::Duration;

use async_trait::async_trait;
use footprint_core::config::Problems;
use footprint_core::{Millijoules, UnixNanos};
use footprint_proto::v1::{MeterInfo, MeterKind, Quality, Reading};
use serde::{Deserialize, Serialize};
use snmp2::{AsyncSession, Oid, Value, v3};
use tracing::warn;

use crate::source::{BuildContext, Sample, Source, SourceSettings};
use crate::sources::power_model::{PowerFilledCounter, SampledPowerCounter};

/// A PDU read over SNMP.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// The PDU's agent, `host:port` (UDP).
    pub agent: String,
    /// `2c` (community) or `3` (user-based security).
    #[serde(default)]
    pub version: SnmpVersion,
    /// SNMP v2c community.
    #[serde(default = "default_community")]
    pub community: String,
    /// SNMP v3 security; required with `version = "3"`.
    #[serde(default)]
    pub v3: Option<SnmpV3Config>,
    /// The PDU family: `apc_rpdu2`, `raritan_pdu2`, `servertech_sentry4`, `eaton_epdu`, or
    /// `generic` (OIDs from `oids`).
    pub profile: Profile,
    /// The PDU's index on a daisy chain behind one agent. Default: the family's first (0 for
    /// Eaton, 1 for the others).
    #[serde(default)]
    pub unit: Option<u32>,
    /// Outlets feeding this host: their energy is the host's measured total.
    #[serde(default)]
    pub host_outlets: Vec<u32>,
    /// Outlets feeding other hosts, read for inspection only.
    #[serde(default)]
    pub other_outlets: Vec<u32>,
    /// Also read the whole PDU's energy (inspection only).
    #[serde(default)]
    pub device: bool,
    /// Fill the energy counter in between its steps with integrated power, where the PDU gives
    /// power.
    #[serde(default = "default_true")]
    pub power_fill: bool,
    /// Longest wait for the agent's answer, ms. A sample that takes longer fails (a gap).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Meter ids are `PREFIX:outlet-N` and `PREFIX:device`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// For `profile = "generic"`: the meters and their OIDs.
    #[serde(default)]
    pub oids: Vec<GenericMeter>,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum SnmpVersion {
    #[default]
    #[serde(rename = "2c")]
    V2c,
    #[serde(rename = "3")]
    V3,
}

/// SNMP v3 user-based security.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnmpV3Config {
    /// The USM user name.
    pub user: String,
    /// `md5`, `sha1`, `sha224`, `sha256`, `sha384` or `sha512`.
    pub auth_protocol: String,
    /// The authentication pass phrase.
    pub auth_password: String,
    /// `des`, `aes128`, `aes192` or `aes256`; absent: authentication without privacy.
    #[serde(default)]
    pub privacy_protocol: Option<String>,
    /// The privacy (encryption) pass phrase, with `privacy_protocol`.
    #[serde(default)]
    pub privacy_password: String,
    /// The context name (snmpsim: the recording's name).
    #[serde(default)]
    pub context: String,
}

/// One meter of the `generic` profile: an energy OID, a power OID, or both.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericMeter {
    /// Meter id suffix, e.g. `outlet-7`.
    pub name: String,
    /// Whether it feeds this host (`OUTLET_ENERGY`) or is read for inspection (`PDU_ENERGY`).
    #[serde(default)]
    pub feeds_host: bool,
    /// Cumulative energy OID, numeric dotted form.
    #[serde(default)]
    pub energy_oid: Option<String>,
    /// mJ per unit of the energy OID (Wh: 3600000; 0.1 kWh: 360000000).
    #[serde(default)]
    pub energy_scale_mj: u64,
    /// Instantaneous power OID.
    #[serde(default)]
    pub power_oid: Option<String>,
    /// mW per unit of the power OID (W: 1000; 0.01 kW: 10000).
    #[serde(default)]
    pub power_scale_mw: u64,
}

/// PDU families whose OIDs are built in.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// APC PowerNet-MIB rPDU2 (tested against the AP8641 and AP7902B recordings).
    ApcRpdu2,
    /// Raritan PDU2-MIB (from the MIB; no recording tested).
    RaritanPdu2,
    /// ServerTech Sentry4-MIB (from the MIB; no recording tested).
    ServertechSentry4,
    /// Eaton EATON-EPDU-MIB (from the MIB; no recording tested).
    EatonEpdu,
    /// OIDs named in config.
    Generic,
}

fn default_community() -> String {
    "public".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_prefix() -> String {
    "pdu".to_owned()
}

/// mJ in 0.1 kWh and in 1 Wh; mW in 1 W and in 0.01 kW.
const MJ_PER_TENTH_KWH: u64 = Millijoules::PER_KWH / 10;
const MJ_PER_WH: u64 = Millijoules::PER_WH;
const MW_PER_W: u64 = 1_000;
const MW_PER_HUNDREDTH_KW: u64 = 10_000;

/// An OID template (`{unit}`, `{outlet}` filled in) and the base units per raw unit.
type Scaled = (&'static str, u64);

/// The OIDs of one family.
struct ProfileOids {
    first_unit: u32,
    device_energy: Option<Scaled>,
    device_power: Option<Scaled>,
    /// Older device power, tried when `device_power` is absent (APC rPDU, W).
    device_power_fallback: Option<Scaled>,
    outlet_energy: Option<Scaled>,
    outlet_power: Option<Scaled>,
}

impl Profile {
    fn oids(self) -> Option<ProfileOids> {
        Some(match self {
            Profile::ApcRpdu2 => ProfileOids {
                first_unit: 1,
                device_energy: Some(("1.3.6.1.4.1.318.1.1.26.4.3.1.9.{unit}", MJ_PER_TENTH_KWH)),
                device_power: Some(("1.3.6.1.4.1.318.1.1.26.4.3.1.5.{unit}", MW_PER_HUNDREDTH_KW)),
                device_power_fallback: Some(("1.3.6.1.4.1.318.1.1.12.1.16.0", MW_PER_W)),
                outlet_energy: Some((
                    "1.3.6.1.4.1.318.1.1.26.9.4.3.1.11.{outlet}",
                    MJ_PER_TENTH_KWH,
                )),
                outlet_power: Some(("1.3.6.1.4.1.318.1.1.26.9.4.3.1.7.{outlet}", MW_PER_W)),
            },
            // measurementsInletSensorValue / measurementsOutletSensorValue, indexed by
            // pdu.inlet-or-outlet.sensorType (activePower 5, W; activeEnergy 8, Wh).
            Profile::RaritanPdu2 => ProfileOids {
                first_unit: 1,
                device_energy: Some(("1.3.6.1.4.1.13742.6.5.2.3.1.4.{unit}.1.8", MJ_PER_WH)),
                device_power: Some(("1.3.6.1.4.1.13742.6.5.2.3.1.4.{unit}.1.5", MW_PER_W)),
                device_power_fallback: None,
                outlet_energy: Some(("1.3.6.1.4.1.13742.6.5.4.3.1.4.{unit}.{outlet}.8", MJ_PER_WH)),
                outlet_power: Some(("1.3.6.1.4.1.13742.6.5.4.3.1.4.{unit}.{outlet}.5", MW_PER_W)),
            },
            // st4InputCordEnergy (0.1 kWh) / st4InputCordActivePower (W) by unit.cord;
            // st4OutletEnergy (Wh) / st4OutletActivePower (W) by unit.cord.outlet.
            Profile::ServertechSentry4 => ProfileOids {
                first_unit: 1,
                device_energy: Some(("1.3.6.1.4.1.1718.4.1.3.3.1.10.{unit}.1", MJ_PER_TENTH_KWH)),
                device_power: Some(("1.3.6.1.4.1.1718.4.1.3.3.1.3.{unit}.1", MW_PER_W)),
                device_power_fallback: None,
                outlet_energy: Some(("1.3.6.1.4.1.1718.4.1.8.3.1.14.{unit}.1.{outlet}", MJ_PER_WH)),
                outlet_power: Some(("1.3.6.1.4.1.1718.4.1.8.3.1.7.{unit}.1.{outlet}", MW_PER_W)),
            },
            // inputWh / inputWatts (total, index 4) by strapping.input.total; outletWh /
            // outletWatts by strapping.outlet. Strapping indexes start at 0.
            Profile::EatonEpdu => ProfileOids {
                first_unit: 0,
                device_energy: Some(("1.3.6.1.4.1.534.6.6.7.3.5.1.5.{unit}.1.4", MJ_PER_WH)),
                device_power: Some(("1.3.6.1.4.1.534.6.6.7.3.5.1.4.{unit}.1.4", MW_PER_W)),
                device_power_fallback: None,
                outlet_energy: Some(("1.3.6.1.4.1.534.6.6.7.6.5.1.4.{unit}.{outlet}", MJ_PER_WH)),
                outlet_power: Some(("1.3.6.1.4.1.534.6.6.7.6.5.1.3.{unit}.{outlet}", MW_PER_W)),
            },
            Profile::Generic => return None,
        })
    }
}

/// Parses a numeric OID, `1.3.6.1…` (a leading dot allowed).
fn parse_oid(text: &str) -> Result<Vec<u64>, String> {
    let arcs: Result<Vec<u64>, _> = text
        .trim()
        .trim_start_matches('.')
        .split('.')
        .map(str::parse)
        .collect();
    match arcs {
        Ok(arcs) if arcs.len() >= 2 && arcs[0] <= 2 => Ok(arcs),
        _ => Err(format!(
            "{text:?} is not a numeric OID like 1.3.6.1.4.1.318…"
        )),
    }
}

/// One value to fetch: an OID and base units per raw unit.
#[derive(Clone, Debug)]
struct Fetch {
    oid: Vec<u64>,
    scale: u64,
}

/// One meter as configured: its OIDs and what it is.
#[derive(Clone, Debug)]
struct PlannedMeter {
    info: MeterInfo,
    energy: Option<Fetch>,
    power: Vec<Fetch>,
}

impl SnmpConfig {
    /// The meters this config reads, or the key at fault and why.
    fn plan(&self) -> Result<Vec<PlannedMeter>, (String, String)> {
        let meter = |name: &str, feeds_host: bool, energy: Option<Fetch>, power: Vec<Fetch>| {
            let kind = if feeds_host {
                MeterKind::OutletEnergy
            } else {
                MeterKind::PduEnergy
            };
            PlannedMeter {
                info: MeterInfo {
                    meter_id: format!("{}:{name}", self.prefix),
                    kind: kind as i32,
                    device: name.to_owned(),
                    method: format!("SNMP {:?} profile, {name} of {}", self.profile, self.agent),
                    // The energy register moves a whole step at a time (APC: 0.1 kWh). Where the
                    // agent answers without one, power is integrated and this only loosens the
                    // aggregator's rate check by a step.
                    resolution: energy.as_ref().map_or(0, |fetch| fetch.scale),
                    ..MeterInfo::default()
                },
                energy,
                power,
            }
        };
        let Some(oids) = self.profile.oids() else {
            if self.oids.is_empty() {
                return Err((
                    "oids".into(),
                    "the generic profile needs at least one meter".into(),
                ));
            }
            return self
                .oids
                .iter()
                .enumerate()
                .map(|(index, generic)| {
                    let at = |key: &str| format!("oids[{index}].{key}");
                    let fetch = |oid: &Option<String>, scale: u64, key: &str, scale_key: &str| {
                        oid.as_deref()
                            .map(|text| {
                                if scale == 0 {
                                    return Err((at(scale_key), "must be above 0".to_owned()));
                                }
                                parse_oid(text)
                                    .map(|oid| Fetch { oid, scale })
                                    .map_err(|m| (at(key), m))
                            })
                            .transpose()
                    };
                    let energy = fetch(
                        &generic.energy_oid,
                        generic.energy_scale_mj,
                        "energy_oid",
                        "energy_scale_mj",
                    )?;
                    let power = fetch(
                        &generic.power_oid,
                        generic.power_scale_mw,
                        "power_oid",
                        "power_scale_mw",
                    )?;
                    if energy.is_none() && power.is_none() {
                        return Err((
                            at("energy_oid"),
                            "a meter needs an energy_oid or a power_oid".into(),
                        ));
                    }
                    if generic.name.trim().is_empty() {
                        return Err((at("name"), "must not be empty".into()));
                    }
                    Ok(meter(
                        &generic.name,
                        generic.feeds_host,
                        energy,
                        power.into_iter().collect(),
                    ))
                })
                .collect();
        };
        let unit = self.unit.unwrap_or(oids.first_unit);
        let fetch = |template: Option<Scaled>, outlet: u32| -> Option<Fetch> {
            let (template, scale) = template?;
            let text = template
                .replace("{unit}", &unit.to_string())
                .replace("{outlet}", &outlet.to_string());
            parse_oid(&text).ok().map(|oid| Fetch { oid, scale })
        };
        let mut planned = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (outlets, feeds_host, key) in [
            (&self.host_outlets, true, "host_outlets"),
            (&self.other_outlets, false, "other_outlets"),
        ] {
            for &outlet in outlets {
                if outlet == 0 || !seen.insert(outlet) {
                    return Err((key.into(), format!("outlet {outlet} is 0 or listed twice")));
                }
                planned.push(meter(
                    &format!("outlet-{outlet}"),
                    feeds_host,
                    fetch(oids.outlet_energy, outlet),
                    fetch(oids.outlet_power, outlet).into_iter().collect(),
                ));
            }
        }
        if self.device {
            planned.push(meter(
                "device",
                false,
                fetch(oids.device_energy, 0),
                [
                    fetch(oids.device_power, 0),
                    fetch(oids.device_power_fallback, 0),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ));
        }
        if planned.is_empty() {
            return Err((
                "host_outlets".into(),
                "name at least one outlet (host_outlets, other_outlets) or set device = true"
                    .into(),
            ));
        }
        Ok(planned)
    }

    /// Checks the config; the agent is first asked at the first sample.
    ///
    /// # Errors
    /// A message naming what is wrong with the config.
    pub fn build(&self) -> Result<SnmpSource, String> {
        let plan = self
            .plan()
            .map_err(|(key, message)| format!("{key}: {message}"))?;
        let security = match (self.version, &self.v3) {
            (SnmpVersion::V3, Some(v3)) => Some(v3.security()?),
            (SnmpVersion::V3, None) => return Err("v3: required with version = \"3\"".into()),
            (SnmpVersion::V2c, _) => None,
        };
        let oids = plan
            .iter()
            .flat_map(|meter| meter.energy.iter().chain(&meter.power))
            .map(|fetch| Oid::from(&fetch.oid).map_err(|e| format!("OID {:?}: {e:?}", fetch.oid)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SnmpSource {
            agent: self.agent.clone(),
            oids,
            community: self.community.clone(),
            security,
            timeout: Duration::from_millis(self.timeout_ms),
            power_fill: self.power_fill,
            meters: plan
                .into_iter()
                .map(|planned| MeterState {
                    planned,
                    mode: None,
                })
                .collect(),
            session: None,
        })
    }
}

impl SourceSettings for SnmpConfig {
    fn meter_ids(&self) -> Vec<String> {
        self.plan()
            .map(|plan| plan.into_iter().map(|m| m.info.meter_id).collect())
            .unwrap_or_default()
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            !self.agent.trim().is_empty(),
            format!("{path}.agent"),
            "must be host:port",
        );
        super::check_prefix(problems, path, &self.prefix);
        super::check_timeout_ms(problems, path, self.timeout_ms);
        if self.version == SnmpVersion::V3 {
            match &self.v3 {
                None => problems.add(format!("{path}.v3"), "required with version = \"3\""),
                Some(v3) => {
                    if let Err(message) = v3.security() {
                        problems.add(format!("{path}.v3"), message);
                    }
                }
            }
        }
        if let Err((key, message)) = self.plan() {
            problems.add(format!("{path}.{key}"), message);
        }
    }

    fn build_source(&self, _context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build()?))
    }
}

impl SnmpV3Config {
    fn security(&self) -> Result<v3::Security, String> {
        let auth_protocol = match self.auth_protocol.to_ascii_lowercase().as_str() {
            "md5" => v3::AuthProtocol::Md5,
            "sha1" | "sha" => v3::AuthProtocol::Sha1,
            "sha224" => v3::AuthProtocol::Sha224,
            "sha256" => v3::AuthProtocol::Sha256,
            "sha384" => v3::AuthProtocol::Sha384,
            "sha512" => v3::AuthProtocol::Sha512,
            other => {
                return Err(format!(
                    "auth_protocol {other:?} is not md5, sha1, sha224, sha256, sha384 or sha512"
                ));
            }
        };
        let auth = match self
            .privacy_protocol
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => v3::Auth::AuthNoPriv,
            Some(privacy) => v3::Auth::AuthPriv {
                cipher: match privacy.as_str() {
                    "des" => v3::Cipher::Des,
                    "aes" | "aes128" => v3::Cipher::Aes128,
                    "aes192" => v3::Cipher::Aes192,
                    "aes256" => v3::Cipher::Aes256,
                    other => {
                        return Err(format!(
                            "privacy_protocol {other:?} is not des, aes128, aes192 or aes256"
                        ));
                    }
                },
                privacy_password: self.privacy_password.as_bytes().to_vec(),
            },
        };
        Ok(
            v3::Security::new(self.user.as_bytes(), self.auth_password.as_bytes())
                .with_auth_protocol(auth_protocol)
                .with_auth(auth)
                .with_context_name(&self.context),
        )
    }
}

/// How a meter's readings are made, fixed at its first good read.
#[derive(Debug)]
enum Mode {
    /// The energy register, filled with power between its steps where power is known.
    Counter(PowerFilledCounter),
    /// No energy register: power integrated.
    Power(SampledPowerCounter),
}

#[derive(Debug)]
struct MeterState {
    planned: PlannedMeter,
    mode: Option<Mode>,
}

/// The running `snmp` source.
pub struct SnmpSource {
    agent: String,
    community: String,
    security: Option<v3::Security>,
    timeout: Duration,
    power_fill: bool,
    meters: Vec<MeterState>,
    /// Every meter's OIDs, energy then power, in meter order: built once, asked at each sample.
    oids: Vec<Oid<'static>>,
    /// Opened at the first sample, dropped after any failure (a late answer must not be taken
    /// for the next request's).
    session: Option<AsyncSession>,
}

impl std::fmt::Debug for SnmpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnmpSource")
            .field("agent", &self.agent)
            .field("meters", &self.meters)
            .finish_non_exhaustive()
    }
}

/// OIDs per request: well under what PDUs' agents accept in one PDU.
const OIDS_PER_REQUEST: usize = 16;

/// A value the agent gave: a number, or absent (−1, no such object/instance, not numeric).
fn number(value: &Value<'_>) -> Option<u64> {
    match value {
        Value::Integer(n) => u64::try_from(*n).ok(),
        Value::Counter32(n) | Value::Unsigned32(n) => Some(u64::from(*n)),
        Value::Counter64(n) => Some(*n),
        _ => None,
    }
}

impl SnmpSource {
    async fn open(&self) -> Result<AsyncSession, String> {
        let opened = match &self.security {
            None => AsyncSession::new_v2c(&self.agent, self.community.as_bytes(), 0).await,
            Some(security) => AsyncSession::new_v3(&self.agent, 0, security.clone()).await,
        };
        let mut session = opened.map_err(|e| format!("{}: {e}", self.agent))?;
        if self.security.is_some() {
            session
                .init()
                .await
                .map_err(|e| format!("{}: SNMPv3 engine discovery: {e:?}", self.agent))?;
        }
        Ok(session)
    }

    /// Fetches every OID; `None` for each that is absent.
    /// Fetches every OID of `self.oids`; `None` for each that is absent.
    async fn fetch_all(&mut self) -> Result<Vec<Option<u64>>, String> {
        if self.session.is_none() {
            self.session = Some(self.open().await?);
        }
        let Some(session) = self.session.as_mut() else {
            return Err("no SNMP session".into());
        };
        let mut values = Vec::with_capacity(self.oids.len());
        for chunk in self.oids.chunks(OIDS_PER_REQUEST) {
            let refs: Vec<&Oid<'_>> = chunk.iter().collect();
            let response = session
                .get_many(&refs)
                .await
                .map_err(|e| format!("{}: {e:?}", self.agent))?;
            if response.error_status != 0 {
                return Err(format!(
                    "{}: the agent answered error status {} at index {}",
                    self.agent, response.error_status, response.error_index
                ));
            }
            let answered: Vec<(Oid<'_>, Option<u64>)> = response
                .varbinds
                .map(|(oid, value)| (oid, number(&value)))
                .collect();
            for requested in chunk {
                values.push(
                    answered
                        .iter()
                        .find(|(oid, _)| oid == requested)
                        .and_then(|(_, value)| *value),
                );
            }
        }
        Ok(values)
    }
}

#[async_trait]
impl Source for SnmpSource {
    fn name(&self) -> &str {
        "snmp"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        self.meters.iter().map(|m| m.planned.info.clone()).collect()
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let agent = self.agent.clone();
        let fetched = super::within(&agent, self.timeout, self.fetch_all())
            .await
            .inspect_err(|_| self.session = None)?;
        let mut values = fetched.into_iter();
        let mut sample = Sample::default();
        let mut absent = Vec::new();
        for meter in &mut self.meters {
            let energy = meter
                .planned
                .energy
                .as_ref()
                .map(|fetch| (values.next().flatten(), fetch.scale));
            // The first power OID that answers (the newer table, then an older fallback).
            let mut power = None;
            for fetch in &meter.planned.power {
                let value = values.next().flatten();
                if power.is_none() {
                    power = value.map(|v| v.saturating_mul(fetch.scale));
                }
            }
            let energy_mj =
                energy.and_then(|(value, scale)| value.map(|v| v.saturating_mul(scale)));
            if meter.mode.is_none() {
                meter.mode = match (energy, energy_mj, power) {
                    (Some((_, scale)), Some(_), _) => {
                        Some(Mode::Counter(PowerFilledCounter::new(scale)))
                    }
                    (_, None, Some(_)) => Some(Mode::Power(SampledPowerCounter::new())),
                    _ => None,
                };
            }
            let id = &meter.planned.info.meter_id;
            let reading = match (&mut meter.mode, energy_mj, power) {
                (Some(Mode::Counter(counter)), Some(mj), power) => {
                    let power = if self.power_fill { power } else { None };
                    let (value, exact) = counter.record(at.0, mj, power);
                    Some(if exact {
                        reading(id, value, at, Quality::Measured, "SNMP energy register")
                    } else {
                        reading(
                            id,
                            value,
                            at,
                            Quality::Interpolated,
                            "SNMP energy register, filled within its step by integrated SNMP power",
                        )
                    })
                }
                (Some(Mode::Power(counter)), _, Some(mw)) => Some(reading(
                    id,
                    counter.record(at.0, mw),
                    at,
                    Quality::Interpolated,
                    "SNMP power integrated between samples (trapezoid rule; no energy register)",
                )),
                _ => None,
            };
            match reading {
                Some(reading) => sample.readings.push(reading),
                None => absent.push(id.clone()),
            }
        }
        if sample.readings.is_empty() {
            return Err(format!(
                "{}: no meter answered with energy or power (absent, or -1): {}",
                self.agent,
                absent.join(", ")
            ));
        }
        if !absent.is_empty() {
            warn!(agent = %self.agent, meters = ?absent, "PDU meters absent this time (no value, or -1).");
        }
        Ok(sample)
    }
}

fn reading(meter_id: &str, value: u64, at: UnixNanos, quality: Quality, method: &str) -> Reading {
    Reading {
        meter_id: meter_id.to_owned().into(),
        value,
        timestamp_ns: at.0,
        quality: quality as i32,
        method: method.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_parse_or_say_why() {
        assert_eq!(parse_oid(".1.3.6.1.4").unwrap(), vec![1, 3, 6, 1, 4]);
        for bad in ["", "1", "1.3.x", "9.1", "1..3"] {
            assert!(parse_oid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_profile_plans_host_and_inspection_meters() {
        let config: SnmpConfig = toml::from_str(
            "agent = '127.0.0.1:1161'\nprofile = 'apc_rpdu2'\nhost_outlets = [1]\nother_outlets = [2]\ndevice = true",
        )
        .unwrap();
        let plan = config.plan().unwrap();
        let kinds: Vec<(&str, i32, usize)> = plan
            .iter()
            .map(|m| (m.info.meter_id.as_str(), m.info.kind, m.power.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("pdu:outlet-1", MeterKind::OutletEnergy as i32, 1),
                ("pdu:outlet-2", MeterKind::PduEnergy as i32, 1),
                ("pdu:device", MeterKind::PduEnergy as i32, 2)
            ]
        );
        assert_eq!(
            plan[0].energy.as_ref().unwrap().oid,
            parse_oid("1.3.6.1.4.1.318.1.1.26.9.4.3.1.11.1").unwrap()
        );
    }

    #[test]
    fn bad_configs_name_the_key() {
        let problems = |text: &str| {
            let config: SnmpConfig = toml::from_str(text).unwrap();
            let mut problems = Problems::default();
            config.validate("sources[0]", &mut problems);
            problems.finish().unwrap_err().to_string()
        };
        assert!(
            problems("agent = 'a:1'\nprofile = 'apc_rpdu2'").contains("sources[0].host_outlets")
        );
        assert!(
            problems("agent = 'a:1'\nprofile = 'apc_rpdu2'\nhost_outlets = [1, 1]")
                .contains("listed twice")
        );
        assert!(problems("agent = 'a:1'\nprofile = 'generic'\n[[oids]]\nname = 'x'\nenergy_oid = '1.3.x'\nenergy_scale_mj = 1")
            .contains("sources[0].oids[0].energy_oid"));
        assert!(
            problems("agent = 'a:1'\nprofile = 'apc_rpdu2'\ndevice = true\nversion = '3'")
                .contains("sources[0].v3")
        );
    }
}
