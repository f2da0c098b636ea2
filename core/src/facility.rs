//! The facility's share of every account: overhead energy from the site meter (the window's
//! measured PUE), water from the site water meter (the window's WUE), location-based and
//! market-based carbon, and embodied carbon.
//!
//! An *account* is whatever the host stage produced for one window: a job on a host, a host's
//! idle share or a host's unattributed share. Each carries its host-level energy (components +
//! host remainder). The rules, all exact in integers:
//! - **Overhead** = site meter − Σ accounts, split in proportion to each account's energy. A site
//!   meter that reads *below* the IT meters gives no negative shares: the difference is kept as
//!   [`SiteWindow::overhead_deficit_mj`], a data-quality finding. Without a site meter, an
//!   assumed PUE may stand in (estimated), else there is no overhead.
//! - **Water** = the site water meter's delta, split by account energy (IT energy drives cooling).
//! - **Carbon**, location-based (the hour's facility energy × its grid intensity) and
//!   market-based ([`match_hour`]), is priced once per hour and shared the same way
//!   ([`share_hour`]): over the hour's windows, then each window's accounts, by facility energy
//!   (energy + overhead).
//!
//! Σ accounts + unattributed = site, for each quantity, is property-tested below.

use crate::apportion::CarriedApportioner;
use crate::quality::Quality;
use crate::units::{MgCo2ePerKwh, Millijoules, Millilitres, Span};

/// Grid carbon intensity, and how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    pub mg_per_kwh: MgCo2ePerKwh,
    pub quality: Quality,
}

/// What the site meters said about one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteMeters {
    /// The facility energy meter's delta in the window, if the site has one.
    pub energy: Option<Millijoules>,
    /// The water meter's delta in the window, if the site has one.
    pub water: Option<Millilitres>,
    /// PUE assumed when there is no energy meter, in parts per million (1.3 → 1 300 000).
    pub assumed_pue_ppm: Option<u64>,
}

/// How a window's overhead was obtained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverheadSource {
    /// No site meter and no assumed PUE: facility energy is the IT energy.
    #[default]
    None,
    /// The site meter minus IT energy: the window's measured PUE.
    SiteMeter,
    /// The configured PUE (estimated).
    AssumedPue,
}

/// One window of the site, split over its accounts (indices match the input).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteWindow {
    pub overhead_source: OverheadSource,
    /// The facility's energy: the site meter's reading, else IT × assumed PUE, else IT.
    pub facility_mj: u64,
    pub it_mj: u64,
    pub overhead_mj: Vec<u64>,
    /// How far the site meter read below the IT meters (a finding); 0 normally.
    pub overhead_deficit_mj: u64,
    pub water_ml: Vec<u64>,
    /// Water that could not be placed because no IT energy was counted in the window.
    pub unattributed_water_ml: u64,
    pub site_water_ml: u64,
}

/// Rounding carried from window to window for each split (see [`CarriedApportioner`]): keep one
/// per run of consecutive windows, e.g. per hour settled.
#[derive(Clone, Debug)]
pub struct SiteCarry<K: Ord + Clone> {
    overhead: CarriedApportioner<K>,
    water: CarriedApportioner<K>,
}

impl<K: Ord + Clone> Default for SiteCarry<K> {
    fn default() -> Self {
        Self {
            overhead: CarriedApportioner::new(),
            water: CarriedApportioner::new(),
        }
    }
}

