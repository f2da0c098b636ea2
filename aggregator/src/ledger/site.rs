//! The site stage: settles whole hours once every host has built them and every site meter has
//! reported past them. Per window it shares the facility overhead, the water and the
//! location-based carbon over every account the hosts produced (a job on a host, a host's idle,
//! a host's unattributed); per hour it matches the load against contracted supply and shares
//! the market-based carbon (`footprint_core::facility`).
//!
//! A collector silent for longer than `facility.max_wait_s` stops holding hours back. What it
//! (or any late or out-of-order data) delivers later for settled hours reopens them: they are
//! settled again from the first hour touched on, and each hour whose figures changed is
//! recorded in `hour_revisions` with the reason, which reports carry.

use std::collections::BTreeSet;

use footprint_core::carbon;
use footprint_core::facility::{self, HourMatch, Intensity, SiteMeters};
use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::window::{WindowLength, share_in_window};
use footprint_core::{Millijoules, Millilitres, Span, UnixNanos};
use footprint_proto::v1::MeterKind;
use rusqlite::{Connection, OptionalExtension, params};

use super::hour_rollup::{AccountRow, HourRollup};
use super::{detail, load_intervals};
use crate::Result;
use crate::codec::{MeterRole, kind_codes_where, quality_code};
use crate::settings::LedgerSettings;
use crate::tables::{rollups, series};

use crate::tables::SITE_SETTLED_KEY as SETTLED_KEY;

/// Where the site stage has got to: every window before it is settled.
///
/// # Errors
/// A database error.
pub fn settled_until(connection: &Connection) -> Result<Option<UnixNanos>> {
    Ok(crate::tables::state(connection, SETTLED_KEY)?.map(UnixNanos))
}

/// The hour every host and site meter that is still heard from has passed, if any.
///
/// A collector in `silent` (nothing received for `facility.max_wait_s`) no longer holds hours
/// back; whatever it delivers later reopens the hours it touches ([`reopen`]). With every host
/// silent, the hours up to the furthest one built settle.
fn ready_until(
    connection: &Connection,
    require_site_meter: bool,
    silent: &BTreeSet<i64>,
) -> Result<Option<i64>> {
    // Every collector with a meter of the host's energy builds windows, and so holds hours back.
    let hosts: Vec<(i64, Option<i64>)> = connection
        .prepare_cached(&format!(
            "SELECT c.id, c.built_until_ns FROM collectors c
             WHERE EXISTS (SELECT 1 FROM meters m WHERE m.collector = c.id AND m.kind IN ({}))",
            kind_codes_where(MeterRole::is_host_energy)
        ))?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // The slowest host heard from, whether one heard from has built nothing (it may still
    // deliver the hours in question), and the furthest host.
    let mut heard: Option<i64> = None;
    let mut unbuilt = false;
    let mut furthest: Option<i64> = None;
    for (collector, built_until) in hosts {
        furthest = furthest.max(built_until);
        if silent.contains(&collector) {
            continue;
        }
        match built_until {
            Some(built_until) => heard = Some(heard.map_or(built_until, |h| h.min(built_until))),
            None => unbuilt = true,
        }
    }
    if unbuilt {
        return Ok(None);
    }
    let Some(mut until) = heard.or(furthest) else {
        return Ok(None);
    };
    let site_meters: Vec<(i64, i64)> = connection
        .prepare_cached(&format!(
            "SELECT m.collector, m.id FROM meters m WHERE m.kind IN ({})",
            kind_codes_where(MeterRole::is_site)
        ))?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if require_site_meter {
        let energy_meters: i64 = connection
            .prepare_cached("SELECT COUNT(*) FROM meters WHERE kind = ?1")?
            .query_row([MeterKind::SiteEnergy as i32], |row| row.get(0))?;
        if energy_meters == 0 {
            return Ok(None);
        }
    }
    for (collector, meter) in site_meters {
        if silent.contains(&collector) {
            continue;
        }
        match series::last_ts(connection, meter)? {
            Some(last) => until = until.min(last),
            None => return Ok(None),
        }
    }
    Ok(Some(until.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR))
}

