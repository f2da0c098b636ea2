//! `type = "modbus"`: site meters over Modbus TCP — the facility's energy meter, its water meter
//! — with the register map in config, since every meter lays its registers out its own way
//! (function code, address, width, signedness, word order, scale, unit).
//!
//! Each register is a cumulative total. Integer registers are unwrapped (a u16 pulse counter
//! wraps every 65 536 counts) into a running raw total, and the reported value is
//! `floor(total × scale × unit)` in base units (mJ, mL), so a reading never drifts from the
//! meter by more than one base unit however long it runs. A fall from the register's upper half
//! into its lower quarter is a wrap; any other fall is a reset (meter replaced or cleared),
//! passed on as a fall for the aggregator's reset rule. Float registers are converted as read.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use footprint_core::config::Problems;
use footprint_core::{Millijoules, UnixNanos};
use footprint_proto::v1::{MeterInfo, MeterKind};
use serde::{Deserialize, Serialize};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::Slave;

use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};

/// Meters behind one Modbus TCP server (or gateway).
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// The server, `host:port` (usually port 502).
    pub address: String,
    /// The unit (slave) id; 1 for most meters, the RS-485 address behind a gateway.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Longest wait for one read, ms. A slower meter leaves a gap, never a stall.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Meter ids are `PREFIX:NAME`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// One table per meter.
    pub registers: Vec<RegisterMap>,
}

/// Where one meter's total lives and how to read it.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMap {
    /// The meter's name: its id is `PREFIX:NAME`.
    pub name: String,
    /// `site_energy` (the facility's utility meter) or `site_water`.
    pub kind: SiteMeterKind,
    /// `holding` (function code 3) or `input` (function code 4).
    #[serde(default)]
    pub function: RegisterFunction,
    /// The first register's address, 0-based as on the wire (register 40001 is address 0).
    pub address: u16,
    /// `u16`, `u32`, `u64`, `i16`, `i32`, `i64`, `f32` or `f64`.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// `big`: the most significant 16-bit word first (Modbus convention); `little`: last.
    #[serde(default)]
    pub word_order: WordOrder,
    /// The register's unit: energy `Wh`, `kWh`, `MWh`, `J`, `kJ`, `MJ`; water `mL`, `L`, `m3`.
    pub unit: String,
    /// Decimal multiplier of the raw value before the unit, e.g. `"0.1"` for a register in tenths;
    /// exact (a decimal string, not a float).
    #[serde(default = "default_scale")]
    pub scale: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteMeterKind {
    SiteEnergy,
    SiteWater,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RegisterFunction {
    #[default]
    Holding,
    Input,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    U16,
    U32,
    U64,
    I16,
    I32,
    I64,
    F32,
    F64,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    #[default]
    Big,
    Little,
}

fn default_unit_id() -> u8 {
    1
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_prefix() -> String {
    "site".to_owned()
}
fn default_scale() -> String {
    "1".to_owned()
}

impl ValueType {
    fn registers(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }

    /// The raw counter's modulus for integer types that wrap; `None` for signed and float.
    fn modulus(self) -> Option<u128> {
        match self {
            ValueType::U16 => Some(1 << 16),
            ValueType::U32 => Some(1 << 32),
            ValueType::U64 => Some(1 << 64),
            _ => None,
        }
    }
}

/// A register's value: an unsigned count, or a non-negative real.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RawValue {
    Count(u64),
    Real(f64),
}

/// Decodes registers as read off the wire into a value; the reason when it is not a meter total
/// (negative, not finite, wrong length).
pub fn decode(words: &[u16], value_type: ValueType, order: WordOrder) -> Result<RawValue, String> {
    let expected = usize::from(value_type.registers());
    if words.len() != expected {
        return Err(format!(
            "{} registers answered, {expected} expected",
            words.len()
        ));
    }
    let mut bits: u64 = 0;
    let mut ordered = words.to_vec();
    if order == WordOrder::Little {
        ordered.reverse();
    }
    for word in &ordered {
        bits = (bits << 16) | u64::from(*word);
    }
    let negative = || Err("a negative total".to_owned());
    match value_type {
        ValueType::U16 | ValueType::U32 | ValueType::U64 => Ok(RawValue::Count(bits)),
        ValueType::I16 => u64::try_from(bits as u16 as i16)
            .map(RawValue::Count)
            .or_else(|_| negative()),
        ValueType::I32 => u64::try_from(bits as u32 as i32)
            .map(RawValue::Count)
            .or_else(|_| negative()),
        ValueType::I64 => u64::try_from(bits as i64)
            .map(RawValue::Count)
            .or_else(|_| negative()),
        ValueType::F32 | ValueType::F64 => {
            let value = if value_type == ValueType::F32 {
                f64::from(f32::from_bits(bits as u32))
            } else {
                f64::from_bits(bits)
            };
            if !value.is_finite() {
                Err(format!("{value} is not a number"))
            } else if value < 0.0 {
                negative()
            } else {
                Ok(RawValue::Real(value))
            }
        }
    }
}

/// Base units per register unit: mJ for energy, mL for water.
fn base_per_unit(kind: SiteMeterKind, unit: &str) -> Option<u64> {
    Some(match (kind, unit) {
        (SiteMeterKind::SiteEnergy, "J") => 1_000,
        (SiteMeterKind::SiteEnergy, "kJ") => 1_000_000,
        (SiteMeterKind::SiteEnergy, "MJ") => 1_000_000_000,
        (SiteMeterKind::SiteEnergy, "Wh") => Millijoules::PER_WH,
        (SiteMeterKind::SiteEnergy, "kWh") => Millijoules::PER_KWH,
        (SiteMeterKind::SiteEnergy, "MWh") => 1_000 * Millijoules::PER_KWH,
        (SiteMeterKind::SiteWater, "mL") => 1,
        (SiteMeterKind::SiteWater, "L") => 1_000,
        (SiteMeterKind::SiteWater, "m3") => 1_000_000,
        _ => return None,
    })
}

/// An exact positive decimal, `digits / 10^exponent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    pub digits: u128,
    pub exponent: u32,
}

fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || fraction.len() > 12
    {
        return None;
    }
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    (digits > 0).then_some(Decimal {
        digits,
        exponent: fraction.len() as u32,
    })
}

/// Turns a register's raw totals into the reported counter.
#[derive(Clone, Debug)]
pub struct RegisterCounter {
    /// Base units per raw count, as `numerator / denominator`.
    numerator: u128,
    denominator: u128,
    modulus: Option<u128>,
    last_raw: Option<u64>,
    /// Raw counts since the first reading, unwrapped, plus the first reading itself.
    total_raw: u128,
}

impl RegisterCounter {
    pub fn new(base_per_unit: u64, scale: Decimal, modulus: Option<u128>) -> Self {
        Self {
            numerator: u128::from(base_per_unit) * scale.digits,
            denominator: 10u128.pow(scale.exponent),
            modulus,
            last_raw: None,
            total_raw: 0,
        }
    }

    /// Takes a raw integer total; returns the value to report.
    pub fn advance(&mut self, raw: u64) -> u64 {
        match (self.last_raw, self.modulus) {
            (None, _) => self.total_raw = u128::from(raw),
            (Some(last), _) if raw >= last => self.total_raw += u128::from(raw - last),
            // Fell from the upper half into the lower quarter: the register wrapped.
            (Some(last), Some(modulus))
                if u128::from(last) >= modulus / 2 && u128::from(raw) < modulus / 4 =>
            {
                self.total_raw += u128::from(raw) + modulus - u128::from(last);
            }
            // Any other fall: the meter was reset; follow it down.
            (Some(_), _) => self.total_raw = u128::from(raw),
        }
        self.last_raw = Some(raw);
        self.value()
    }

    fn value(&self) -> u64 {
        u64::try_from(self.total_raw * self.numerator / self.denominator).unwrap_or(u64::MAX)
    }

    /// The most one count of the register moves the reported value, in base units.
    pub fn resolution(&self) -> u64 {
        u64::try_from(self.numerator.div_ceil(self.denominator)).unwrap_or(u64::MAX)
    }

    /// A real-valued total converted as read (float registers).
    pub fn real(&self, raw: f64) -> u64 {
        // The float's own precision is the meter's; the conversion adds no more error than one
        // base unit.
        let base = raw * self.numerator as f64 / self.denominator as f64;
        if base >= u64::MAX as f64 {
            u64::MAX
        } else {
            base as u64
        }
    }
}

#[derive(Debug)]
struct Register {
    map: RegisterMap,
    info: MeterInfo,
    counter: RegisterCounter,
}