/// Splits one window's facility overhead and water over `accounts` (each account's key and
/// host-level energy).
pub fn split_site_window<K: Ord + Clone>(
    accounts: &[(K, u64)],
    meters: &SiteMeters,
    carry: &mut SiteCarry<K>,
) -> SiteWindow {
    let accounts_mj: Vec<u64> = accounts.iter().map(|(_, mj)| *mj).collect();
    let it_mj: u64 = accounts_mj.iter().sum();
    let mut window = SiteWindow {
        it_mj,
        overhead_mj: vec![0; accounts_mj.len()],
        water_ml: vec![0; accounts_mj.len()],
        ..SiteWindow::default()
    };
    let facility_mj = match (meters.energy, meters.assumed_pue_ppm) {
        (Some(site), _) => {
            window.overhead_source = OverheadSource::SiteMeter;
            site.0
        }
        (None, Some(pue_ppm)) => {
            window.overhead_source = OverheadSource::AssumedPue;
            let wide = u128::from(it_mj) * u128::from(pue_ppm.max(1_000_000));
            u64::try_from((wide + 500_000) / 1_000_000).unwrap_or(u64::MAX)
        }
        (None, None) => it_mj,
    };
    window.facility_mj = facility_mj;
    if facility_mj < it_mj {
        window.overhead_deficit_mj = it_mj - facility_mj;
    } else if let Some(parts) = carry.overhead.apportion(facility_mj - it_mj, accounts) {
        window.overhead_mj = parts;
    }
    // With no IT energy at all, overhead has nobody to go to; it stays in facility − Σ shares.
    if let Some(Millilitres(water)) = meters.water {
        window.site_water_ml = water;
        match carry.water.apportion(water, accounts) {
            Some(parts) => window.water_ml = parts,
            None => window.unattributed_water_ml = water,
        }
    }
    window
}

/// Shares an hour's carbon `total_mg` over its `windows` (each its facility energy and its
/// accounts with theirs) by facility energy — all to the first window when none has any — then
/// each window's part over its accounts by facility energy, the rounding carried from window to
/// window. Per window: each account's share, and what no account could take (a window without
/// accounts). Both carbon methods go through it, so equal hour totals give equal shares.
pub fn share_hour<K: Ord + Clone>(
    total_mg: u64,
    windows: &[(u64, &[(K, u64)])],
) -> Vec<(Vec<u64>, u64)> {
    let per_window: Vec<u64> = windows
        .iter()
        .map(|(facility_mj, _)| *facility_mj)
        .collect();
    let by_window = crate::apportion::apportion(total_mg, &per_window).unwrap_or_else(|| {
        let mut first_only = vec![0; windows.len()];
        if let Some(first) = first_only.first_mut() {
            *first = total_mg;
        }
        first_only
    });
    let mut carry = CarriedApportioner::new();
    windows
        .iter()
        .zip(by_window)
        .map(|((_, accounts), mg)| match carry.apportion(mg, accounts) {
            Some(parts) => (parts, 0),
            None => (vec![0; accounts.len()], mg),
        })
        .collect()
}

impl SiteWindow {
    /// Facility energy no account received: overhead with nobody to carry it (no IT energy),
    /// minus the deficit when the site meter read low. Σ accounts' energy + overhead + this =
    /// facility energy.
    pub fn unattributed_mj(&self) -> i64 {
        let shared: u64 = self.overhead_mj.iter().sum();
        self.facility_mj as i64 - self.it_mj as i64 - shared as i64
    }
}

/// Carbon-free supply contracted for the site, and the factor for what it does not cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarketInstruments {
    /// PPA energy delivered in this hour (hourly matching: only this hour's load can use it).
    pub ppa_mj: u64,
    /// Guarantees of origin accrued in this hour (annual volume spread evenly over the year's
    /// hours; what an hour does not use carries forward within the year).
    pub go_accrual_mj: u64,
    /// Residual-mix factor for energy no instrument covers; `None` uses the grid average.
    pub residual_mg_per_kwh: Option<MgCo2ePerKwh>,
}

/// One hour of the site, matched against its instruments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HourMatch {
    pub load_mj: u64,
    pub ppa_mj: u64,
    pub go_mj: u64,
    pub uncovered_mj: u64,
    /// Guarantees of origin left for later hours of the year.
    pub go_balance_after_mj: u64,
    pub market_mg: u64,
    /// The factor applied to the uncovered energy, and whether it is the residual mix.
    pub uncovered_mg_per_kwh: MgCo2ePerKwh,
    pub used_residual_mix: bool,
}

impl HourMatch {
    /// The hour's carbon-free energy score: PPA-covered share of the load, in parts per million.
    pub fn cfe_ppm(&self) -> u64 {
        if self.load_mj == 0 {
            return 1_000_000;
        }
        (u128::from(self.ppa_mj) * 1_000_000 / u128::from(self.load_mj)) as u64
    }
}

