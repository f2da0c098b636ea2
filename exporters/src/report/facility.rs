//! The facility section: Annexes I–III of Delegated Regulation (EU) 2024/1364.

use std::collections::BTreeMap;

use serde::Serialize;

use super::canonical::Decimal;
use super::disclosure::DisclosureConfig;
use super::figures::{Field, Source, configured_mj, cubic_metres, kwh};
use super::inputs::{FacilityFigures, ReportInputs};

/// Annex I: what the data centre is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct General {
    pub name: Field,
    pub owner: Field,
    pub operator: Field,
    pub location_lau: Field,
    pub data_centre_type: Field,
    pub structure: Field,
    pub in_operation_since: Field,
    pub redundancy_electrical_high_voltage: Field,
    pub redundancy_electrical_low_voltage: Field,
    pub redundancy_electrical_rack: Field,
    pub redundancy_cooling_room: Field,
    pub redundancy_cooling_rack: Field,
}

/// The facility section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Facility {
    pub general: General,
    /// Annex II.1, keyed by the regulation's symbols in lower case (`tin` is the intake-air set
    /// point; incoming traffic is `data_traffic.traffic_in`).
    pub kpis: BTreeMap<&'static str, Field>,
    /// Annex II.2.
    pub ict_capacity: BTreeMap<&'static str, Field>,
    /// Annex II.3 (a draft amendment drops it: kept as its own versioned table).
    pub data_traffic: BTreeMap<&'static str, Field>,
    /// Annex III, and CUE beyond it.
    pub indicators: BTreeMap<&'static str, Field>,
}

fn text(value: Option<&String>, key: &str, config: &DisclosureConfig) -> Field {
    match value {
        Some(value) if !value.is_empty() => {
            Field::filled(value, "", Source::Configured, format!("disclosure.{key}"))
        }
        _ => Field::missing("", reason(key, config)),
    }
}

fn figure(
    value: Option<f64>,
    places: u8,
    unit: &'static str,
    key: &str,
    config: &DisclosureConfig,
) -> Field {
    match (
        value,
        value.and_then(|value| Decimal::from_f64(value, places)),
    ) {
        (_, Some(decimal)) => Field::filled(
            decimal,
            unit,
            Source::Configured,
            format!("disclosure.{key}"),
        ),
        (Some(value), None) => Field::missing(
            unit,
            format!("disclosure.{key}: {value} cannot be written as a decimal of {places} places"),
        ),
        (None, None) => Field::missing(unit, reason(key, config)),
    }
}

fn list(value: Option<&Vec<String>>, key: &str, config: &DisclosureConfig) -> Field {
    match value {
        Some(items) => Field::filled(items, "", Source::Configured, format!("disclosure.{key}")),
        None => Field::missing("", reason(key, config)),
    }
}

/// Why a configured field is empty: the operator's reason, else that nobody entered it.
fn reason(key: &str, config: &DisclosureConfig) -> String {
    config
        .reasons
        .get(key)
        .cloned()
        .unwrap_or_else(|| format!("not measured by Footprint and not set in [disclosure] ({key})"))
}

