//! What the writer accepts, decided without a database: a meter announcement, a reading against
//! its meter's previous one (or between two stored ones), an allocation. Each refusal is a
//! [`Refused`]: the field at fault, a [`Reason`] whose code labels the metrics, and the detail
//! an operator reads in the ack.

use footprint_core::counter::{self, CounterError, CounterLimits, CounterSample, CounterStep};
use footprint_core::{Quality, UnixNanos};
use footprint_proto::v1::{Allocation, Job, MeterInfo, MeterKind, Reading};

use crate::codec::{Movement, Step};
use crate::config::PowerLimits;
use crate::limits::MAX_TEXT_BYTES;

/// The detail of a text field over [`MAX_TEXT_BYTES`].
pub fn too_long(text: &str) -> String {
    format!(
        "{} bytes is over the limit of {MAX_TEXT_BYTES} bytes",
        text.len()
    )
}

/// Why an item was refused; [`Reason::code`] labels the `*_rejected_total` metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadMeter,
    UnknownMeter,
    BadQuality,
    FutureTimestamp,
    NotAfterPrevious,
    AboveMaximum,
    WentBackwards,
    ImplausibleRate,
    ConflictingReading,
    OutOfOrderAcrossReset,
    OutOfOrderInconsistent,
    MissingJob,
    BadTime,
    UnknownDevice,
    BadValue,
    /// The database refused to store the item.
    Storage,
}

impl Reason {
    /// Every reason, for counters that start at zero.
    pub const ALL: [Self; 16] = [
        Self::BadMeter,
        Self::UnknownMeter,
        Self::BadQuality,
        Self::FutureTimestamp,
        Self::NotAfterPrevious,
        Self::AboveMaximum,
        Self::WentBackwards,
        Self::ImplausibleRate,
        Self::ConflictingReading,
        Self::OutOfOrderAcrossReset,
        Self::OutOfOrderInconsistent,
        Self::MissingJob,
        Self::BadTime,
        Self::UnknownDevice,
        Self::BadValue,
        Self::Storage,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::BadMeter => "bad_meter",
            Self::UnknownMeter => "unknown_meter",
            Self::BadQuality => "bad_quality",
            Self::FutureTimestamp => "future_timestamp",
            Self::NotAfterPrevious => "not_after_previous",
            Self::AboveMaximum => "above_maximum",
            Self::WentBackwards => "went_backwards",
            Self::ImplausibleRate => "implausible_rate",
            Self::ConflictingReading => "conflicting_reading",
            Self::OutOfOrderAcrossReset => "out_of_order_across_reset",
            Self::OutOfOrderInconsistent => "out_of_order_inconsistent",
            Self::MissingJob => "missing_job",
            Self::BadTime => "bad_time",
            Self::UnknownDevice => "unknown_device",
            Self::BadValue => "bad_value",
            Self::Storage => "storage",
        }
    }
}

/// A refusal of one item: the field at fault inside it (`value`, `mig[].slices`), why, and the
/// detail for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub field: &'static str,
    pub reason: Reason,
    pub detail: String,
}

impl Refused {
    fn new(field: &'static str, reason: Reason, detail: String) -> Self {
        Self {
            field,
            reason,
            detail,
        }
    }
}

impl From<CounterError> for Refused {
    fn from(error: CounterError) -> Self {
        let reason = match error {
            CounterError::NotAfterPrevious { .. } => Reason::NotAfterPrevious,
            CounterError::AboveMaximum { .. } => Reason::AboveMaximum,
            CounterError::WentBackwards { .. } => Reason::WentBackwards,
            CounterError::ImplausibleRate { .. } => Reason::ImplausibleRate,
        };
        Self::new(error.field(), reason, error.to_string())
    }
}

/// Which list of a batch an item is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Meter,
    Reading,
    Allocation,
}

/// A refused item of a batch, as its ack reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub item: Item,
    pub index: usize,
    /// The meter it is about, if any (a reading's id may not be UTF-8: shown lossily).
    pub meter_id: String,
    pub refused: Refused,
}

impl Rejected {
    pub fn new(item: Item, index: usize, meter_id: impl AsRef<[u8]>, refused: Refused) -> Self {
        Self {
            item,
            index,
            meter_id: String::from_utf8_lossy(meter_id.as_ref()).into_owned(),
            refused,
        }
    }

    /// Where in the batch: `readings[3].value`, `allocations[0].mig[].slices`.
    pub fn path(&self) -> String {
        let list = match self.item {
            Item::Meter => "meters",
            Item::Reading => "readings",
            Item::Allocation => "allocations",
        };
        format!("{list}[{}].{}", self.index, self.refused.field)
    }
}