/// Market-based matching of one hour: PPA supply first (same hour only), then guarantees of
/// origin from the running balance, then the residual mix (else the grid average) for the rest.
pub fn match_hour(
    load: Millijoules,
    instruments: &MarketInstruments,
    go_balance_before: Millijoules,
    grid: Option<Intensity>,
) -> HourMatch {
    let (load_mj, go_balance_before_mj) = (load.0, go_balance_before.0);
    let ppa_mj = load_mj.min(instruments.ppa_mj);
    let balance = go_balance_before_mj.saturating_add(instruments.go_accrual_mj);
    let go_mj = (load_mj - ppa_mj).min(balance);
    let uncovered_mj = load_mj - ppa_mj - go_mj;
    let (factor, used_residual_mix) = match (instruments.residual_mg_per_kwh, grid) {
        (Some(residual), _) => (residual, true),
        (None, Some(grid)) => (grid.mg_per_kwh, false),
        (None, None) => (MgCo2ePerKwh(0), false),
    };
    HourMatch {
        load_mj,
        ppa_mj,
        go_mj,
        uncovered_mj,
        go_balance_after_mj: balance - go_mj,
        market_mg: factor.carbon_of(Millijoules(uncovered_mj)).0,
        uncovered_mg_per_kwh: factor,
        used_residual_mix,
    }
}

