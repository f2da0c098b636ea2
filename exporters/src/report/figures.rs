//! One reported figure — a value with its unit, how it was obtained and, when it is empty, why —
//! and the unit conversions every figure goes through (integers in, [`Decimal`]s out).

use serde::Serialize;
use serde_json::Value;

use super::canonical::Decimal;

/// mJ in a kWh.
pub const MJ_PER_KWH: i128 = 3_600_000_000;

/// How a figure was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From meters the ledger holds.
    Metered,
    /// From meters, in part estimated (the method says which part).
    Estimated,
    /// From contracts and certificates the config names.
    Contractual,
    /// Entered in `[disclosure]`, not measured by Footprint.
    Configured,
    /// Computed from other fields of the report.
    Computed,
    /// Not available: `reason` says why.
    Missing,
}

/// A reported field: always all keys, `value` null exactly when `reason` says why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Field {
    pub value: Value,
    pub unit: &'static str,
    pub source: Source,
    pub method: String,
    /// The figure exactly, in the ledger's integer unit, where it comes from the ledger.
    pub exact: Option<Exact>,
    pub reason: Option<String>,
}

/// An exact integer figure and its unit (`mJ`, `mL`, `mg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Exact {
    pub value: i64,
    pub unit: &'static str,
}

impl Field {
    pub fn filled(
        value: impl Serialize,
        unit: &'static str,
        source: Source,
        method: String,
    ) -> Self {
        Self {
            value: serde_json::to_value(value).unwrap_or(Value::Null),
            unit,
            source,
            method,
            exact: None,
            reason: None,
        }
    }

    pub fn missing(unit: &'static str, reason: String) -> Self {
        Self {
            value: Value::Null,
            unit,
            source: Source::Missing,
            method: String::new(),
            exact: None,
            reason: Some(reason),
        }
    }

    /// A decimal that may not exist (a ratio over zero): missing with `reason` then.
    pub fn ratio(
        value: Option<Decimal>,
        unit: &'static str,
        method: String,
        reason: impl FnOnce() -> String,
    ) -> Self {
        match value {
            Some(value) => Self::filled(value, unit, Source::Computed, method),
            None => Self::missing(unit, reason()),
        }
    }

    pub fn with_exact(mut self, value: i64, unit: &'static str) -> Self {
        self.exact = Some(Exact { value, unit });
        self
    }

    pub fn is_filled(&self) -> bool {
        !self.value.is_null()
    }
}

/// kWh to the Wh.
pub fn kwh(mj: i64) -> Decimal {
    Decimal::ratio(i128::from(mj), MJ_PER_KWH, 3).unwrap_or(Decimal::whole(0))
}

/// Litres to the mL.
pub fn litres(ml: i64) -> Decimal {
    Decimal::ratio(i128::from(ml), 1_000, 3).unwrap_or(Decimal::whole(0))
}

/// m³ to the L.
pub fn cubic_metres(ml: i64) -> Decimal {
    Decimal::ratio(i128::from(ml), 1_000_000, 3).unwrap_or(Decimal::whole(0))
}

/// kg to the g.
pub fn kilograms(mg: i64) -> Decimal {
    Decimal::ratio(i128::from(mg), 1_000_000, 3).unwrap_or(Decimal::whole(0))
}

/// A share (0–1) to four places; `None` over a zero total.
pub fn share(part: i64, total: i64) -> Option<Decimal> {
    Decimal::ratio(i128::from(part), i128::from(total), 4)
}

/// A configured kWh figure in mJ, to the Wh (kWh to three places: its units are Wh).
pub fn configured_mj(kwh: f64) -> Option<i64> {
    let kwh = Decimal::from_f64(kwh, 3)?;
    i64::try_from(kwh.units().checked_mul(3_600_000)?).ok()
}

/// A field's value as text (a decimal, a list, a contact), for the HTML and CSV.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        Value::Object(map) => match map.get("$decimal") {
            Some(Value::String(decimal)) => decimal.clone(),
            _ => map
                .iter()
                .map(|(key, value)| format!("{key}: {}", value_text(value)))
                .collect::<Vec<_>>()
                .join(", "),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_kwh_become_exact_millijoules_to_the_wh() {
        assert_eq!(configured_mj(0.1), Some(360_000_000));
        assert_eq!(configured_mj(1234.5678), Some(1_234_568 * 3_600_000));
        assert_eq!(configured_mj(f64::INFINITY), None);
    }
}
