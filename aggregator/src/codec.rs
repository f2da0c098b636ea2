//! How the ledger's tables spell the domain: a reading's step and quality codes, the list columns,
//! and the one classification of meter kinds that every stage goes by.
//!
//! Nothing here reads or writes a database; every other module of the aggregator that stores or
//! reads one of these columns encodes and decodes it here, so a code means the same thing to the
//! writer that stores it and to the builder that reads it back.

use footprint_core::Quality;
use footprint_core::counter::CounterStep;
use footprint_proto::v1::MeterKind;

/// How a meter's counter moved from its previous reading to this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Movement {
    Advanced,
    Wrapped,
    Reset,
}

/// A reading's `step` column: how its counter moved, and what makes its interval less than
/// exact in time. Stored as the movement code `0` advanced, `1` wrapped, `2` reset, with the flag
/// `8` when the interval is longer than `max_sample_gap_s` and `16` when the collector's spool
/// thinned the readings around it (`Batch.compacted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub movement: Movement,
    /// The interval is longer than `max_sample_gap_s`.
    pub gap: bool,
    /// The collector's spool thinned the readings around this one.
    pub compacted: bool,
}

/// The bits of a stored step that say how the counter moved.
const MOVEMENT_MASK: i64 = 7;
const ADVANCED: i64 = 0;
const WRAPPED: i64 = 1;
const RESET: i64 = 2;
const GAP: i64 = 8;
const COMPACTED: i64 = 16;

impl Step {
    /// The step a counter took, flagged by the interval's length and the batch it came in.
    pub fn of(step: &CounterStep, gap: bool, compacted: bool) -> Self {
        let movement = match step {
            CounterStep::Advanced { .. } => Movement::Advanced,
            CounterStep::Wrapped { .. } => Movement::Wrapped,
            CounterStep::Reset { .. } => Movement::Reset,
        };
        Self {
            movement,
            gap,
            compacted,
        }
    }

    /// A plain advance, flagged as given.
    pub fn advanced(gap: bool, compacted: bool) -> Self {
        Self {
            movement: Movement::Advanced,
            gap,
            compacted,
        }
    }

    pub fn encode(self) -> i64 {
        let movement = match self.movement {
            Movement::Advanced => ADVANCED,
            Movement::Wrapped => WRAPPED,
            Movement::Reset => RESET,
        };
        movement | if self.gap { GAP } else { 0 } | if self.compacted { COMPACTED } else { 0 }
    }

    /// The inverse of [`Step::encode`]. A movement code no version wrote reads as a reset: the
    /// most cautious reading (its energy is kept, its place in time is not trusted).
    pub fn decode(code: i64) -> Self {
        let movement = match code & MOVEMENT_MASK {
            ADVANCED => Movement::Advanced,
            WRAPPED => Movement::Wrapped,
            _ => Movement::Reset,
        };
        Self {
            movement,
            gap: code & GAP != 0,
            compacted: code & COMPACTED != 0,
        }
    }

    /// The quality of the interval this step closes, given the reading's own. A gap, a reset or
    /// a spool compaction: the energy is exact but its place in time is not.
    pub fn interval_quality(self, reading: Quality) -> Quality {
        if self.gap || self.compacted || self.movement == Movement::Reset {
            reading.worst(Quality::Interpolated)
        } else {
            reading
        }
    }
}

/// How a quality is stored (`readings.quality`, `intensity_hours.quality`, …).
pub fn quality_code(quality: Quality) -> i32 {
    match quality {
        Quality::Measured => 1,
        Quality::Interpolated => 2,
        Quality::Estimated => 3,
    }
}

/// The inverse of [`quality_code`]; a code no version wrote reads as measured, as before schema 3
/// mended the codes (`schema::MIGRATIONS`).
pub fn quality_from_code(code: i32) -> Quality {
    match code {
        2 => Quality::Interpolated,
        3 => Quality::Estimated,
        _ => Quality::Measured,
    }
}

/// Comma-separated list, the form device and CPU lists are stored in.
pub fn join_list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Inverse of [`join_list`] for strings.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Inverse of [`join_list`] for CPU numbers; unparsable items are skipped (they were written by
/// [`join_list`] from `u32`s, so there are none).
pub fn split_cpus(text: &str) -> Vec<u32> {
    text.split(',').filter_map(|s| s.parse().ok()).collect()
}

/// What a host's energy meter measures, which decides what its energy is shared among.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostComponent {
    /// One GPU (its `device`).
    Gpu,
    /// One CPU package (its `cpus`).
    CpuPackage,
    /// The DRAM of one package (its `cpus`).
    Dram,
    /// The whole host: a PDU outlet feeding it, or its BMC.
    WholeHost,
}

/// What a meter's readings are for: the one classification of [`MeterKind`]s that the writer,
/// the window builder and the site stage all go by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeterRole {
    /// Energy the host's windows share out. The slowest such meter of a host decides which of
    /// its windows are ready, and the site's hours wait for every host that has one.
    HostEnergy(HostComponent),
    /// What a job used (CPU time, GPU busy time), to split a shared meter by.
    Usage,
    /// The facility's utility meter, read by the site's hours.
    SiteEnergy,
    /// The facility's water meter, read by the site's hours.
    SiteWater,
    /// Stored for inspection and reconciliation, never attributed (RAPL core and uncore, which
    /// are parts of their package; a PDU's energy that is not this host's own).
    InspectedOnly,
    /// Not a kind any meter may be announced as.
    Unspecified,
}

