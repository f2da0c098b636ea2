//! The ledger's settings resolved from the config: the attribution policy in integer units, the
//! contracted supply hour by hour, the device table, and the intensity feeds imported into the
//! ledger (each hour with its source).

use std::collections::BTreeMap;
use std::path::Path;

use footprint_core::attribution::{CpuBaselinePolicy, Policy};
use footprint_core::carbon::{self, Feed, HourConvention};
use footprint_core::embodied::{DeviceEntry, DeviceTable};
use footprint_core::facility::MarketInstruments;
use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::{MgCo2ePerKwh, Millijoules, Span, UnixNanos};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::config::{AggregatorConfig, CpuBaseline};
use crate::{Error, Result};

/// Everything the ledger needs beyond the readings.
#[derive(Clone, Debug, Default)]
pub struct LedgerSettings {
    pub policy: Policy,
    pub assumed_pue_ppm: Option<u64>,
    pub require_site_meter: bool,
    pub zone: String,
    pub residual_mg_per_kwh: Option<MgCo2ePerKwh>,
    /// Guarantees of origin per year, mJ.
    pub go_mj_per_year: u64,
    /// PPA delivery of each hour from the hourly files, mJ.
    pub ppa_hourly_mj: BTreeMap<i64, u64>,
    /// PPA delivery every hour from the flat contracts, mJ.
    pub ppa_flat_mj_per_hour: u64,
    pub devices: DeviceTable,
    pub default_gpu_model: String,
    pub server_model: String,
    /// How long window detail is kept behind the settled hours (`ledger.window_detail_days`).
    pub window_detail_ns: i64,
    /// What a reader of a report needs to know about these settings, in words.
    pub description: String,
}

fn watts_to_mw(watts: f64) -> u64 {
    (watts * 1_000.0).round() as u64
}

fn kwh_to_mj(kwh: f64) -> u64 {
    Millijoules::from_kwh(kwh).0
}

/// Reads `datetime,kwh` rows.
fn read_ppa_csv(path: &Path, into: &mut BTreeMap<i64, u64>) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Server(format!("carbon.ppa: reading {}: {e}", path.display())))?;
    for (index, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| {
            Error::Server(format!("{} line {}: {reason}", path.display(), index + 1))
        };
        let (time, kwh) = line
            .split_once(',')
            .ok_or_else(|| bad("expected `datetime,kwh`".into()))?;
        let at = footprint_core::time::parse_rfc3339(time)
            .map(|at| at.0)
            .map_err(|e| bad(format!("datetime: {e}")))?;
        let kwh: f64 = kwh
            .trim()
            .parse()
            .ok()
            .filter(|k: &f64| k.is_finite() && *k >= 0.0)
            .ok_or_else(|| bad(format!("kwh: {kwh:?} is not a non-negative number")))?;
        *into
            .entry(at.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR)
            .or_default() += kwh_to_mj(kwh);
    }
    Ok(())
}

