//! Attribution of one host's energy to the jobs that held its devices.
//!
//! Input: the energy of each meter over spans of time ([`EnergyPiece`], already cut to one
//! window) and who held what ([`Holding`]). Output: each job's share, the idle share and the
//! share that could not be attributed. The rules:
//! - **GPU**: a piece goes to the job holding the GPU; when holdings change inside the piece it is
//!   split by time overlap (interpolated: power assumed constant between samples); several jobs
//!   holding one GPU at once split it evenly (estimated); nobody holding it makes it idle.
//! - **CPU package and DRAM**: split by cores held × time, the cores nobody holds are idle. RAPL
//!   meters a whole package, so any split between recipients is estimated.
//! - A CPU meter that does not say which cores it covers cannot be split: unattributed.
//!
//! Conservation is exact by construction — every split goes through
//! [`apportion`](crate::apportion::apportion()) — and property-tested below.

use std::collections::BTreeMap;

use crate::apportion::{apportion, split_evenly};
use crate::quality::{EnergyByQuality, Quality};
use crate::units::{Span, UnixNanos};

/// A GPU as the caller interned it (allocations and meters name GPUs by the same device string).
pub type DeviceKey = u32;
/// A job as the caller interned it.
pub type JobKey = u32;

/// Which part of a host a piece of energy was measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    Gpu(DeviceKey),
    /// A RAPL package meter and the logical CPUs it covers.
    CpuPackage(&'a [u32]),
    /// A RAPL DRAM meter and the logical CPUs whose memory it covers.
    Dram(&'a [u32]),
}

/// Energy a meter counted over `span` (inside one window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnergyPiece<'a> {
    pub resource: Resource<'a>,
    pub span: Span,
    pub energy_mj: u64,
    pub quality: Quality,
}

/// A job holding GPUs and cores over a span of time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    pub job: JobKey,
    pub span: Span,
    pub gpus: Vec<DeviceKey>,
    /// Logical CPUs held, sorted.
    pub cpus: Vec<u32>,
}

/// Energy by the resource it was measured on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceEnergy {
    pub gpu: EnergyByQuality,
    pub cpu: EnergyByQuality,
    pub dram: EnergyByQuality,
}

impl ResourceEnergy {
    pub fn total_mj(&self) -> u64 {
        self.gpu.total_mj() + self.cpu.total_mj() + self.dram.total_mj()
    }

    /// All resources together, split by how the energy was obtained.
    pub fn by_quality(&self) -> EnergyByQuality {
        let mut all = self.gpu;
        all.merge(&self.cpu);
        all.merge(&self.dram);
        all
    }

    pub fn merge(&mut self, other: &ResourceEnergy) {
        self.gpu.merge(&other.gpu);
        self.cpu.merge(&other.cpu);
        self.dram.merge(&other.dram);
    }

    fn slot(&mut self, resource: Resource<'_>) -> &mut EnergyByQuality {
        match resource {
            Resource::Gpu(_) => &mut self.gpu,
            Resource::CpuPackage(_) => &mut self.cpu,
            Resource::Dram(_) => &mut self.dram,
        }
    }
}

/// One host's energy in one window, attributed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAttribution {
    pub jobs: BTreeMap<JobKey, ResourceEnergy>,
    pub idle: ResourceEnergy,
    pub unattributed: ResourceEnergy,
    /// Everything the pieces held: jobs + idle + unattributed, exactly.
    pub measured: ResourceEnergy,
}

/// Who receives a part of a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Recipient {
    Job(JobKey),
    Idle,
    Unattributed,
}