impl ModbusConfig {
    /// Checks the register map; the meter is first asked at the first sample.
    ///
    /// # Errors
    /// A message naming the register and key at fault.
    pub fn build(&self) -> Result<ModbusSource, String> {
        let registers = self
            .registers
            .iter()
            .enumerate()
            .map(|(index, map)| {
                let (per_unit, scale) = map
                    .check()
                    .map_err(|(key, message)| format!("registers[{index}].{key}: {message}"))?;
                let counter = RegisterCounter::new(per_unit, scale, map.value_type.modulus());
                Ok(Register {
                    info: MeterInfo {
                        meter_id: format!("{}:{}", self.prefix, map.name),
                        kind: match map.kind {
                            SiteMeterKind::SiteEnergy => MeterKind::SiteEnergy,
                            SiteMeterKind::SiteWater => MeterKind::SiteWater,
                        } as i32,
                        device: map.name.clone(),
                        method: format!(
                            "Modbus TCP {} unit {}: {:?} register {} ({:?}, {:?} word order) × {} {}",
                            self.address,
                            self.unit_id,
                            map.function,
                            map.address,
                            map.value_type,
                            map.word_order,
                            map.scale,
                            map.unit
                        ),
                        // A float total moves smoothly; an integer one a count at a time.
                        resolution: match map.value_type {
                            ValueType::F32 | ValueType::F64 => 0,
                            _ => counter.resolution(),
                        },
                        ..MeterInfo::default()
                    },
                    counter,
                    map: map.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ModbusSource {
            address: self.address.clone(),
            unit_id: self.unit_id,
            timeout: Duration::from_millis(self.timeout_ms),
            registers,
            context: None,
        })
    }
}

impl SourceSettings for ModbusConfig {
    fn meter_ids(&self) -> Vec<String> {
        self.registers
            .iter()
            .map(|r| format!("{}:{}", self.prefix, r.name))
            .collect()
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            !self.address.trim().is_empty(),
            format!("{path}.address"),
            "must be host:port",
        );
        super::check_prefix(problems, path, &self.prefix);
        super::check_timeout_ms(problems, path, self.timeout_ms);
        problems.check(
            !self.registers.is_empty(),
            format!("{path}.registers"),
            "name at least one meter",
        );
        for (index, register) in self.registers.iter().enumerate() {
            if let Err((key, message)) = register.check() {
                problems.add(format!("{path}.registers[{index}].{key}"), message);
            }
        }
    }

    fn build_source(&self, _context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build()?))
    }
}

impl RegisterMap {
    /// Base units per register unit and the scale, or the key at fault and why.
    fn check(&self) -> Result<(u64, Decimal), (&'static str, String)> {
        if self.name.trim().is_empty() || self.name.contains(':') {
            return Err(("name", "must be non-empty and without ':'".into()));
        }
        let per_unit = base_per_unit(self.kind, &self.unit).ok_or_else(|| {
            (
                "unit",
                format!(
                    "{:?} is not a unit of {}",
                    self.unit,
                    match self.kind {
                        SiteMeterKind::SiteEnergy => "energy (J, kJ, MJ, Wh, kWh, MWh)",
                        SiteMeterKind::SiteWater => "water (mL, L, m3)",
                    }
                ),
            )
        })?;
        let scale = parse_decimal(&self.scale).ok_or_else(|| {
            (
                "scale",
                format!("{:?} is not a positive decimal like \"0.1\"", self.scale),
            )
        })?;
        if u32::from(self.address) + u32::from(self.value_type.registers()) > 65_536 {
            return Err(("address", "the value runs past register 65535".into()));
        }
        Ok((per_unit, scale))
    }
}

/// The running `modbus` source.
pub struct ModbusSource {
    address: String,
    unit_id: u8,
    timeout: Duration,
    registers: Vec<Register>,
    /// Connected at the first sample; dropped after any failure so the next sample reconnects.
    context: Option<Context>,
}

impl std::fmt::Debug for ModbusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSource")
            .field("address", &self.address)
            .field("registers", &self.registers)
            .finish_non_exhaustive()
    }
}

async fn connect(address: &str, unit_id: u8) -> Result<Context, String> {
    let socket: SocketAddr = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    tokio_modbus::client::tcp::connect_slave(socket, Slave(unit_id))
        .await
        .map_err(|e| format!("{address}: {e}"))
}