fn general(config: &DisclosureConfig) -> General {
    let contact = |name: &Option<String>, contact: &Option<String>, key: &str| match name {
        Some(name) if !name.is_empty() => Field::filled(
            serde_json::json!({"name": name, "contact": contact.clone().unwrap_or_default()}),
            "",
            Source::Configured,
            format!("disclosure.{key}_name, disclosure.{key}_contact"),
        ),
        _ => Field::missing("", reason(&format!("{key}_name"), config)),
    };
    let named = |value: Option<String>, key: &str| text(value.as_ref(), key, config);
    let redundancy = &config.redundancy;
    General {
        name: named(config.name.clone(), "name"),
        owner: contact(&config.owner_name, &config.owner_contact, "owner"),
        operator: contact(&config.operator_name, &config.operator_contact, "operator"),
        location_lau: named(config.location_lau.clone(), "location_lau"),
        data_centre_type: named(
            config
                .data_centre_type
                .and_then(|kind| serde_json::to_value(kind).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            "data_centre_type",
        ),
        structure: named(
            config
                .structure
                .and_then(|kind| serde_json::to_value(kind).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            "structure",
        ),
        in_operation_since: named(config.in_operation_since.clone(), "in_operation_since"),
        redundancy_electrical_high_voltage: named(
            redundancy.electrical_high_voltage.clone(),
            "redundancy.electrical_high_voltage",
        ),
        redundancy_electrical_low_voltage: named(
            redundancy.electrical_low_voltage.clone(),
            "redundancy.electrical_low_voltage",
        ),
        redundancy_electrical_rack: named(
            redundancy.electrical_rack.clone(),
            "redundancy.electrical_rack",
        ),
        redundancy_cooling_room: named(redundancy.cooling_room.clone(), "redundancy.cooling_room"),
        redundancy_cooling_rack: named(redundancy.cooling_rack.clone(), "redundancy.cooling_rack"),
    }
}

/// Where EIT is measured, and the PUE category that follows (ISO/IEC 30134-2: 1 at the UPS
/// outputs, 2 at the PDU outputs, 3 at the IT equipment's input).
fn it_measurement(inputs: &ReportInputs) -> (String, Option<u8>) {
    let (outlets, components) = (inputs.hosts_with_outlet_meter, inputs.hosts_from_components);
    if components == 0 {
        (
            format!(
                "sum of {outlets} host outlet meters (PDU outlet or IPMI/DCMI): the IT equipment's input, \
                 not the UPS outputs the regulation names"
            ),
            Some(3),
        )
    } else if outlets == 0 {
        (
            format!(
                "sum of {components} hosts' GPU + CPU package + DRAM counters plus the host overhead factor \
                 ({}), estimated: no outlet or UPS meter",
                inputs.host_overhead_factor
            ),
            None,
        )
    } else {
        (
            format!(
                "{outlets} hosts by outlet meter (IT equipment input), {components} from GPU + CPU + DRAM \
                 counters plus the host overhead factor ({}), estimated",
                inputs.host_overhead_factor
            ),
            None,
        )
    }
}

fn energy(mj: i64, source: Source, method: String) -> Field {
    Field::filled(kwh(mj), "kWh", source, method).with_exact(mj, "mJ")
}

/// EDC: the site meter where every window had one.
fn edc(total: &FacilityFigures) -> Field {
    let windows = total.windows_site_metered + total.windows_it_only + total.windows_assumed_pue;
    if total.windows_site_metered > 0 && total.windows_site_metered == windows {
        energy(
            total.energy_mj.site,
            Source::Metered,
            "site energy meter(s), delta per window, all feeds the meters see".into(),
        )
    } else if total.windows_site_metered == 0 && total.windows_assumed_pue == 0 {
        Field::missing(
            "kWh",
            "no site energy meter reports to Footprint: only the IT energy is known".into(),
        )
    } else {
        energy(
            total.energy_mj.site,
            Source::Estimated,
            format!(
                "{} windows from the site meter, {} from IT energy x the configured PUE, {} from IT energy alone",
                total.windows_site_metered, total.windows_assumed_pue, total.windows_it_only
            ),
        )
    }
}

pub fn facility(inputs: &ReportInputs) -> Facility {
    let config = &inputs.disclosure;
    let total = &inputs.total;
    let mut kpis = BTreeMap::new();
    let basis = match config.installed_it_power_basis {
        Some(super::disclosure::PowerBasis::Rated) => "rated IT power",
        Some(super::disclosure::PowerBasis::WeightedAverage) => "weighted average IT power demand",
        None => "basis not stated (disclosure.installed_it_power_basis)",
    };
    let mut pdit = figure(
        config.installed_it_power_kw,
        1,
        "kW",
        "installed_it_power_kw",
        config,
    );
    if pdit.is_filled() {
        pdit.method = format!("disclosure.installed_it_power_kw: {basis}");
    }
    kpis.insert("pdit", pdit);
    kpis.insert(
        "sdc",
        figure(config.floor_area_m2, 1, "m2", "floor_area_m2", config),
    );
    kpis.insert(
        "scr",
        figure(
            config.computer_room_area_m2,
            1,
            "m2",
            "computer_room_area_m2",
            config,
        ),
    );
    let edc = edc(total);
    let edc_mj = edc.exact.map(|exact| exact.value);
    kpis.insert("edc", edc);
    kpis.insert(
        "edc_bg",
        match config.backup_generator_kwh.and_then(configured_mj) {
            Some(mj) => energy(mj, Source::Configured, "disclosure.backup_generator_kwh".into()),
            None => Field::missing(
                "kWh",
                config.reasons.get("edc_bg").cloned().unwrap_or_else(|| {
                    "no backup-generator meter reports to Footprint; set disclosure.backup_generator_kwh from the generator's meter".into()
                }),
            ),
        },
    );
    let (point, category) = it_measurement(inputs);
    let it_source = if inputs.hosts_from_components == 0 {
        Source::Metered
    } else {
        Source::Estimated
    };
    kpis.insert("eit", energy(total.it_mj, it_source, point.clone()));
    kpis.insert(
        "grid_functions",
        list(config.grid_functions.as_ref(), "grid_functions", config),
    );
    kpis.insert(
        "cbtg",
        figure(
            config.battery_capacity_to_grid_kw,
            1,
            "kW",
            "battery_capacity_to_grid_kw",
            config,
        ),
    );
    let water_metered = inputs.meters.iter().any(|meter| meter.kind == "site_water");
    let category_text = match config.water_category {
        Some(1) => "water-usage category 1 (potable water)",
        Some(_) => "water-usage category 2 (total input, every source)",
        None => "category not stated (disclosure.water_category)",
    };
    let win = if water_metered {
        Field::filled(
            cubic_metres(total.water_ml.site),
            "m3",
            Source::Metered,
            format!("site water meter(s), delta per window; {category_text}"),
        )
        .with_exact(total.water_ml.site, "mL")
    } else {
        Field::missing("m3", "no site water meter reports to Footprint".into())
    };
    let win_ml = win.exact.map(|exact| exact.value);
    let win_pot = if water_metered && config.water_meter_is_potable {
        Field {
            method:
                "the site water meter reads potable water only (disclosure.water_meter_is_potable)"
                    .into(),
            ..win.clone()
        }
    } else if water_metered {
        Field::missing(
            "m3",
            "the site water meter does not read potable water apart (disclosure.water_meter_is_potable is false)".into(),
        )
    } else {
        Field::missing("m3", "no site water meter reports to Footprint".into())
    };
    kpis.insert("win", win);
    kpis.insert("win_pot", win_pot);
    let ereuse_mj = config.waste_heat_reused_kwh.and_then(configured_mj);
    kpis.insert(
        "ereuse",
        match ereuse_mj {
            Some(mj) => energy(
                mj,
                Source::Configured,
                "disclosure.waste_heat_reused_kwh (heat meter outside Footprint)".into(),
            ),
            None => Field::missing("kWh", reason("waste_heat_reused_kwh", config)),
        },
    );
    kpis.insert(
        "twh",
        figure(
            config.waste_heat_temperature_c,
            1,
            "degC",
            "waste_heat_temperature_c",
            config,
        ),
    );
    kpis.insert(
        "tin",
        figure(
            config.it_intake_air_set_point_c,
            1,
            "degC",
            "it_intake_air_set_point_c",
            config,
        ),
    );
    kpis.insert(
        "refrigerants",
        list(config.refrigerants.as_ref(), "refrigerants", config),
    );
    kpis.insert(
        "cdd",
        figure(
            config.cooling_degree_days,
            1,
            "degree-days",
            "cooling_degree_days",
            config,
        ),
    );
    kpis.insert(
        "eres_goo",
        energy(
            total.go_used_mj,
            Source::Contractual,
            "guarantees of origin retired (carbon.guarantees_of_origin_mwh_per_year), used by the load hour by hour after PPA supply".into(),
        ),
    );
    kpis.insert(
        "eres_ppa",
        energy(
            total.ppa_matched_mj,
            Source::Contractual,
            "PPA supply matched by the load of the same hour (carbon.ppa); supply no load used that hour is not counted".into(),
        ),
    );
    let onsite_mj = config.onsite_renewable_kwh.and_then(configured_mj);
    kpis.insert(
        "eres_os",
        match onsite_mj {
            Some(mj) => energy(
                mj,
                Source::Configured,
                "disclosure.onsite_renewable_kwh".into(),
            ),
            None => Field::missing("kWh", reason("onsite_renewable_kwh", config)),
        },
    );
    let eres_tot = total.go_used_mj + total.ppa_matched_mj + onsite_mj.unwrap_or(0);
    kpis.insert(
        "eres_tot",
        energy(
            eres_tot,
            Source::Computed,
            if onsite_mj.is_some() {
                "ERES-GOO + ERES-PPA + ERES-OS".into()
            } else {
                "ERES-GOO + ERES-PPA (ERES-OS is empty)".into()
            },
        ),
    );

    let mut ict_capacity = BTreeMap::new();
    ict_capacity.insert(
        "cserv",
        figure(
            config.server_performance_sert,
            1,
            "",
            "server_performance_sert",
            config,
        ),
    );
    ict_capacity.insert(
        "cstor",
        figure(
            config.storage_capacity_pb,
            3,
            "PB",
            "storage_capacity_pb",
            config,
        ),
    );
    ict_capacity.insert(
        "share_of_computer_room",
        figure(
            config.ict_capacity_share,
            4,
            "",
            "ict_capacity_share",
            config,
        ),
    );
    let mut data_traffic = BTreeMap::new();
    data_traffic.insert(
        "bin",
        figure(
            config.bandwidth_in_gb_per_s,
            3,
            "GB/s",
            "bandwidth_in_gb_per_s",
            config,
        ),
    );
    data_traffic.insert(
        "bout",
        figure(
            config.bandwidth_out_gb_per_s,
            3,
            "GB/s",
            "bandwidth_out_gb_per_s",
            config,
        ),
    );
    data_traffic.insert(
        "traffic_in",
        figure(config.traffic_in_eb, 6, "EB", "traffic_in_eb", config),
    );
    data_traffic.insert(
        "traffic_out",
        figure(config.traffic_out_eb, 6, "EB", "traffic_out_eb", config),
    );

    let mut indicators = BTreeMap::new();
    let it = i128::from(total.it_mj);
    let pue_method = match category {
        Some(category) => format!("EDC / EIT; PUE category {category} ({point})"),
        None => format!("EDC / EIT; no ISO/IEC 30134-2 category: {point}"),
    };
    indicators.insert(
        "pue",
        match edc_mj {
            Some(edc) => Field::ratio(
                Decimal::ratio(i128::from(edc), it, 4),
                "",
                pue_method,
                || "EIT is zero over the period".into(),
            ),
            None => Field::missing("", "EDC is empty (no site energy meter)".into()),
        },
    );
    indicators.insert(
        "wue",
        match win_ml {
            // L/kWh = (mL / 1000) / (mJ / 3.6e9)
            Some(ml) => Field::ratio(
                Decimal::ratio(i128::from(ml) * 3_600_000, it, 4),
                "L/kWh",
                format!("WIN / EIT (ISO/IEC 30134-9), total water input; {category_text}"),
                || "EIT is zero over the period".into(),
            ),
            None => Field::missing("L/kWh", "WIN is empty (no site water meter)".into()),
        },
    );
    indicators.insert(
        "erf",
        match (ereuse_mj, edc_mj) {
            (Some(reused), Some(edc)) => Field::ratio(
                Decimal::ratio(i128::from(reused), i128::from(edc), 4),
                "",
                "EREUSE / EDC".into(),
                || "EDC is zero".into(),
            ),
            (None, _) => Field::missing("", "EREUSE is empty".into()),
            (_, None) => Field::missing("", "EDC is empty".into()),
        },
    );
    indicators.insert(
        "ref",
        match edc_mj {
            Some(edc) => Field::ratio(
                Decimal::ratio(i128::from(eres_tot), i128::from(edc), 4),
                "",
                "ERES-TOT / EDC".into(),
                || "EDC is zero".into(),
            ),
            None => Field::missing("", "EDC is empty".into()),
        },
    );
    // kg/kWh = (mg / 1e6) / (mJ / 3.6e9)
    let cue = |mg: i64, method: &str| {
        Field::ratio(
            Decimal::ratio(i128::from(mg) * 3_600, it, 4),
            "kgCO2e/kWh",
            method.into(),
            || "EIT is zero over the period".into(),
        )
    };
    indicators.insert(
        "cue_location",
        cue(total.co2e_location_mg.site, "location-based CO2e of the facility's energy / EIT (The Green Grid CUE; beyond the regulation)"),
    );
    indicators.insert(
        "cue_market",
        cue(
            total.co2e_market_mg.site,
            "market-based CO2e of the facility's energy / EIT (beyond the regulation)",
        ),
    );
    indicators.insert(
        "pue_label",
        Field::missing(
            "",
            "A-G labels are announced for a second phase (unconfirmed): no label table is in force for this schema version".into(),
        ),
    );
    Facility {
        general: general(config),
        kpis,
        ict_capacity,
        data_traffic,
        indicators,
    }
}