/// Late data changed what the settled hours from the one holding `from_ns` were built from:
/// they are settled again, that hour with every one after it (the guarantees-of-origin balance
/// carries from hour to hour). `reason` is kept for the hour until then; an hour whose figures
/// come out different is recorded in `hour_revisions`. Returns whether anything was reopened.
///
/// # Errors
/// A database error.
pub fn reopen(connection: &Connection, from: UnixNanos, reason: &str) -> Result<bool> {
    let Some(UnixNanos(until)) = settled_until(connection)? else {
        return Ok(false);
    };
    let hour = from.0.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR;
    if hour >= until {
        return Ok(false);
    }
    connection
        .prepare_cached(
            "INSERT INTO hours_reopened (hour_ns, reason) VALUES (?1, ?2)
             ON CONFLICT (hour_ns) DO UPDATE SET reason =
               CASE WHEN instr(reason, excluded.reason) > 0 THEN reason ELSE reason || '; ' || excluded.reason END",
        )?
        .execute(params![hour, reason])?;
    crate::tables::set_state(connection, SETTLED_KEY, hour)?;
    Ok(true)
}

/// The grid intensity of the hour at `hour_ns` in `zone`, with the gap rule applied.
///
/// # Errors
/// A database error.
pub fn intensity_of_hour(
    connection: &Connection,
    zone: &str,
    hour_ns: i64,
) -> Result<Option<Intensity>> {
    if zone.is_empty() {
        return Ok(None);
    }
    let (before, after) = super::intensity::rows_around(connection, zone, hour_ns)?;
    let point =
        |row: Option<super::intensity::Row>| row.map(|(at, mg, quality, ..)| (at, mg, quality));
    Ok(
        carbon::fill(hour_ns, point(before), point(after)).map(|(mg_per_kwh, quality)| Intensity {
            mg_per_kwh,
            quality,
        }),
    )
}

/// One account of a window: a row of `window_jobs` or the idle / unattributed part of a row of
/// `window_hosts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Account {
    Job { collector: i64, job: i64 },
    Idle { collector: i64 },
    Unattributed { collector: i64 },
}

/// Delta of every meter of `kind` inside each window of `hour`, or `None` without such a meter.
/// A window that a meter has not reported past yet (its collector fell silent and the hour
/// settled without it) is `None`: not measured, rather than measured as nothing.
fn site_deltas(
    connection: &Connection,
    kind: MeterKind,
    hour: Span,
    window: WindowLength,
) -> Result<Option<Vec<Option<u64>>>> {
    let meters: Vec<(i64, Option<i64>)> = connection
        .prepare_cached("SELECT id FROM meters WHERE kind = ?1")?
        .query_map([kind as i32], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?
        .into_iter()
        .map(|meter| Ok((meter, series::last_ts(connection, meter)?)))
        .collect::<Result<_>>()?;
    if meters.is_empty() {
        return Ok(None);
    }
    let count = (hour.len_ns() / window.nanos() as u64) as usize;
    let mut deltas = vec![0u64; count];
    let reported_until = meters
        .iter()
        .map(|(_, last)| last.unwrap_or(i64::MIN))
        .min()
        .unwrap_or(i64::MIN);
    for (meter, _) in meters {
        for interval in load_intervals(connection, meter, hour)? {
            // Only the windows the interval touches.
            let Some(inside) = interval.span.intersect(&hour) else {
                continue;
            };
            let first = ((inside.start.0 - hour.start.0) / window.nanos()) as usize;
            let last = ((inside.end.0 - 1 - hour.start.0) / window.nanos()) as usize;
            for (index, slot) in deltas.iter_mut().enumerate().take(last + 1).skip(first) {
                let span =
                    window.window_at(UnixNanos(hour.start.0 + index as i64 * window.nanos()));
                if let Some(share) =
                    share_in_window(interval.span, interval.delta, interval.quality, span)
                {
                    *slot += share.amount;
                }
            }
        }
    }
    Ok(Some(
        deltas
            .into_iter()
            .enumerate()
            .map(|(index, delta)| {
                let end = hour.start.0 + (index as i64 + 1) * window.nanos();
                (reported_until >= end).then_some(delta)
            })
            .collect(),
    ))
}

/// What a settling pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Hours settled, for the first time or again.
    pub hours: u64,
    /// Hours settled again whose figures came out different (recorded in `hour_revisions`).
    pub revised: u64,
}