/// Why a meter announcement cannot be registered. `is_gpu` tells whether a device has a GPU
/// energy meter on the same collector.
///
/// # Errors
/// The field at fault, always with [`Reason::BadMeter`].
pub fn check_meter(meter: &MeterInfo, is_gpu: impl Fn(&str) -> bool) -> Result<(), Refused> {
    let bad = |field, detail| Err(Refused::new(field, Reason::BadMeter, detail));
    if meter.meter_id.trim().is_empty() {
        return bad("meter_id", "must not be empty".into());
    }
    for (field, text) in [
        ("meter_id", &meter.meter_id),
        ("device", &meter.device),
        ("method", &meter.method),
        ("model", &meter.model),
        ("job", &meter.job),
    ] {
        if text.len() > MAX_TEXT_BYTES {
            return bad(field, too_long(text));
        }
    }
    let kind = MeterKind::try_from(meter.kind);
    if matches!(kind, Err(_) | Ok(MeterKind::Unspecified)) {
        return bad("kind", format!("{} is not a known meter kind", meter.kind));
    }
    if matches!(kind, Ok(MeterKind::JobCpuTime | MeterKind::GpuJobBusy))
        && meter.job.trim().is_empty()
    {
        return bad("job", "a usage meter must name its job".into());
    }
    if meter.counter_max != 0 && meter.resolution > meter.counter_max {
        return bad(
            "resolution",
            format!(
                "{} is more than the counter's range (counter_max {})",
                meter.resolution, meter.counter_max
            ),
        );
    }
    if kind == Ok(MeterKind::GpuJobBusy) && !is_gpu(&meter.device) {
        return bad(
            "device",
            format!(
                "{:?} is not the device of any GPU meter announced",
                meter.device
            ),
        );
    }
    Ok(())
}

/// Most logical CPUs a host may have, for the plausibility of a job's CPU-time counter.
const MAX_CORES: u64 = 4_096;

/// The counter limits of a meter of `kind`: its range, its resolution, and the fastest it may
/// plausibly grow (from the configured power limits).
pub fn limits_for(
    kind: MeterKind,
    counter_max: u64,
    resolution: u64,
    limits: &PowerLimits,
) -> CounterLimits {
    // mJ per second is mW: W × 1000.
    let max_rate_per_second = match kind {
        MeterKind::GpuEnergy => limits.gpu_w * 1_000,
        MeterKind::CpuPackageEnergy | MeterKind::CpuCoreEnergy | MeterKind::CpuUncoreEnergy => {
            limits.cpu_package_w * 1_000
        }
        MeterKind::DramEnergy => limits.dram_w * 1_000,
        MeterKind::OutletEnergy | MeterKind::HostEnergy => limits.host_w * 1_000,
        MeterKind::PduEnergy => limits.pdu_w.saturating_mul(1_000),
        MeterKind::SiteEnergy => limits.site_w.saturating_mul(1_000),
        MeterKind::SiteWater => limits.site_water_ml_per_s,
        // CPU time: every core of a large host busy; GPU busy time: the GPU busy all the time.
        MeterKind::JobCpuTime => MAX_CORES * 1_000_000_000,
        MeterKind::GpuJobBusy => 1_000_000_000,
        MeterKind::Unspecified => 0,
    };
    CounterLimits {
        max_value: if counter_max == 0 {
            u64::MAX
        } else {
            counter_max
        },
        max_rate_per_second,
        resolution,
    }
}

/// The reading's quality.
///
/// # Errors
/// [`Reason::BadQuality`] for anything but measured, interpolated or estimated.
pub fn reading_quality(reading: &Reading) -> Result<Quality, Refused> {
    use footprint_proto::v1::Quality as Wire;
    match Wire::try_from(reading.quality) {
        Ok(Wire::Measured) => Ok(Quality::Measured),
        Ok(Wire::Interpolated) => Ok(Quality::Interpolated),
        Ok(Wire::Estimated) => Ok(Quality::Estimated),
        Ok(Wire::Unspecified) | Err(_) => Err(Refused::new(
            "quality",
            Reason::BadQuality,
            format!(
                "{} is not measured, interpolated or estimated",
                reading.quality
            ),
        )),
    }
}

/// A reading that may follow its meter's last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextReading {
    pub sample: CounterSample,
    pub quality: Quality,
    /// When the meter had a reading before: its time and how the counter moved since.
    pub moved: Option<(i64, CounterStep)>,
}