/// Attributes `pieces` to the jobs in `holdings`.
pub fn attribute(pieces: &[EnergyPiece<'_>], holdings: &[Holding]) -> HostAttribution {
    let mut result = HostAttribution::default();
    for piece in pieces {
        result
            .measured
            .slot(piece.resource)
            .add(piece.quality, piece.energy_mj);
        match piece.resource {
            Resource::Gpu(device) => attribute_gpu(piece, device, holdings, &mut result),
            Resource::CpuPackage(cpus) | Resource::Dram(cpus) => {
                attribute_cpu(piece, cpus, holdings, &mut result)
            }
        }
    }
    result
}

fn credit(
    result: &mut HostAttribution,
    piece: &EnergyPiece<'_>,
    to: Recipient,
    quality: Quality,
    mj: u64,
) {
    if mj == 0 {
        return;
    }
    let account = match to {
        Recipient::Job(job) => result.jobs.entry(job).or_default(),
        Recipient::Idle => &mut result.idle,
        Recipient::Unattributed => &mut result.unattributed,
    };
    account.slot(piece.resource).add(quality, mj);
}

/// Books a whole piece, at its own quality, to one recipient.
fn credit_whole(result: &mut HostAttribution, piece: &EnergyPiece<'_>, to: Recipient) {
    credit(result, piece, to, piece.quality, piece.energy_mj);
}

/// Cuts `span` at every holding boundary inside it. Returns the sub-spans in order.
fn sub_spans(span: Span, relevant: &[&Holding]) -> Vec<Span> {
    let mut cuts: Vec<UnixNanos> = Vec::with_capacity(2 + 2 * relevant.len());
    cuts.push(span.start);
    cuts.push(span.end);
    for holding in relevant {
        for at in [holding.span.start, holding.span.end] {
            if span.start < at && at < span.end {
                cuts.push(at);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|pair| Span::new(pair[0], pair[1]))
        .collect()
}

fn attribute_gpu(
    piece: &EnergyPiece<'_>,
    device: DeviceKey,
    holdings: &[Holding],
    result: &mut HostAttribution,
) {
    let relevant: Vec<&Holding> = holdings
        .iter()
        .filter(|h| h.gpus.contains(&device) && h.span.intersect(&piece.span).is_some())
        .collect();
    if relevant.is_empty() {
        credit_whole(result, piece, Recipient::Idle);
        return;
    }
    let spans = sub_spans(piece.span, &relevant);
    let lengths: Vec<u64> = spans.iter().map(Span::len_ns).collect();
    let cut_in_time = spans.len() > 1;
    let Some(per_span) = apportion(piece.energy_mj, &lengths) else {
        // A zero-length piece carries no time to split by: it cannot be placed.
        credit_whole(result, piece, Recipient::Unattributed);
        return;
    };
    for (span, energy) in spans.iter().zip(per_span) {
        let mut holders: Vec<JobKey> = relevant
            .iter()
            .filter(|h| h.span.start <= span.start && span.end <= h.span.end)
            .map(|h| h.job)
            .collect();
        holders.sort_unstable();
        holders.dedup();
        let mut quality = piece.quality;
        if cut_in_time {
            quality = quality.worst(Quality::Interpolated);
        }
        if holders.is_empty() {
            credit(result, piece, Recipient::Idle, quality, energy);
            continue;
        }
        if holders.len() > 1 {
            // Without per-process utilisation, an even split is a model, not a measurement.
            quality = quality.worst(Quality::Estimated);
        }
        for (job, share) in holders.iter().zip(split_evenly(energy, holders.len())) {
            credit(result, piece, Recipient::Job(*job), quality, share);
        }
    }
}

fn attribute_cpu(
    piece: &EnergyPiece<'_>,
    meter_cpus: &[u32],
    holdings: &[Holding],
    result: &mut HostAttribution,
) {
    if meter_cpus.is_empty() {
        credit_whole(result, piece, Recipient::Unattributed);
        return;
    }
    let relevant: Vec<(&Holding, u64)> = holdings
        .iter()
        .filter(|h| h.span.intersect(&piece.span).is_some())
        .map(|h| (h, cores_in(&h.cpus, meter_cpus)))
        .filter(|(_, cores)| *cores > 0)
        .collect();
    if relevant.is_empty() {
        credit_whole(result, piece, Recipient::Idle);
        return;
    }
    let refs: Vec<&Holding> = relevant.iter().map(|(h, _)| *h).collect();
    let meter_cores = meter_cpus.len() as u64;
    let mut weights: BTreeMap<Recipient, u64> = BTreeMap::new();
    for span in sub_spans(piece.span, &refs) {
        let len = span.len_ns();
        let mut held = 0u64;
        for (holding, cores) in &relevant {
            if holding.span.start <= span.start && span.end <= holding.span.end {
                held += cores;
                *weights.entry(Recipient::Job(holding.job)).or_default() += cores * len;
            }
        }
        *weights.entry(Recipient::Idle).or_default() += meter_cores.saturating_sub(held) * len;
    }
    let recipients: Vec<Recipient> = weights.keys().copied().collect();
    let weight_list: Vec<u64> = weights.values().copied().collect();
    let whole_piece_weight = meter_cores * piece.span.len_ns();
    let Some(parts) = apportion(piece.energy_mj, &weight_list) else {
        credit_whole(result, piece, Recipient::Unattributed);
        return;
    };
    for ((recipient, weight), energy) in recipients.iter().zip(&weight_list).zip(parts) {
        let quality = if *weight >= whole_piece_weight {
            piece.quality
        } else {
            piece.quality.worst(Quality::Estimated)
        };
        credit(result, piece, *recipient, quality, energy);
    }
}

/// How many of `held` (sorted) are in `meter` (sorted).
fn cores_in(held: &[u32], meter: &[u32]) -> u64 {
    let (mut i, mut j, mut count) = (0, 0, 0u64);
    while i < held.len() && j < meter.len() {
        match held[i].cmp(&meter[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                count += 1;
                i += 1;
                j += 1;
            }
        }
    }
    count
}

/// GPU time each job held inside `window`, in GPU-nanoseconds.
pub fn gpu_time_held(window: Span, holdings: &[Holding]) -> BTreeMap<JobKey, u64> {
    let mut held: BTreeMap<JobKey, u64> = BTreeMap::new();
    for holding in holdings {
        if let Some(overlap) = holding.span.intersect(&window) {
            *held.entry(holding.job).or_default() += overlap.len_ns() * holding.gpus.len() as u64;
        }
    }
    held.retain(|_, ns| *ns > 0);
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(start: i64, end: i64) -> Span {
        Span::new(UnixNanos(start), UnixNanos(end))
    }

    fn gpu_piece(device: DeviceKey, start: i64, end: i64, energy_mj: u64) -> EnergyPiece<'static> {
        EnergyPiece {
            resource: Resource::Gpu(device),
            span: span(start, end),
            energy_mj,
            quality: Quality::Measured,
        }
    }

    fn holding(job: JobKey, start: i64, end: i64, gpus: &[DeviceKey], cpus: &[u32]) -> Holding {
        Holding {
            job,
            span: span(start, end),
            gpus: gpus.to_vec(),
            cpus: cpus.to_vec(),
        }
    }

    #[test]
    fn a_gpu_held_all_window_goes_to_its_job_as_measured() {
        let result = attribute(
            &[gpu_piece(0, 0, 10, 1_000)],
            &[holding(7, -5, 50, &[0], &[])],
        );
        assert_eq!(result.jobs[&7].gpu.measured_mj, 1_000);
        assert_eq!(result.idle.total_mj(), 0);
    }

    #[test]
    fn an_allocation_change_inside_a_piece_splits_by_time_overlap() {
        let holdings = [holding(1, 0, 4, &[0], &[]), holding(2, 4, 20, &[0], &[])];
        let result = attribute(&[gpu_piece(0, 0, 10, 1_000)], &holdings);
        assert_eq!(result.jobs[&1].gpu.interpolated_mj, 400);
        assert_eq!(result.jobs[&2].gpu.interpolated_mj, 600);
    }

    #[test]
    fn an_unheld_gpu_is_idle_and_a_gap_in_holding_too() {
        let holdings = [holding(1, 0, 5, &[0], &[])];
        let result = attribute(
            &[gpu_piece(0, 0, 10, 999), gpu_piece(1, 0, 10, 50)],
            &holdings,
        );
        assert_eq!(result.jobs[&1].gpu.total_mj(), 500);
        assert_eq!(result.idle.gpu.total_mj(), 499 + 50);
    }

    #[test]
    fn two_jobs_on_one_gpu_split_evenly_and_say_so() {
        let holdings = [holding(1, 0, 10, &[0], &[]), holding(2, 0, 10, &[0], &[])];
        let result = attribute(&[gpu_piece(0, 0, 10, 101)], &holdings);
        assert_eq!(result.jobs[&1].gpu.estimated_mj, 51);
        assert_eq!(result.jobs[&2].gpu.estimated_mj, 50);
    }

    #[test]
    fn cpu_package_splits_by_cores_held_and_idle_keeps_the_rest() {
        let cpus: Vec<u32> = (0..8).collect();
        let piece = EnergyPiece {
            resource: Resource::CpuPackage(&cpus),
            span: span(0, 10),
            energy_mj: 800,
            quality: Quality::Measured,
        };
        // Job 1 holds 2 of 8 cores all window; job 3 holds 4 cores for half of it.
        let holdings = [
            holding(1, 0, 10, &[], &[0, 1]),
            holding(3, 5, 10, &[], &[2, 3, 4, 5, 64]),
        ];
        let result = attribute(&[piece], &holdings);
        assert_eq!(result.jobs[&1].cpu.estimated_mj, 200);
        assert_eq!(result.jobs[&3].cpu.estimated_mj, 200);
        assert_eq!(result.idle.cpu.estimated_mj, 400);
    }

    #[test]
    fn a_cpu_meter_without_cores_is_unattributed() {
        let piece = EnergyPiece {
            resource: Resource::Dram(&[]),
            span: span(0, 10),
            energy_mj: 77,
            quality: Quality::Measured,
        };
        let result = attribute(&[piece], &[holding(1, 0, 10, &[], &[0])]);
        assert_eq!(result.unattributed.dram.measured_mj, 77);
    }

    #[test]
    fn gpu_time_counts_each_gpu_held() {
        let held = gpu_time_held(span(0, 10), &[holding(1, 5, 50, &[0, 1], &[])]);
        assert_eq!(held[&1], 10);
    }

    fn arbitrary_holdings() -> impl Strategy<Value = Vec<Holding>> {
        prop::collection::vec(
            (
                0u32..5,
                -20i64..120,
                0i64..140,
                prop::collection::btree_set(0u32..4, 0..4),
                prop::collection::btree_set(0u32..16, 0..10),
            ),
            0..8,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .map(|(job, start, len, gpus, cpus)| Holding {
                    job,
                    span: span(start, start + len),
                    gpus: gpus.into_iter().collect(),
                    cpus: cpus.into_iter().collect(),
                })
                .collect()
        })
    }

    proptest! {
        /// Σ jobs + idle + unattributed = measured, exactly, for every resource and every quality
        /// total, whatever the pieces and holdings (overlapping, partial, shared, absent).
        #[test]
        fn attribution_conserves_energy(
            gpu_pieces in prop::collection::vec((0u32..4, 0i64..100, 0i64..100, 0u64..u64::MAX / 64), 0..10),
            cpu_pieces in prop::collection::vec((any::<bool>(), 0i64..100, 0i64..100, 0u64..u64::MAX / 64, 0usize..3), 0..6),
            holdings in arbitrary_holdings(),
        ) {
            let cpu_sets: [Vec<u32>; 3] = [(0..8).collect(), (8..16).collect(), Vec::new()];
            let mut pieces: Vec<EnergyPiece<'_>> = gpu_pieces
                .iter()
                .map(|&(device, start, len, energy)| gpu_piece(device, start, start + len, energy))
                .collect();
            for (dram, start, len, energy, set) in &cpu_pieces {
                let cpus = &cpu_sets[*set];
                pieces.push(EnergyPiece {
                    resource: if *dram { Resource::Dram(cpus) } else { Resource::CpuPackage(cpus) },
                    span: span(*start, start + len),
                    energy_mj: *energy,
                    quality: Quality::Measured,
                });
            }
            let result = attribute(&pieces, &holdings);
            let mut sum = result.idle;
            sum.merge(&result.unattributed);
            for job in result.jobs.values() {
                sum.merge(job);
            }
            prop_assert_eq!(sum.gpu.total_mj(), result.measured.gpu.total_mj());
            prop_assert_eq!(sum.cpu.total_mj(), result.measured.cpu.total_mj());
            prop_assert_eq!(sum.dram.total_mj(), result.measured.dram.total_mj());
            let pieces_total: u64 = pieces.iter().map(|p| p.energy_mj).sum();
            prop_assert_eq!(result.measured.total_mj(), pieces_total);
        }

        /// A job that alone holds a GPU over a whole piece gets all of it, at the piece's quality.
        #[test]
        fn sole_holder_gets_everything(energy in any::<u64>(), start in -50i64..50, len in 1i64..100) {
            let piece = gpu_piece(2, start, start + len, energy);
            let result = attribute(&[piece], &[holding(9, start - 1, start + len + 1, &[2], &[])]);
            prop_assert_eq!(result.jobs.get(&9).map(|j| j.gpu.measured_mj).unwrap_or(0), energy);
        }
    }
}
