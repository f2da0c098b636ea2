//! The report's canonical JSON, and the fixed-point decimals in it.
//!
//! Canonical form, so that the same figures always give the same bytes and an auditor can check
//! them with any JSON reader:
//! - UTF-8, no whitespace, object keys sorted by their UTF-8 bytes;
//! - integers as plain decimal digits, exactly (energies in mJ can pass 2^53: read them with a
//!   parser that keeps big integers, as Python's `json` does);
//! - every other number is a [`Decimal`] computed from integers, written with exactly its number
//!   of places (`1.2300`), never through a binary float, so no platform can round it differently;
//! - strings escaped as `serde_json` escapes them (quote, backslash and control characters only).
//!
//! A float reaching the writer is refused: it would make the bytes depend on arithmetic order.

use serde::{Serialize, Serializer};
use serde_json::Value;

/// The key a [`Decimal`] is carried under on its way through `serde_json::Value`; the writer
/// prints the number it holds as a bare number.
const DECIMAL_KEY: &str = "$decimal";

/// A fixed-point number: `units × 10^-places`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal {
    units: i128,
    places: u8,
}

impl Decimal {
    /// `numerator / denominator` rounded half to even to `places` decimal places; `None` when the
    /// denominator is 0.
    pub fn ratio(numerator: i128, denominator: i128, places: u8) -> Option<Self> {
        if denominator == 0 {
            return None;
        }
        let scale = 10i128.checked_pow(u32::from(places))?;
        let (numerator, denominator) = if denominator < 0 {
            (-numerator, -denominator)
        } else {
            (numerator, denominator)
        };
        let scaled = numerator.checked_mul(scale)?;
        let quotient = scaled.div_euclid(denominator);
        let remainder = scaled.rem_euclid(denominator);
        let twice = remainder * 2;
        let units = if twice > denominator || (twice == denominator && quotient % 2 != 0) {
            quotient + 1
        } else {
            quotient
        };
        Some(Self { units, places })
    }

    /// A whole number.
    pub fn whole(value: i128) -> Self {
        Self {
            units: value,
            places: 0,
        }
    }

    /// A configured figure, rounded half to even to `places` places (`None` for NaN or ±∞).
    /// Goes through the shortest text that reads back as `value`, so it is the same on every
    /// platform.
    pub fn from_f64(value: f64, places: u8) -> Option<Self> {
        if !value.is_finite() {
            return None;
        }
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e')?;
        let exponent: i32 = exponent.parse().ok()?;
        let negative = mantissa.starts_with('-');
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        let fraction_digits = mantissa
            .split_once('.')
            .map_or(0, |(_, fraction)| fraction.len()) as i32;
        let mut numerator: i128 = digits.parse().ok()?;
        if negative {
            numerator = -numerator;
        }
        // value = numerator × 10^(exponent − fraction_digits)
        let power = exponent - fraction_digits;
        if power >= 0 {
            let scale = 10i128.checked_pow(power as u32)?;
            Self::ratio(numerator.checked_mul(scale)?, 1, places)
        } else {
            Self::ratio(numerator, 10i128.checked_pow((-power) as u32)?, places)
        }
    }

    pub fn places(&self) -> u8 {
        self.places
    }

    /// The value in units of its last place (`1.234` → 1234).
    pub fn units(&self) -> i128 {
        self.units
    }

    /// The value as a float, for drawing charts only.
    pub fn to_f64(&self) -> f64 {
        self.units as f64 / 10f64.powi(i32::from(self.places))
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let magnitude = self.units.unsigned_abs();
        if self.places == 0 {
            return write!(f, "{sign}{magnitude}");
        }
        let scale = 10u128.pow(u32::from(self.places));
        write!(
            f,
            "{sign}{}.{:0width$}",
            magnitude / scale,
            magnitude % scale,
            width = usize::from(self.places)
        )
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(DECIMAL_KEY, &self.to_string())?;
        map.end()
    }
}

/// Why a value has no canonical form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("{0}: a binary float has no canonical form; compute it as a Decimal")]
    Float(String),
}