/// Checks a reading after its meter's `last` one (none for its first): the clock, the counter's
/// range, and a plausible step.
///
/// # Errors
/// The field at fault; the meter's baseline stays `last`.
pub fn check_next(
    last: Option<CounterSample>,
    limits: CounterLimits,
    reading: &Reading,
    now: i64,
    max_future_ns: i64,
) -> Result<NextReading, Refused> {
    let quality = reading_quality(reading)?;
    if reading.timestamp_ns > now.saturating_add(max_future_ns) {
        return Err(Refused::new(
            "timestamp_ns",
            Reason::FutureTimestamp,
            format!(
                "{} is more than {} s ahead of the aggregator's clock",
                reading.timestamp_ns,
                max_future_ns / 1_000_000_000
            ),
        ));
    }
    let sample = CounterSample {
        value: reading.value,
        at: UnixNanos(reading.timestamp_ns),
    };
    let moved = match last {
        None if sample.value > limits.max_value => {
            return Err(Refused::new(
                "value",
                Reason::AboveMaximum,
                format!(
                    "{} is above the counter's maximum {}",
                    sample.value, limits.max_value
                ),
            ));
        }
        None => None,
        Some(previous) => Some((previous.at.0, counter::step(previous, sample, limits)?)),
    };
    Ok(NextReading {
        sample,
        quality,
        moved,
    })
}

/// Where a reading older than its meter's last one goes among the stored ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The same value is stored at that time already: nothing to do.
    Stored,
    /// It splits the advance from `previous` (if any) to `next`: `before` of the delta falls
    /// before it, `after` after it.
    Between { before: Option<u64>, after: u64 },
}

/// Places `sample` between the stored `previous` reading (if any) and the stored `next` one (at
/// or after it), which moved by `next_step` from the reading before it.
///
/// # Errors
/// A stored reading at the same time with another value, an interval where the counter wrapped
/// or reset (the split would be a guess), or a value that does not lie between its neighbours.
pub fn place_between(
    previous: Option<CounterSample>,
    sample: CounterSample,
    next: CounterSample,
    next_step: Option<Step>,
    limits: CounterLimits,
) -> Result<Placement, Refused> {
    let at = sample.at.0;
    if next.at == sample.at {
        if next.value == sample.value {
            return Ok(Placement::Stored);
        }
        return Err(Refused::new(
            "value",
            Reason::ConflictingReading,
            format!(
                "{} differs from the value {} stored for this meter at {at}",
                sample.value, next.value
            ),
        ));
    }
    let around = || match previous {
        Some(p) => format!(
            "the stored readings around it ({} at {}, {} at {})",
            p.value, p.at.0, next.value, next.at.0
        ),
        None => format!(
            "the stored reading after it ({} at {})",
            next.value, next.at.0
        ),
    };
    if next_step.is_some_and(|s| s.movement != Movement::Advanced) {
        return Err(Refused::new(
            "timestamp_ns",
            Reason::OutOfOrderAcrossReset,
            format!(
                "{at} falls inside an interval where the counter wrapped or reset; {}",
                around()
            ),
        ));
    }
    let advance = |from: CounterSample, to: CounterSample| match counter::step(from, to, limits) {
        Ok(CounterStep::Advanced { delta }) => Ok(delta),
        Ok(_) => Err(Refused::new(
            "value",
            Reason::OutOfOrderInconsistent,
            format!("{} does not lie between {}", sample.value, around()),
        )),
        Err(error) => Err(Refused::from(error)),
    };
    let before = previous.map(|p| advance(p, sample)).transpose()?;
    let after = advance(sample, next)?;
    Ok(Placement::Between { before, after })
}

/// An allocation that may be stored: its job, and what it holds in the stored spelling.
#[derive(Debug)]
pub struct CheckedAllocation<'a> {
    pub job: &'a Job,
    /// Sorted, without repeats.
    pub cpus: Vec<u32>,
    /// `device:slices` per MIG instance.
    pub mig: Vec<String>,
    pub end_ns: Option<i64>,
}