impl LedgerSettings {
    /// Resolves `config`, reading the PPA files it names.
    ///
    /// # Errors
    /// A PPA file that cannot be read or parsed (named with its line).
    pub fn from_config(config: &AggregatorConfig) -> Result<Self> {
        let attribution = &config.attribution;
        let policy = Policy {
            cpu_baseline: match attribution.cpu_baseline {
                CpuBaseline::ByCores => CpuBaselinePolicy::ByCores,
                CpuBaseline::Idle => CpuBaselinePolicy::Idle,
            },
            package_baseline_mw: watts_to_mw(attribution.package_baseline_w),
            dram_baseline_mw: watts_to_mw(attribution.dram_baseline_w),
            host_overhead_ppm: (attribution.host_overhead_factor * 1e6).round() as u64,
        };
        let carbon = &config.carbon;
        let mut ppa_hourly_mj = BTreeMap::new();
        let mut flat_kw = 0.0;
        for ppa in &carbon.ppa {
            flat_kw += ppa.flat_kw;
            if let Some(path) = &ppa.hourly_kwh_csv {
                read_ppa_csv(path, &mut ppa_hourly_mj)?;
            }
        }
        let mut devices = DeviceTable::builtin()?;
        for entry in &config.embodied.devices {
            devices
                .devices
                .retain(|d| !(d.model == entry.model && d.kind == entry.kind));
            devices.devices.push(entry.clone());
        }
        let description = format!(
            "attribution: CPU baseline {:?} ({} W per package, {} W per DRAM zone), host overhead factor {} without an outlet meter; \
             facility: overhead = site meter − IT per window{}; carbon zone {:?}, residual mix {}, guarantees of origin {} MWh/year, {} PPA(s); \
             embodied: device table v{}{}",
            attribution.cpu_baseline,
            attribution.package_baseline_w,
            attribution.dram_baseline_w,
            attribution.host_overhead_factor,
            config
                .facility
                .assumed_pue
                .map(|p| format!(", assumed PUE {p} without a site meter"))
                .unwrap_or_default(),
            carbon.zone,
            carbon
                .residual_mix_g_per_kwh
                .map_or("grid average".to_owned(), |r| format!("{r} g/kWh")),
            carbon.guarantees_of_origin_mwh_per_year,
            carbon.ppa.len(),
            devices.version,
            if config.embodied.devices.is_empty() {
                ""
            } else {
                " with site entries"
            },
        );
        Ok(Self {
            policy,
            assumed_pue_ppm: config
                .facility
                .assumed_pue
                .map(|p| (p * 1e6).round() as u64),
            require_site_meter: config.facility.require_site_meter,
            zone: carbon.zone.clone(),
            residual_mg_per_kwh: carbon
                .residual_mix_g_per_kwh
                .map(|g| MgCo2ePerKwh((g * 1_000.0).round() as u64)),
            go_mj_per_year: kwh_to_mj(carbon.guarantees_of_origin_mwh_per_year * 1_000.0),
            ppa_hourly_mj,
            ppa_flat_mj_per_hour: kwh_to_mj(flat_kw),
            devices,
            default_gpu_model: config.embodied.default_gpu_model.clone(),
            server_model: config.embodied.server_model.clone(),
            window_detail_ns: i64::from(config.ledger.window_detail_days)
                .saturating_mul(footprint_core::units::NANOS_PER_DAY),
            description,
        })
    }

    /// The instruments of the hour starting at `hour_ns`.
    pub fn instruments(&self, hour_ns: i64) -> MarketInstruments {
        MarketInstruments {
            ppa_mj: self.ppa_flat_mj_per_hour
                + self.ppa_hourly_mj.get(&hour_ns).copied().unwrap_or(0),
            go_accrual_mj: self.go_accrued_in(Span::new(
                UnixNanos(hour_ns),
                UnixNanos(hour_ns + NANOS_PER_HOUR),
            )),
            residual_mg_per_kwh: self.residual_mg_per_kwh,
        }
    }

    /// Guarantees of origin accrued in `span` (inside one UTC year): the year's volume spread
    /// evenly over its hours (telescoping, so a whole year accrues exactly the volume).
    pub fn go_accrued_in(&self, span: Span) -> u64 {
        let year = footprint_core::time::utc_year_of(span.start);
        footprint_core::facility::accrued_in(self.go_mj_per_year, year.start.0, year.len_ns(), span)
    }

    /// The embodied-carbon entry of a GPU model (the configured default when the meter names
    /// none).
    pub fn gpu_entry(&self, model: &str) -> Option<&DeviceEntry> {
        let model = if model.is_empty() {
            self.default_gpu_model.as_str()
        } else {
            model
        };
        self.devices.lookup("gpu", model)
    }

    pub fn server_entry(&self) -> Option<&DeviceEntry> {
        self.devices.lookup("server", &self.server_model)
    }
}

/// An imported feed as the ledger keeps it (`feeds`): what an auditor needs to find the same file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRecord {
    pub id: i64,
    pub file: String,
    /// Of the file's bytes, lower-case hex.
    pub sha256: String,
    pub layout: &'static str,
    pub hour_convention: HourConvention,
    pub hours: usize,
    pub gaps: usize,
    /// Hours stored before whose figure this import changed, and the earliest of them by zone.
    pub changed_hours: usize,
    pub first_changed: Option<(String, i64)>,
}