/// The part of `total` that accrues in `[start, end)` when it accrues evenly over
/// `[origin, origin + period)`: telescoping, so consecutive spans add up to exactly `total` over a
/// period (used for embodied carbon over a lifetime and for guarantees of origin over a year).
pub fn accrued_in(total: u64, origin_ns: i64, period_ns: u64, span: Span) -> u64 {
    if period_ns == 0 {
        return 0;
    }
    let cumulative = |at: i64| -> u128 {
        let elapsed = (i128::from(at) - i128::from(origin_ns)).clamp(0, i128::from(period_ns));
        u128::from(total) * elapsed as u128 / u128::from(period_ns)
    };
    (cumulative(span.end.0) - cumulative(span.start.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::UnixNanos;
    use proptest::prelude::*;

    #[test]
    fn overhead_follows_the_window_pue() {
        // IT 3 000 mJ in two accounts, site meter 4 500 mJ: PUE 1.5.
        let window = split_site_window(
            &[(0, 1_000), (1, 2_000)],
            &SiteMeters {
                energy: Some(Millijoules(4_500)),
                water: Some(Millilitres(30)),
                assumed_pue_ppm: None,
            },
            &mut SiteCarry::default(),
        );
        assert_eq!(window.overhead_mj, vec![500, 1_000]);
        assert_eq!(window.water_ml, vec![10, 20]);
        assert_eq!(window.unattributed_mj(), 0);
    }

    #[test]
    fn a_site_meter_below_it_is_a_deficit() {
        let window = split_site_window(
            &[(0, 1_000)],
            &SiteMeters {
                energy: Some(Millijoules(900)),
                ..SiteMeters::default()
            },
            &mut SiteCarry::default(),
        );
        assert_eq!(window.overhead_deficit_mj, 100);
        assert_eq!(window.overhead_mj, vec![0]);
        assert_eq!(window.unattributed_mj(), -100);
    }

    #[test]
    fn ppa_then_guarantees_then_residual() {
        let instruments = MarketInstruments {
            ppa_mj: 1_000,
            go_accrual_mj: 500,
            residual_mg_per_kwh: Some(MgCo2ePerKwh(3_600_000_000)),
        };
        let hour = match_hour(Millijoules(2_000), &instruments, Millijoules(200), None);
        assert_eq!(
            (hour.ppa_mj, hour.go_mj, hour.uncovered_mj),
            (1_000, 700, 300)
        );
        assert_eq!(hour.go_balance_after_mj, 0);
        assert_eq!(hour.market_mg, 300);
        assert_eq!(hour.cfe_ppm(), 500_000);
        // Surplus PPA supply does not carry over; surplus guarantees do.
        let light = match_hour(Millijoules(100), &instruments, Millijoules(0), None);
        assert_eq!((light.ppa_mj, light.go_mj, light.market_mg), (100, 0, 0));
        assert_eq!(light.go_balance_after_mj, 500);
    }

    proptest! {
        #[test]
        fn site_split_conserves_every_quantity(
            accounts in prop::collection::vec(0u64..1u64 << 40, 0..12),
            site in prop::option::of(0u64..1u64 << 44),
            water in prop::option::of(0u64..1u64 << 30),
            pue in prop::option::of(1_000_000u64..3_000_000),
        ) {
            let meters = SiteMeters { energy: site.map(Millijoules), water: water.map(Millilitres), assumed_pue_ppm: pue };
            let keyed: Vec<(usize, u64)> = accounts.iter().copied().enumerate().collect();
            let window = split_site_window(
                &keyed,
                &meters,
                &mut SiteCarry::default(),
            );
            let it: u64 = accounts.iter().sum();
            let overhead: u64 = window.overhead_mj.iter().sum();
            prop_assert_eq!(
                i128::from(it) + i128::from(overhead) + i128::from(window.unattributed_mj()),
                i128::from(window.facility_mj)
            );
            if let Some(site) = site {
                prop_assert_eq!(window.facility_mj, site);
            }
            let water_sum: u64 = window.water_ml.iter().sum();
            prop_assert_eq!(water_sum + window.unattributed_water_ml, water.unwrap_or(0));
            prop_assert!(window.overhead_deficit_mj == 0 || overhead == 0);
        }

        #[test]
        fn an_hours_carbon_is_shared_exactly(
            total in 0u64..1u64 << 40,
            windows in prop::collection::vec(
                (0u64..1u64 << 30, prop::collection::vec(0u64..1u64 << 30, 0..5)),
                0..8,
            ),
        ) {
            let keyed: Vec<(u64, Vec<(usize, u64)>)> = windows
                .iter()
                .map(|(mj, accounts)| (*mj, accounts.iter().copied().enumerate().collect()))
                .collect();
            let borrowed: Vec<(u64, &[(usize, u64)])> =
                keyed.iter().map(|(mj, accounts)| (*mj, accounts.as_slice())).collect();
            let shares = share_hour(total, &borrowed);
            prop_assert_eq!(shares.len(), windows.len());
            let shared: u64 = shares.iter().map(|(parts, rest)| parts.iter().sum::<u64>() + rest).sum();
            prop_assert_eq!(shared, if windows.is_empty() { 0 } else { total });
            for ((parts, _), (_, accounts)) in shares.iter().zip(&windows) {
                prop_assert_eq!(parts.len(), accounts.len());
            }
        }

        #[test]
        fn hourly_matching_covers_the_load_exactly(
            load in 0u64..1u64 << 42,
            ppa in 0u64..1u64 << 42,
            accrual in 0u64..1u64 << 40,
            balance in 0u64..1u64 << 41,
        ) {
            let instruments = MarketInstruments { ppa_mj: ppa, go_accrual_mj: accrual, residual_mg_per_kwh: Some(MgCo2ePerKwh(500_000)) };
            let hour = match_hour(Millijoules(load), &instruments, Millijoules(balance), None);
            prop_assert_eq!(hour.ppa_mj + hour.go_mj + hour.uncovered_mj, load);
            prop_assert_eq!(hour.go_balance_after_mj + hour.go_mj, balance + accrual);
            prop_assert!(hour.ppa_mj <= ppa);
        }

        #[test]
        fn accrual_telescopes_over_any_cut(
            total in 0u64..1u64 << 50,
            period in 1u64..1u64 << 50,
            cuts in prop::collection::btree_set(-(1i64 << 40)..(1i64 << 51), 1..20),
        ) {
            let cuts: Vec<i64> = cuts.into_iter().collect();
            let sum: u64 = cuts
                .windows(2)
                .map(|pair| accrued_in(total, 0, period, Span::new(UnixNanos(pair[0]), UnixNanos(pair[1]))))
                .sum();
            let whole = accrued_in(total, 0, period, Span::new(UnixNanos(cuts[0]), UnixNanos(*cuts.last().unwrap_or(&cuts[0]))));
            prop_assert_eq!(sum, whole);
            let all = accrued_in(total, 0, period, Span::new(UnixNanos(-1), UnixNanos(period as i64 + 1)));
            prop_assert_eq!(all, total);
        }
    }
}