/// Settles every hour that is ready, not waiting for the collectors in `silent`.
///
/// # Errors
/// A database error; the hour being settled is then left for the next call.
pub fn settle_ready_hours(
    connection: &Connection,
    settings: &LedgerSettings,
    window: WindowLength,
    silent: &BTreeSet<i64>,
    now: UnixNanos,
) -> Result<Settled> {
    let now_ns = now.0;
    let Some(ready) = ready_until(connection, settings.require_site_meter, silent)? else {
        return Ok(Settled::default());
    };
    let mut next = match settled_until(connection)? {
        Some(UnixNanos(until)) => until,
        None => {
            let first: Option<i64> =
                connection.query_row("SELECT MIN(start_ns) FROM window_hosts", [], |row| {
                    row.get(0)
                })?;
            match first {
                Some(first) => first.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR,
                None => return Ok(Settled::default()),
            }
        }
    };
    let mut settled = Settled::default();
    let detail_from = detail::detail_from(connection)?;
    while next + NANOS_PER_HOUR <= ready {
        let hour = Span::new(UnixNanos(next), UnixNanos(next + NANOS_PER_HOUR));
        // An hour kept as roll-ups only (reopened by late data) is built again from readings.
        let aged = detail_from.is_some_and(|from| next < from);
        if aged {
            detail::regenerate(connection, window, settings, hour)?;
        }
        let before = settled_figures(connection, next)?;
        settle_hour(connection, settings, window, next)?;
        if aged {
            rollups::delete_detail(connection, hour.start.0, hour.end.0)?;
        }
        let reason: Option<String> = connection
            .prepare_cached("DELETE FROM hours_reopened WHERE hour_ns = ?1 RETURNING reason")?
            .query_row([next], |row| row.get(0))
            .optional()?;
        if let Some(before) = before
            && before != settled_figures(connection, next)?.unwrap_or_default()
        {
            let reason = reason.unwrap_or_else(|| "an earlier hour was settled again".to_owned());
            connection
                .prepare_cached(
                    "INSERT INTO hour_revisions (hour_ns, revisions, last_revised_ns, reason) VALUES (?1, 1, ?2, ?3)
                     ON CONFLICT (hour_ns) DO UPDATE SET revisions = revisions + 1,
                       last_revised_ns = excluded.last_revised_ns, reason = excluded.reason",
                )?
                .execute(params![next, now_ns, reason])?;
            settled.revised += 1;
        }
        next += NANOS_PER_HOUR;
        crate::tables::set_state(connection, SETTLED_KEY, next)?;
        settled.hours += 1;
    }
    Ok(settled)
}