/// Checks an allocation: a job with an id, plausible times, and only devices that `is_gpu`
/// knows as the collector's GPUs.
///
/// # Errors
/// The field at fault.
pub fn check_allocation<'a>(
    allocation: &'a Allocation,
    now: i64,
    max_future_ns: i64,
    is_gpu: impl Fn(&str) -> bool,
) -> Result<CheckedAllocation<'a>, Refused> {
    let Some(job) = allocation.job.as_ref().filter(|j| !j.id.trim().is_empty()) else {
        return Err(Refused::new(
            "job.id",
            Reason::MissingJob,
            "an allocation needs a job with an id".into(),
        ));
    };
    if let Some((field, text)) = crate::limits::long_text_in_allocation(allocation) {
        return Err(Refused::new(field, Reason::BadValue, too_long(text)));
    }
    if allocation.start_ns <= 0 || allocation.start_ns > now.saturating_add(max_future_ns) {
        return Err(Refused::new(
            "start_ns",
            Reason::BadTime,
            format!("{} is not a plausible start", allocation.start_ns),
        ));
    }
    if allocation.end_ns != 0 && allocation.end_ns <= allocation.start_ns {
        return Err(Refused::new(
            "end_ns",
            Reason::BadTime,
            format!(
                "{} is not after start_ns {}",
                allocation.end_ns, allocation.start_ns
            ),
        ));
    }
    let not_a_gpu = |field, device: &str| {
        Refused::new(
            field,
            Reason::UnknownDevice,
            format!("{device:?} is not the device of any GPU meter of this collector"),
        )
    };
    if let Some(gpu) = allocation.gpus.iter().find(|gpu| !is_gpu(gpu)) {
        return Err(not_a_gpu("gpus", gpu));
    }
    let mut mig = Vec::with_capacity(allocation.mig.len());
    for instance in &allocation.mig {
        if !is_gpu(&instance.device) {
            return Err(not_a_gpu("mig[].device", &instance.device));
        }
        if !(1..=footprint_core::attribution::MIG_COMPUTE_SLICES).contains(&instance.slices) {
            return Err(Refused::new(
                "mig[].slices",
                Reason::BadValue,
                format!("{} is not between 1 and 7", instance.slices),
            ));
        }
        mig.push(format!("{}:{}", instance.device, instance.slices));
    }
    let mut cpus = allocation.cpus.clone();
    cpus.sort_unstable();
    cpus.dedup();
    Ok(CheckedAllocation {
        job,
        cpus,
        mig,
        end_ns: (allocation.end_ns != 0).then_some(allocation.end_ns),
    })
}

#[cfg(test)]
mod tests {
    use footprint_proto::v1::MigInstance;

    use super::*;

    fn outlet(counter_max: u64, resolution: u64) -> MeterInfo {
        MeterInfo {
            meter_id: "pdu:outlet-1".into(),
            kind: MeterKind::OutletEnergy as i32,
            device: "outlet-1".into(),
            counter_max,
            resolution,
            ..MeterInfo::default()
        }
    }

    fn sample(value: u64, seconds: i64) -> CounterSample {
        CounterSample {
            value,
            at: UnixNanos(seconds * 1_000_000_000),
        }
    }

    fn gpu_limits() -> CounterLimits {
        limits_for(MeterKind::GpuEnergy, 0, 0, &PowerLimits::default())
    }

    fn reading(value: u64, seconds: i64) -> Reading {
        Reading {
            meter_id: b"gpu0".to_vec().into(),
            timestamp_ns: seconds * 1_000_000_000,
            value,
            quality: footprint_proto::v1::Quality::Measured as i32,
            ..Reading::default()
        }
    }

    #[test]
    fn a_resolution_beyond_the_counter_range_is_refused_by_name() {
        let no_gpu = |_: &str| false;
        assert_eq!(check_meter(&outlet(0, 360_000_000), no_gpu), Ok(()));
        assert_eq!(check_meter(&outlet(1_000, 1_000), no_gpu), Ok(()));
        let refused = check_meter(&outlet(1_000, 1_001), no_gpu).unwrap_err();
        assert_eq!(
            (refused.field, refused.reason),
            ("resolution", Reason::BadMeter)
        );
        assert!(refused.detail.contains("counter_max 1000"), "{refused:?}");
    }

    #[test]
    fn a_busy_meter_must_name_a_gpu_and_a_job() {
        let busy = MeterInfo {
            meter_id: "busy".into(),
            kind: MeterKind::GpuJobBusy as i32,
            device: "gpu9".into(),
            job: "j1".into(),
            ..MeterInfo::default()
        };
        assert_eq!(check_meter(&busy, |_| false).unwrap_err().field, "device");
        assert_eq!(check_meter(&busy, |d| d == "gpu9"), Ok(()));
        let anonymous = MeterInfo {
            job: " ".into(),
            ..busy
        };
        assert_eq!(check_meter(&anonymous, |_| true).unwrap_err().field, "job");
    }