impl MeterRole {
    /// The role of a meter of `kind`. A new kind must be placed here before anything compiles.
    pub fn of(kind: MeterKind) -> Self {
        match kind {
            MeterKind::GpuEnergy => Self::HostEnergy(HostComponent::Gpu),
            MeterKind::CpuPackageEnergy => Self::HostEnergy(HostComponent::CpuPackage),
            MeterKind::DramEnergy => Self::HostEnergy(HostComponent::Dram),
            MeterKind::OutletEnergy | MeterKind::HostEnergy => {
                Self::HostEnergy(HostComponent::WholeHost)
            }
            MeterKind::JobCpuTime | MeterKind::GpuJobBusy => Self::Usage,
            MeterKind::SiteEnergy => Self::SiteEnergy,
            MeterKind::SiteWater => Self::SiteWater,
            MeterKind::CpuCoreEnergy | MeterKind::CpuUncoreEnergy | MeterKind::PduEnergy => {
                Self::InspectedOnly
            }
            MeterKind::Unspecified => Self::Unspecified,
        }
    }

    /// The role of a stored kind code; codes no version knows are [`MeterRole::Unspecified`].
    pub fn of_code(code: i32) -> Self {
        MeterKind::try_from(code).map_or(Self::Unspecified, Self::of)
    }

    pub fn is_host_energy(self) -> bool {
        matches!(self, Self::HostEnergy(_))
    }

    /// Readings of such a meter feed the host's windows (energy they share or usage that splits
    /// it): such data before where they are built means rebuilding them.
    pub fn feeds_windows(self) -> bool {
        matches!(self, Self::HostEnergy(_) | Self::Usage)
    }

    /// A site meter: read by the site's hours, not by any host's windows.
    pub fn is_site(self) -> bool {
        matches!(self, Self::SiteEnergy | Self::SiteWater)
    }
}

/// Every kind code of the wire protocol whose role satisfies `pred`, as an SQL list (`1,2,3`),
/// for queries that select meters by role.
pub fn kind_codes_where(pred: impl Fn(MeterRole) -> bool) -> String {
    let codes: Vec<i32> = (0..=i32::from(u8::MAX))
        .filter(|code| MeterKind::try_from(*code).is_ok_and(|kind| pred(MeterRole::of(kind))))
        .collect();
    join_list(&codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_reads_back_as_written() {
        for movement in [Movement::Advanced, Movement::Wrapped, Movement::Reset] {
            for gap in [false, true] {
                for compacted in [false, true] {
                    let step = Step {
                        movement,
                        gap,
                        compacted,
                    };
                    assert_eq!(Step::decode(step.encode()), step);
                }
            }
        }
    }

    #[test]
    fn step_codes_are_the_ones_ledgers_hold() {
        // Ledgers on disk hold these numbers: they may never change.
        assert_eq!(Step::advanced(false, false).encode(), 0);
        assert_eq!(Step::decode(1).movement, Movement::Wrapped);
        assert_eq!(Step::decode(2).movement, Movement::Reset);
        assert_eq!(Step::advanced(true, false).encode(), 8);
        assert_eq!(Step::advanced(false, true).encode(), 16);
        assert_eq!(Step::decode(2 | 8 | 16), Step::decode(26));
    }

    #[test]
    fn quality_codes_read_back_and_are_the_stored_ones() {
        for (quality, code) in [
            (Quality::Measured, 1),
            (Quality::Interpolated, 2),
            (Quality::Estimated, 3),
        ] {
            assert_eq!(quality_code(quality), code);
            assert_eq!(quality_from_code(code), quality);
        }
    }

    #[test]
    fn only_a_gap_a_reset_or_a_compaction_makes_an_interval_interpolated() {
        let measured = |code| Step::decode(code).interval_quality(Quality::Measured);
        assert_eq!(measured(0), Quality::Measured);
        assert_eq!(measured(1), Quality::Measured);
        for code in [2, 8, 16, 1 | 8] {
            assert_eq!(measured(code), Quality::Interpolated, "step {code}");
        }
        assert_eq!(
            Step::decode(8).interval_quality(Quality::Estimated),
            Quality::Estimated
        );
    }

    #[test]
    fn every_whole_host_meter_holds_windows_and_the_site_back() {
        for kind in [MeterKind::OutletEnergy, MeterKind::HostEnergy] {
            assert_eq!(
                MeterRole::of(kind),
                MeterRole::HostEnergy(HostComponent::WholeHost)
            );
        }
        let host_energy = kind_codes_where(MeterRole::is_host_energy);
        assert_eq!(host_energy, "1,2,3,4,5");
        assert_eq!(kind_codes_where(MeterRole::is_site), "6,7");
        assert_eq!(MeterRole::of_code(99), MeterRole::Unspecified);
    }

    #[test]
    fn lists_read_back() {
        assert_eq!(split_cpus(&join_list(&[3_u32, 0, 17])), vec![3, 0, 17]);
        assert_eq!(
            split_list(&join_list(&["gpu0", "gpu1"])),
            vec!["gpu0", "gpu1"]
        );
        assert!(split_list("").is_empty());
    }
}