/// Everything the site stage wrote for the hour at `hour_ns` and its roll-ups, to tell whether
/// settling it again changed anything; `None` when it was never settled.
fn settled_figures(
    connection: &Connection,
    hour_ns: i64,
) -> Result<Option<Vec<rusqlite::types::Value>>> {
    let mut figures = Vec::new();
    let mut found = false;
    for (sql, settles) in [
        ("SELECT * FROM site_hours WHERE hour_ns = ?1", true),
        ("SELECT * FROM rollup_site WHERE hour_ns = ?1", false),
        (
            "SELECT * FROM rollup_hosts WHERE hour_ns = ?1 ORDER BY collector",
            false,
        ),
        (
            "SELECT * FROM rollup_jobs WHERE hour_ns = ?1 ORDER BY collector, job",
            false,
        ),
    ] {
        let mut statement = connection.prepare_cached(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query([hour_ns])?;
        while let Some(row) = rows.next()? {
            found |= settles;
            for index in 0..columns {
                figures.push(row.get(index)?);
            }
        }
    }
    Ok(found.then_some(figures))
}

/// Guarantees of origin unused before the hour at `hour_ns`: what the hour before left, or —
/// for the ledger's first hour of a year — everything accrued since 1 January: the year's
/// certificates cover the whole year, whenever the ledger started keeping it.
fn go_balance_before(
    connection: &Connection,
    settings: &LedgerSettings,
    hour_ns: i64,
) -> Result<u64> {
    let year_start = footprint_core::time::utc_year_of(UnixNanos(hour_ns))
        .start
        .0;
    if year_start == hour_ns {
        return Ok(0);
    }
    let balance: Option<i64> = connection
        .prepare_cached("SELECT go_balance_after_mj FROM site_hours WHERE hour_ns = ?1")?
        .query_row([hour_ns - NANOS_PER_HOUR], |row| row.get(0))
        .optional()?;
    Ok(match balance {
        Some(balance) => balance as u64,
        None => settings.go_accrued_in(Span::new(UnixNanos(year_start), UnixNanos(hour_ns))),
    })
}

/// A window split: its start, its accounts weighted by facility energy, the split, and each
/// account's row (for the hour's roll-up).
type SettledWindow = (
    i64,
    Vec<(Account, u64)>,
    facility::SiteWindow,
    Vec<AccountRow>,
);

pub(crate) fn settle_hour(
    connection: &Connection,
    settings: &LedgerSettings,
    window: WindowLength,
    hour_ns: i64,
) -> Result<()> {
    let hour = Span::new(UnixNanos(hour_ns), UnixNanos(hour_ns + NANOS_PER_HOUR));
    let energy = site_deltas(connection, MeterKind::SiteEnergy, hour, window)?;
    let water = site_deltas(connection, MeterKind::SiteWater, hour, window)?;
    let intensity = intensity_of_hour(connection, &settings.zone, hour_ns)?;
    let windows = (NANOS_PER_HOUR / window.nanos()) as usize;
    // Per window: its accounts, their facility energy (for market-based carbon) and the split.
    let mut settled: Vec<SettledWindow> = Vec::with_capacity(windows);
    let mut carry = facility::SiteCarry::default();
    for index in 0..windows {
        let start_ns = hour_ns + index as i64 * window.nanos();
        let rows = accounts_of(connection, start_ns)?;
        let accounts: Vec<(Account, u64)> =
            rows.iter().map(|(row, it)| (row.account(), *it)).collect();
        let rows: Vec<AccountRow> = rows.into_iter().map(|(row, _)| row).collect();
        let meters = SiteMeters {
            energy: energy.as_ref().and_then(|d| d[index]).map(Millijoules),
            water: water.as_ref().and_then(|d| d[index]).map(Millilitres),
            assumed_pue_ppm: settings.assumed_pue_ppm,
        };
        let split = facility::split_site_window(&accounts, &meters, &mut carry);
        // From here on an account's weight is its facility energy (IT + overhead).
        let facility_energy = accounts
            .into_iter()
            .zip(&split.overhead_mj)
            .map(|((account, it), overhead)| (account, it + overhead))
            .collect();
        settled.push((start_ns, facility_energy, split, rows));
    }
    let load_mj: u64 = settled
        .iter()
        .map(|(_, _, split, _)| split.facility_mj)
        .sum();
    let instruments = settings.instruments(hour_ns);
    let matched = facility::match_hour(
        Millijoules(load_mj),
        &instruments,
        Millijoules(go_balance_before(connection, settings, hour_ns)?),
        intensity,
    );
    write_hour(connection, hour_ns, &matched, instruments.ppa_mj)?;
    // Both carbon figures are priced once for the hour and shared the same way, so with no
    // contracts market-based equals location-based exactly, job by job.
    let windows: Vec<(u64, &[(Account, u64)])> = settled
        .iter()
        .map(|(_, accounts, split, _)| (split.facility_mj, accounts.as_slice()))
        .collect();
    let location = match intensity {
        Some(i) => facility::share_hour(i.mg_per_kwh.carbon_of(Millijoules(load_mj)).0, &windows),
        None => windows
            .iter()
            .map(|(_, accounts)| (vec![0; accounts.len()], 0))
            .collect(),
    };
    let market = facility::share_hour(matched.market_mg, &windows);
    let mut rollup = HourRollup::new(connection, hour_ns)?;
    for (((start_ns, accounts, split, rows), location), market) in
        settled.into_iter().zip(location).zip(market)
    {
        let accounts: Vec<Account> = accounts.into_iter().map(|(account, _)| account).collect();
        for (index, row) in rows.iter().enumerate() {
            let shares = [
                split.overhead_mj[index] as i64,
                split.water_ml[index] as i64,
                location.0[index] as i64,
                market.0[index] as i64,
            ];
            rollup.add_account(start_ns, row, &shares);
        }
        let total = |shares: &[u64], unattributed: u64| {
            (
                (shares.iter().sum::<u64>() + unattributed) as i64,
                unattributed as i64,
            )
        };
        rollup.add_site_window(
            &split,
            total(&location.0, location.1),
            total(&market.0, market.1),
            intensity,
        );
        write_window(
            connection,
            start_ns,
            &accounts,
            &split,
            (&location.0, location.1),
            (&market.0, market.1),
            intensity,
        )?;
    }
    rollup.write(connection)
}

/// The window's accounts, each with its row and its energy at the IT boundary.
fn accounts_of(connection: &Connection, start_ns: i64) -> Result<Vec<(AccountRow, u64)>> {
    let mut accounts = Vec::new();
    let mut jobs = connection.prepare_cached(
        "SELECT collector, job, gpu_mj, cpu_mj, dram_mj, remainder_mj, measured_mj, interpolated_mj,
           estimated_mj, gpu_ns, embodied_mg
         FROM window_jobs WHERE start_ns = ?1 ORDER BY collector, job",
    )?;
    let mut rows = jobs.query([start_ns])?;
    while let Some(row) = rows.next()? {
        let mut figures = [0i64; 9];
        for (index, figure) in figures.iter_mut().enumerate() {
            *figure = row.get(index + 2)?;
        }
        let it = figures[..4].iter().sum::<i64>() as u64;
        let account = AccountRow::Job {
            collector: row.get(0)?,
            job: row.get(1)?,
            figures,
        };
        accounts.push((account, it));
    }
    let mut hosts = connection.prepare_cached(
        "SELECT collector, it_mj, host_mj, remainder_mj, remainder_deficit_mj, idle_mj, unattributed_mj,
           measured_mj, interpolated_mj, estimated_mj, idle_embodied_mg
         FROM window_hosts WHERE start_ns = ?1 ORDER BY collector",
    )?;
    let mut rows = hosts.query([start_ns])?;
    while let Some(row) = rows.next()? {
        let collector: i64 = row.get(0)?;
        let mut figures = [0i64; 10];
        for (index, figure) in figures.iter_mut().enumerate() {
            *figure = row.get(index + 1)?;
        }
        let (idle, unattributed) = (figures[4] as u64, figures[5] as u64);
        accounts.push((AccountRow::Idle { collector, figures }, idle));
        accounts.push((AccountRow::Unattributed { collector }, unattributed));
    }
    Ok(accounts)
}

impl AccountRow {
    /// The account the facility is shared over.
    fn account(&self) -> Account {
        match *self {
            Self::Job { collector, job, .. } => Account::Job { collector, job },
            Self::Idle { collector, .. } => Account::Idle { collector },
            Self::Unattributed { collector } => Account::Unattributed { collector },
        }
    }
}

/// The hour's market-based matching, with the PPA energy `ppa_delivered_mj` delivered in it.
fn write_hour(
    connection: &Connection,
    hour_ns: i64,
    matched: &HourMatch,
    ppa_delivered_mj: u64,
) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO site_hours (hour_ns, load_mj, ppa_mj, go_mj, uncovered_mj, go_balance_after_mj,
               uncovered_mg_per_kwh, residual_mix, co2e_market_mg, ppa_delivered_mj)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            hour_ns,
            matched.load_mj as i64,
            matched.ppa_mj as i64,
            matched.go_mj as i64,
            matched.uncovered_mj as i64,
            matched.go_balance_after_mj as i64,
            matched.uncovered_mg_per_kwh.0 as i64,
            i64::from(matched.used_residual_mix),
            matched.market_mg as i64,
            ppa_delivered_mj as i64,
        ])?;
    Ok(())
}

