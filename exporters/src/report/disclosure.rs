//! `[disclosure]`: what the report cannot measure — the facility's description (Annex I of
//! Delegated Regulation (EU) 2024/1364), its configured KPIs (Annex II) and the signing key.
//! Every key is optional: a field left out is reported empty with the reason why, as the
//! regulation allows in its first reporting periods. `reasons` gives an operator's own
//! technical reason for a field left out (keyed by the report's field name, e.g. `cdd`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[disclosure]` of the aggregator's config.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisclosureConfig {
    /// Ed25519 private key (PKCS#8 PEM, `footprint keygen`) that signs reports.
    pub signing_key: Option<PathBuf>,
    /// The data centre's name.
    pub name: Option<String>,
    /// The owner's name, as the report's Annex I asks.
    pub owner_name: Option<String>,
    /// The owner's contact (address, e-mail).
    pub owner_contact: Option<String>,
    /// The operator's name, when not the owner.
    pub operator_name: Option<String>,
    /// The operator's contact.
    pub operator_contact: Option<String>,
    /// Eurostat LAU code of the location.
    pub location_lau: Option<String>,
    /// `enterprise`, `colocation` or `co-hosting`.
    pub data_centre_type: Option<DataCentreType>,
    /// `single` (one structure) or `group`.
    pub structure: Option<Structure>,
    /// Year and month it entered operation, `YYYY-MM`.
    pub in_operation_since: Option<String>,
    /// Redundancy in N-notation (`N`, `N+1`, `2N`, …).
    #[serde(default)]
    pub redundancy: Redundancy,
    /// PDIT, kW.
    pub installed_it_power_kw: Option<f64>,
    /// What PDIT is: `rated` (rated IT power) or `weighted_average`.
    pub installed_it_power_basis: Option<PowerBasis>,
    /// SDC, m².
    pub floor_area_m2: Option<f64>,
    /// SCR, m².
    pub computer_room_area_m2: Option<f64>,
    /// Grid functions offered (e.g. `peak shifting`, `frequency response`); an empty list says
    /// none are.
    pub grid_functions: Option<Vec<String>>,
    /// CBtG, average battery capacity offered to the grid, kW.
    pub battery_capacity_to_grid_kw: Option<f64>,
    /// Water-usage category of the site water meter: 2 (total input, every source) or 1
    /// (potable only).
    pub water_category: Option<u8>,
    /// The site water meter reads potable water only (it then gives WIN-POT as well).
    #[serde(default)]
    pub water_meter_is_potable: bool,
    /// EDC-BG, kWh over the period, where a generator meter outside Footprint reads it.
    pub backup_generator_kwh: Option<f64>,
    /// EREUSE, kWh over the period, from a heat meter outside Footprint.
    pub waste_heat_reused_kwh: Option<f64>,
    /// TWH, °C.
    pub waste_heat_temperature_c: Option<f64>,
    /// TIN (the intake-air set point), °C.
    pub it_intake_air_set_point_c: Option<f64>,
    /// Refrigerants as the F-gas regulation names them (`R-134a`, …).
    pub refrigerants: Option<Vec<String>>,
    /// CDD, base 21 °C, over the period.
    pub cooling_degree_days: Option<f64>,
    /// ERES-OS, kWh generated on site from renewables over the period.
    pub onsite_renewable_kwh: Option<f64>,
    /// CSERV: the sum of the servers' SERT scores.
    pub server_performance_sert: Option<f64>,
    /// CSTOR, raw storage capacity, PB.
    pub storage_capacity_pb: Option<f64>,
    /// Share of the computer room the ICT capacity figures cover, 0–1.
    pub ict_capacity_share: Option<f64>,
    /// BIN / BOUT, provisioned bandwidth, yearly average, GB/s (as the regulation's text says).
    pub bandwidth_in_gb_per_s: Option<f64>,
    /// BOUT: provisioned outgoing bandwidth, yearly average, GB/s.
    pub bandwidth_out_gb_per_s: Option<f64>,
    /// Incoming and outgoing traffic over the period, EB.
    pub traffic_in_eb: Option<f64>,
    /// Outgoing traffic over the period, EB.
    pub traffic_out_eb: Option<f64>,
    /// Technical reasons for fields left out, by report field name (`cdd = "no weather
    /// station on site"`).
    #[serde(default)]
    pub reasons: BTreeMap<String, String>,
}

/// `disclosure.redundancy`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redundancy {
    /// Redundancy of the high-voltage electrical supply (e.g. `2N`, `N+1`).
    pub electrical_high_voltage: Option<String>,
    /// Of the low-voltage distribution.
    pub electrical_low_voltage: Option<String>,
    /// Of the power to each rack.
    pub electrical_rack: Option<String>,
    /// Of the room's cooling.
    pub cooling_room: Option<String>,
    /// Of the racks' cooling.
    pub cooling_rack: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataCentreType {
    Enterprise,
    Colocation,
    CoHosting,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Structure {
    Single,
    Group,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerBasis {
    Rated,
    WeightedAverage,
}

impl DisclosureConfig {
    /// Problems a type check cannot see: `(key under [disclosure], what is wrong)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(since) = &self.in_operation_since {
            let valid = since.len() == 7
                && since.as_bytes()[4] == b'-'
                && since[..4].bytes().all(|b| b.is_ascii_digit())
                && matches!(since[5..].parse::<u8>(), Ok(1..=12));
            if !valid {
                problems.push((
                    "disclosure.in_operation_since".into(),
                    format!("{since:?} is not a year and month (YYYY-MM)"),
                ));
            }
        }
        if let Some(category) = self.water_category
            && !matches!(category, 1 | 2)
        {
            problems.push((
                "disclosure.water_category".into(),
                format!("{category} is not a water-usage category (1 or 2)"),
            ));
        }
        let figures = [
            ("installed_it_power_kw", self.installed_it_power_kw),
            ("floor_area_m2", self.floor_area_m2),
            ("computer_room_area_m2", self.computer_room_area_m2),
            (
                "battery_capacity_to_grid_kw",
                self.battery_capacity_to_grid_kw,
            ),
            ("backup_generator_kwh", self.backup_generator_kwh),
            ("waste_heat_reused_kwh", self.waste_heat_reused_kwh),
            ("cooling_degree_days", self.cooling_degree_days),
            ("onsite_renewable_kwh", self.onsite_renewable_kwh),
            ("server_performance_sert", self.server_performance_sert),
            ("storage_capacity_pb", self.storage_capacity_pb),
            ("bandwidth_in_gb_per_s", self.bandwidth_in_gb_per_s),
            ("bandwidth_out_gb_per_s", self.bandwidth_out_gb_per_s),
            ("traffic_in_eb", self.traffic_in_eb),
            ("traffic_out_eb", self.traffic_out_eb),
        ];
        for (key, value) in figures {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                problems.push((
                    format!("disclosure.{key}"),
                    format!("{value} is not a finite figure of 0 or more"),
                ));
            }
        }
        if let Some(share) = self.ict_capacity_share
            && !(0.0..=1.0).contains(&share)
        {
            problems.push((
                "disclosure.ict_capacity_share".into(),
                format!("{share} is not a share between 0 and 1"),
            ));
        }
        problems
    }
}