    #[test]
    fn a_coarse_outlet_may_move_a_step_within_a_second() {
        let limits = limits_for(
            MeterKind::OutletEnergy,
            0,
            360_000_000,
            &PowerLimits::default(),
        );
        let step = |steps: u64, seconds: i64| sample(steps * 360_000_000, seconds);
        assert!(counter::step(step(5, 0), step(6, 1), limits).is_ok());
        let unannounced = limits_for(MeterKind::OutletEnergy, 0, 0, &PowerLimits::default());
        assert!(counter::step(step(5, 0), step(6, 1), unannounced).is_err());
    }

    #[test]
    fn a_next_reading_is_checked_against_the_clock_quality_and_counter() {
        let now = 100 * 1_000_000_000;
        let check = |last, reading: &Reading| check_next(last, gpu_limits(), reading, now, 0);
        let first = check(None, &reading(5, 10)).unwrap();
        assert_eq!((first.sample, first.moved), (sample(5, 10), None));
        let next = check(Some(sample(5, 10)), &reading(8, 11)).unwrap();
        assert_eq!(
            next.moved,
            Some((10_000_000_000, CounterStep::Advanced { delta: 3 }))
        );
        let future = check(None, &reading(5, 101)).unwrap_err();
        assert_eq!(future.reason, Reason::FutureTimestamp);
        let backwards = check(Some(sample(5, 10)), &reading(5, 10)).unwrap_err();
        assert_eq!(
            (backwards.field, backwards.reason),
            ("timestamp_ns", Reason::NotAfterPrevious)
        );
        let unspecified = Reading {
            quality: 0,
            ..reading(5, 10)
        };
        assert_eq!(
            check(None, &unspecified).unwrap_err().reason,
            Reason::BadQuality
        );
    }

    #[test]
    fn an_earlier_reading_splits_the_advance_around_it_or_is_refused() {
        let place = |previous, at: CounterSample, next_step| {
            place_between(previous, at, sample(100, 20), next_step, gpu_limits())
        };
        let advanced = Some(Step::advanced(false, false));
        assert_eq!(
            place(Some(sample(10, 0)), sample(40, 10), advanced),
            Ok(Placement::Between {
                before: Some(30),
                after: 60
            })
        );
        assert_eq!(
            place(None, sample(40, 10), None),
            Ok(Placement::Between {
                before: None,
                after: 60
            })
        );
        assert_eq!(
            place(None, sample(100, 20), advanced),
            Ok(Placement::Stored)
        );
        assert_eq!(
            place(None, sample(99, 20), advanced).unwrap_err().reason,
            Reason::ConflictingReading
        );
        assert_eq!(
            place(Some(sample(10, 0)), sample(5, 10), advanced)
                .unwrap_err()
                .reason,
            Reason::OutOfOrderInconsistent
        );
        let reset = Some(Step::decode(2));
        assert_eq!(
            place(Some(sample(10, 0)), sample(40, 10), reset)
                .unwrap_err()
                .reason,
            Reason::OutOfOrderAcrossReset
        );
    }

    #[test]
    fn an_allocation_is_refused_by_the_field_at_fault() {
        let gpu0 = |device: &str| device == "gpu0";
        let allocation = Allocation {
            job: Some(Job {
                id: "j1".into(),
                ..Job::default()
            }),
            start_ns: 10,
            gpus: vec!["gpu0".into()],
            cpus: vec![3, 1, 3],
            mig: vec![MigInstance {
                device: "gpu0".into(),
                slices: 3,
            }],
            ..Allocation::default()
        };
        let checked = check_allocation(&allocation, 100, 0, gpu0).unwrap();
        assert_eq!(
            (checked.cpus, checked.mig, checked.end_ns),
            (vec![1, 3], vec!["gpu0:3".to_owned()], None)
        );
        let field = |allocation: Allocation| {
            check_allocation(&allocation, 100, 0, gpu0)
                .unwrap_err()
                .field
        };
        assert_eq!(
            field(Allocation {
                job: None,
                ..allocation.clone()
            }),
            "job.id"
        );
        assert_eq!(
            field(Allocation {
                start_ns: 101,
                ..allocation.clone()
            }),
            "start_ns"
        );
        assert_eq!(
            field(Allocation {
                end_ns: 10,
                ..allocation.clone()
            }),
            "end_ns"
        );
        assert_eq!(
            field(Allocation {
                gpus: vec!["gpu1".into()],
                ..allocation.clone()
            }),
            "gpus"
        );
        let eight = vec![MigInstance {
            device: "gpu0".into(),
            slices: 8,
        }];
        assert_eq!(
            field(Allocation {
                mig: eight,
                ..allocation
            }),
            "mig[].slices"
        );
    }
}