fn write_window(
    connection: &Connection,
    start_ns: i64,
    accounts: &[Account],
    split: &facility::SiteWindow,
    (location, unattributed_location_mg): (&[u64], u64),
    (market, unattributed_market_mg): (&[u64], u64),
    intensity: Option<Intensity>,
) -> Result<()> {
    let mut job_update = connection.prepare_cached(
        "UPDATE window_jobs SET overhead_mj = ?4, water_ml = ?5, co2e_location_mg = ?6, co2e_market_mg = ?7
         WHERE collector = ?1 AND start_ns = ?2 AND job = ?3",
    )?;
    let mut idle_update = connection.prepare_cached(
        "UPDATE window_hosts SET idle_overhead_mj = ?3, idle_water_ml = ?4, idle_co2e_location_mg = ?5, idle_co2e_market_mg = ?6
         WHERE collector = ?1 AND start_ns = ?2",
    )?;
    let mut unattributed_update = connection.prepare_cached(
        "UPDATE window_hosts SET unattributed_overhead_mj = ?3, unattributed_water_ml = ?4,
           unattributed_co2e_location_mg = ?5, unattributed_co2e_market_mg = ?6
         WHERE collector = ?1 AND start_ns = ?2",
    )?;
    for (index, account) in accounts.iter().enumerate() {
        let figures = (
            split.overhead_mj[index] as i64,
            split.water_ml[index] as i64,
            location[index] as i64,
            market[index] as i64,
        );
        match *account {
            Account::Job { collector, job } => job_update.execute(params![
                collector, start_ns, job, figures.0, figures.1, figures.2, figures.3
            ])?,
            Account::Idle { collector } => idle_update.execute(params![
                collector, start_ns, figures.0, figures.1, figures.2, figures.3
            ])?,
            Account::Unattributed { collector } => unattributed_update.execute(params![
                collector, start_ns, figures.0, figures.1, figures.2, figures.3
            ])?,
        };
    }
    let location_total: u64 = location.iter().sum::<u64>() + unattributed_location_mg;
    let market_total: u64 = market.iter().sum::<u64>() + unattributed_market_mg;
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO site_windows (start_ns, facility_mj, it_mj, overhead_source, overhead_deficit_mj,
               unattributed_mj, water_ml, unattributed_water_ml, intensity_mg_per_kwh, intensity_quality,
               co2e_location_mg, unattributed_co2e_location_mg, co2e_market_mg, unattributed_co2e_market_mg)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            start_ns,
            split.facility_mj as i64,
            split.it_mj as i64,
            split.overhead_source as i64,
            split.overhead_deficit_mj as i64,
            split.unattributed_mj(),
            split.site_water_ml as i64,
            split.unattributed_water_ml as i64,
            intensity.map(|i| i.mg_per_kwh.0 as i64),
            intensity.map(|i| quality_code(i.quality)),
            location_total as i64,
            unattributed_location_mg as i64,
            market_total as i64,
            unattributed_market_mg as i64,
        ])?;
    Ok(())
}