/// What storing a feed changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Hours new to the ledger.
    pub added: usize,
    /// Hours stored before with another figure or quality, and the earliest of them.
    pub changed: usize,
    pub first_changed: Option<(String, i64)>,
}

/// Imports a feed's hours for every zone into the ledger as feed `feed_id`. An hour stored
/// before with the same figure and quality is left as it is (an identical re-import writes
/// nothing); one with another is replaced, and reported.
///
/// # Errors
/// A database error.
pub fn store_feed(
    connection: &Connection,
    feed: &Feed,
    source: &str,
    feed_id: i64,
) -> Result<Stored> {
    let mut stored_before = connection.prepare_cached(
        "SELECT mg_per_kwh, quality FROM intensity WHERE zone = ?1 AND hour_ns = ?2",
    )?;
    let mut insert = connection.prepare_cached(
        "INSERT OR REPLACE INTO intensity (zone, hour_ns, mg_per_kwh, quality, source, feed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut outcome = Stored::default();
    for hour in &feed.hours {
        let figure = (
            hour.mg_per_kwh.0 as i64,
            crate::codec::quality_code(hour.quality),
        );
        let before: Option<(i64, i32)> = stored_before
            .query_row(params![hour.zone, hour.hour_ns], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        match before {
            Some(before) if before == figure => continue,
            Some(_) => {
                outcome.changed += 1;
                let earlier = outcome
                    .first_changed
                    .as_ref()
                    .is_none_or(|(_, first)| hour.hour_ns < *first);
                if earlier {
                    outcome.first_changed = Some((hour.zone.clone(), hour.hour_ns));
                }
            }
            None => outcome.added += 1,
        }
        insert.execute(params![
            hour.zone,
            hour.hour_ns,
            figure.0,
            figure.1,
            source,
            feed_id
        ])?;
    }
    Ok(outcome)
}

/// Reads and imports an intensity file, its timestamps read as `convention` (else as its layout
/// states; a layout that states none is refused), and records the import with the file's SHA-256
/// in `feeds`. `now_ns` is the time of the import.
///
/// # Errors
/// The file cannot be read or parsed (the message names file, line and field, or asks for the
/// hour convention), or a database error.
pub fn import_file(
    connection: &Connection,
    path: &Path,
    convention: Option<HourConvention>,
    now_ns: i64,
) -> Result<(Feed, FeedRecord)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Server(format!("intensity file {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let feed = carbon::parse_feed(&text, convention)
        .map_err(|e| Error::Server(format!("intensity file {}: {e}", path.display())))?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let transaction = connection.unchecked_transaction()?;
    // The same bytes read the same way are the same feed: an aggregator importing its configured
    // files at every start records each once.
    let known: Option<i64> = transaction
        .query_row(
            "SELECT id FROM feeds WHERE sha256 = ?1 AND layout = ?2 AND hour_convention = ?3",
            params![sha256, feed.format, feed.hour_convention.name()],
            |row| row.get(0),
        )
        .optional()?;
    let id = match known {
        Some(id) => id,
        None => transaction.query_row(
            "INSERT INTO feeds (file, sha256, layout, hour_convention, hours, gaps, imported_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            params![
                file,
                sha256,
                feed.format,
                feed.hour_convention.name(),
                feed.hours.len() as i64,
                feed.gaps as i64,
                now_ns
            ],
            |row| row.get(0),
        )?,
    };
    let source = format!(
        "{file} ({}, hour-{}, sha256 {})",
        feed.format,
        feed.hour_convention.name(),
        &sha256[..12]
    );
    let stored = store_feed(&transaction, &feed, &source, id)?;
    transaction.commit()?;
    let record = FeedRecord {
        id,
        file,
        sha256,
        layout: feed.format,
        hour_convention: feed.hour_convention,
        hours: feed.hours.len(),
        gaps: feed.gaps,
        changed_hours: stored.changed,
        first_changed: stored.first_changed,
    };
    Ok((feed, record))
}