/// `value` in canonical form.
///
/// # Errors
/// A float anywhere in `value`, named by its path.
pub fn to_canonical(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write(value, &mut out, &mut String::from("$"))?;
    Ok(out)
}

/// Serializes `value` and writes it in canonical form.
///
/// # Errors
/// `value` does not serialize, or holds a float.
pub fn canonical_of<T: Serialize>(value: &T) -> Result<String, crate::Error> {
    let tree = serde_json::to_value(value)?;
    to_canonical(&tree).map_err(|error| crate::Error::Report(error.to_string()))
}

fn write(value: &Value, out: &mut String, path: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            if number.is_f64() {
                return Err(CanonicalError::Float(path.clone()));
            }
            out.push_str(&number.to_string());
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                let length = path.len();
                path.push_str(&format!("[{index}]"));
                write(item, out, path)?;
                path.truncate(length);
            }
            out.push(']');
        }
        Value::Object(map) => {
            if map.len() == 1
                && let Some(Value::String(decimal)) = map.get(DECIMAL_KEY)
            {
                out.push_str(decimal);
                return Ok(());
            }
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                let length = path.len();
                path.push('.');
                path.push_str(key);
                write(&map[key], out, path)?;
                path.truncate(length);
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(text: &str, out: &mut String) {
    // Serializing a str cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ratios_round_half_to_even() {
        assert_eq!(Decimal::ratio(1, 8, 2).unwrap().to_string(), "0.12");
        assert_eq!(Decimal::ratio(3, 8, 2).unwrap().to_string(), "0.38");
        assert_eq!(Decimal::ratio(-3, 8, 2).unwrap().to_string(), "-0.38");
        assert_eq!(Decimal::ratio(5, 1, 3).unwrap().to_string(), "5.000");
        assert_eq!(Decimal::ratio(7, -2, 0).unwrap().to_string(), "-4");
        assert_eq!(Decimal::ratio(1, 0, 2), None);
    }

    #[test]
    fn configured_floats_become_the_decimal_they_were_written_as() {
        assert_eq!(Decimal::from_f64(0.1, 3).unwrap().to_string(), "0.100");
        assert_eq!(
            Decimal::from_f64(1234.5678, 2).unwrap().to_string(),
            "1234.57"
        );
        assert_eq!(Decimal::from_f64(-2.5, 0).unwrap().to_string(), "-2");
        assert_eq!(
            Decimal::from_f64(3e20, 1).unwrap().to_string(),
            "300000000000000000000.0"
        );
        assert_eq!(Decimal::from_f64(f64::NAN, 1), None);
        assert_eq!(Decimal::from_f64(12.345, 3).unwrap().units(), 12_345);
    }

    #[test]
    fn canonical_json_sorts_keys_and_prints_decimals_bare() {
        let value = serde_json::json!({
            "b": [1, "x\n"],
            "a": Decimal::ratio(2, 3, 4).unwrap(),
            "big": 18_446_744_073_709_551_615u64,
        });
        assert_eq!(
            to_canonical(&value).unwrap(),
            r#"{"a":0.6667,"b":[1,"x\n"],"big":18446744073709551615}"#
        );
    }

    #[test]
    fn floats_are_refused_by_path() {
        let value = serde_json::json!({"a": {"b": [0.5]}});
        assert_eq!(
            to_canonical(&value),
            Err(CanonicalError::Float("$.a.b[0]".into()))
        );
    }

    proptest! {
        /// The decimal text reads back (as an exact rational) within half a unit of the last
        /// place of the true ratio.
        #[test]
        fn ratio_is_within_half_a_unit(n in -1_000_000_000i128..1_000_000_000, d in 1i128..1_000_000, places in 0u8..6) {
            let decimal = Decimal::ratio(n, d, places).unwrap();
            let scale = 10i128.pow(u32::from(places));
            // |units/scale − n/d| ≤ 1/(2·scale)  ⇔  |2·units·d − 2·n·scale| ≤ d
            prop_assert!((2 * decimal.units * d - 2 * n * scale).abs() <= d);
        }
    }
}