impl ModbusSource {
    /// Reads every register: per meter, its words or why not.
    async fn read_all(&mut self) -> Result<Vec<Result<Vec<u16>, String>>, String> {
        if self.context.is_none() {
            self.context = Some(connect(&self.address, self.unit_id).await?);
        }
        let Some(context) = self.context.as_mut() else {
            return Err("no Modbus connection".into());
        };
        let mut out = Vec::with_capacity(self.registers.len());
        for register in &self.registers {
            let map = &register.map;
            let count = map.value_type.registers();
            let answer = match map.function {
                RegisterFunction::Holding => {
                    context.read_holding_registers(map.address, count).await
                }
                RegisterFunction::Input => context.read_input_registers(map.address, count).await,
            };
            out.push(match answer {
                Ok(Ok(words)) => Ok(words),
                Ok(Err(exception)) => Err(format!(
                    "{}: the meter answered {exception:?} for register {}",
                    register.info.meter_id, map.address
                )),
                // The transport failed: the connection is no longer usable.
                Err(error) => return Err(format!("{}: {error}", self.address)),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl Source for ModbusSource {
    fn name(&self) -> &str {
        "modbus"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        self.registers.iter().map(|r| r.info.clone()).collect()
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let address = self.address.clone();
        let answers = super::within(&address, self.timeout, self.read_all())
            .await
            .inspect_err(|_| self.context = None)?;
        let mut sample = Sample::default();
        let mut failures = Vec::new();
        for (register, answer) in self.registers.iter_mut().zip(answers) {
            let decoded = answer.and_then(|words| {
                decode(&words, register.map.value_type, register.map.word_order)
                    .map_err(|reason| format!("{}: {reason}", register.info.meter_id))
            });
            match decoded {
                Ok(RawValue::Count(raw)) => sample.readings.push(measured_reading(
                    &register.info.meter_id,
                    register.counter.advance(raw),
                    at,
                )),
                Ok(RawValue::Real(raw)) => sample.readings.push(measured_reading(
                    &register.info.meter_id,
                    register.counter.real(raw),
                    at,
                )),
                Err(failure) => failures.push(failure),
            }
        }
        if sample.readings.is_empty() {
            return Err(failures.join("; "));
        }
        for failure in failures {
            tracing::warn!(error = %failure, "Modbus register not read this time.");
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_decode_in_either_order() {
        assert_eq!(
            decode(&[0x0001, 0xE240], ValueType::U32, WordOrder::Big),
            Ok(RawValue::Count(123_456))
        );
        assert_eq!(
            decode(&[0xE240, 0x0001], ValueType::U32, WordOrder::Little),
            Ok(RawValue::Count(123_456))
        );
        assert_eq!(
            decode(&[0x4248, 0x0000], ValueType::F32, WordOrder::Big),
            Ok(RawValue::Real(50.0))
        );
        assert!(
            decode(&[0xFFFF], ValueType::I16, WordOrder::Big).is_err(),
            "-1 is no total"
        );
        assert!(decode(&[1], ValueType::U32, WordOrder::Big).is_err());
    }

    #[test]
    fn decimal_scales_are_exact() {
        let decimal = |digits, exponent| Some(Decimal { digits, exponent });
        assert_eq!(parse_decimal("0.1"), decimal(1, 1));
        assert_eq!(parse_decimal("2.50"), decimal(250, 2));
        for bad in ["", ".", "-1", "1e3", "0", "0.0", "x"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
        // 0.1 L per count: 10 counts are 1 000 mL, 3 counts 300 mL.
        let mut counter = RegisterCounter::new(
            1_000,
            Decimal {
                digits: 1,
                exponent: 1,
            },
            Some(1 << 16),
        );
        assert_eq!(counter.advance(10), 1_000);
        assert_eq!(counter.advance(13), 1_300);
    }

    proptest! {
        /// Any register contents decode or give a reason; nothing panics.
        #[test]
        fn arbitrary_words_never_panic(words in proptest::collection::vec(any::<u16>(), 0..6)) {
            for value_type in [ValueType::U16, ValueType::U32, ValueType::U64, ValueType::I16,
                               ValueType::I32, ValueType::I64, ValueType::F32, ValueType::F64] {
                for order in [WordOrder::Big, WordOrder::Little] {
                    let _ = decode(&words, value_type, order);
                }
            }
        }

        /// A u16 register counted through any number of wraps (each step under a quarter of
        /// its range, as between two samples) reports exactly floor(total × scale), and never
        /// goes down.
        #[test]
        fn wraps_lose_and_invent_nothing(
            start in 0u64..65_536,
            steps in proptest::collection::vec(0u64..16_384, 1..200),
        ) {
            // 0.5 Wh per count.
            let mut counter = RegisterCounter::new(3_600_000, Decimal { digits: 5, exponent: 1 }, Some(1 << 16));
            let mut total = u128::from(start);
            let mut last = counter.advance(start);
            for step in steps {
                total += u128::from(step);
                let value = counter.advance((total % 65_536) as u64);
                prop_assert_eq!(u128::from(value), total * 1_800_000);
                prop_assert!(value >= last);
                last = value;
            }
        }

        /// A fall that is not a wrap is a reset: the reported value follows the meter down.
        #[test]
        fn a_reset_is_passed_on(before in 1_000u64..30_000, after in 0u64..1_000) {
            let mut counter = RegisterCounter::new(1_000, Decimal { digits: 1, exponent: 0 }, Some(1 << 16));
            counter.advance(before);
            prop_assert_eq!(counter.advance(after), after * 1_000);
        }
    }
}
