//! Attribution of one host's energy to the jobs that held its devices.
//!
//! Input: the energy of each meter over spans of time ([`EnergyPiece`], already cut to one
//! window), who held what ([`Holding`]), what the jobs used ([`Usage`]) and the site's
//! [`Policy`]. Output: each job's share, the idle share and the share that could not be
//! attributed. The rules:
//! - **GPU**: a piece goes to the job holding the GPU; when holdings change inside the piece it is
//!   split by time overlap (interpolated: power assumed constant between samples). Several jobs
//!   holding one GPU at once (MPS, time slicing) split it by the per-process utilisation NVML
//!   reported for each (interpolated), else evenly (estimated). MIG instances split it by their
//!   share of the GPU's seven compute slices, unheld slices idle (estimated). Nobody holding it
//!   makes it idle.
//! - **CPU package and DRAM**: the part above the configured baseline power is *dynamic* and is
//!   split by each job's CPU time on the package; the baseline is split by cores held × time
//!   ([`CpuBaselinePolicy::ByCores`]) or kept as idle ([`CpuBaselinePolicy::Idle`]). Without CPU
//!   times the whole piece is split by cores held × time. RAPL meters a whole package, so any split
//!   between recipients is estimated.
//! - A CPU meter that does not say which cores it covers cannot be split: unattributed.
//! - **Host remainder**: what the host's outlet (PDU or IPMI) meter counted beyond GPU + CPU +
//!   DRAM (PSU loss, fans, NICs, disks), split in proportion to each recipient's GPU + CPU + DRAM
//!   energy. Without an outlet meter a configured overhead factor stands in (estimated). An outlet
//!   reading below the component meters is not hidden: the difference is kept as
//!   [`HostAttribution::remainder_deficit_mj`], a data-quality finding.
//!
//! Conservation is exact by construction — every split goes through
//! [`apportion`](crate::apportion::apportion()) — and property-tested below:
//! Σ jobs + idle + unattributed = measured for every component, and the host total is
//! `measured − remainder_deficit_mj`.

use std::collections::BTreeMap;

use crate::apportion::{apportion, split_evenly};
use crate::quality::{EnergyByQuality, Quality};
use crate::units::{Span, UnixNanos};

/// A GPU as the caller interned it (allocations and meters name GPUs by the same device string).
pub type DeviceKey = u32;
/// A job as the caller interned it.
pub type JobKey = u32;

/// Compute slices of a MIG-capable GPU (A100, H100, H200): a `3g` instance holds 3 of 7.
pub const MIG_COMPUTE_SLICES: u32 = 7;

/// Which part of a host a piece of energy was measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    Gpu(DeviceKey),
    /// A RAPL package meter and the logical CPUs it covers.
    CpuPackage(&'a [u32]),
    /// A RAPL DRAM meter and the logical CPUs whose memory it covers.
    Dram(&'a [u32]),
    /// The whole host, as its PDU outlet or IPMI meter sees it.
    Host,
}

/// Energy a meter counted over `span` (inside one window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnergyPiece<'a> {
    pub resource: Resource<'a>,
    pub span: Span,
    pub energy_mj: u64,
    pub quality: Quality,
}

/// A MIG instance a job holds: `slices` of the parent GPU's [`MIG_COMPUTE_SLICES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigInstance {
    pub device: DeviceKey,
    pub slices: u32,
}

/// A job holding GPUs, MIG instances and cores over a span of time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub job: JobKey,
    pub span: Span,
    pub gpus: Vec<DeviceKey>,
    pub mig: Vec<MigInstance>,
    /// Logical CPUs held, sorted.
    pub cpus: Vec<u32>,
}

/// What jobs used inside the window, as the collector measured it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// NVML per-process utilisation of each job's processes on each GPU, summed over the window
    /// (percent × nanoseconds; any consistent unit works, only ratios matter).
    pub gpu: BTreeMap<(DeviceKey, JobKey), u64>,
    /// CPU time of each job in the window (cgroup `cpu.stat`), in nanoseconds.
    pub cpu_ns: BTreeMap<JobKey, u64>,
}

/// Where the baseline (idle) power of a CPU package or DRAM goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuBaselinePolicy {
    /// To the jobs by cores held × time; cores nobody holds are idle.
    #[default]
    ByCores,
    /// All of it to idle: jobs pay only for the power their CPU time adds.
    Idle,
}

/// The site's attribution settings (named in every report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub cpu_baseline: CpuBaselinePolicy,
    /// Baseline power of one CPU package, in milliwatts; 0 treats all package energy as dynamic.
    pub package_baseline_mw: u64,
    /// Baseline power of one DRAM zone, in milliwatts.
    pub dram_baseline_mw: u64,
    /// Host overhead (PSU loss, fans, …) as parts per million of GPU + CPU + DRAM energy, used
    /// only for hosts without an outlet meter; 0 adds nothing.
    pub host_overhead_ppm: u64,
}

/// Energy by the component it was measured on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceEnergy {
    pub gpu: EnergyByQuality,
    pub cpu: EnergyByQuality,
    pub dram: EnergyByQuality,
    /// Share of the host remainder (outlet − components, or the configured overhead factor).
    pub remainder: EnergyByQuality,
}

impl ResourceEnergy {
    /// GPU + CPU package + DRAM + host remainder.
    pub fn total_mj(&self) -> u64 {
        self.components_mj() + self.remainder.total_mj()
    }

    /// GPU + CPU package + DRAM: the energy the component meters counted.
    pub fn components_mj(&self) -> u64 {
        self.gpu.total_mj() + self.cpu.total_mj() + self.dram.total_mj()
    }

    /// All components together, split by how the energy was obtained.
    pub fn by_quality(&self) -> EnergyByQuality {
        let mut all = self.gpu;
        all.merge(&self.cpu);
        all.merge(&self.dram);
        all.merge(&self.remainder);
        all
    }

    pub fn merge(&mut self, other: &ResourceEnergy) {
        self.gpu.merge(&other.gpu);
        self.cpu.merge(&other.cpu);
        self.dram.merge(&other.dram);
        self.remainder.merge(&other.remainder);
    }

    fn slot(&mut self, resource: Resource<'_>) -> &mut EnergyByQuality {
        match resource {
            Resource::Gpu(_) => &mut self.gpu,
            Resource::CpuPackage(_) => &mut self.cpu,
            Resource::Dram(_) => &mut self.dram,
            Resource::Host => &mut self.remainder,
        }
    }
}

/// How the host remainder of a window was obtained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RemainderSource {
    /// No outlet meter and no overhead factor: nothing beyond the components.
    #[default]
    None,
    /// The outlet meter's energy minus the components'.
    Outlet,
    /// The configured overhead factor.
    Factor,
}

/// One host's energy in one window, attributed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAttribution {
    pub jobs: BTreeMap<JobKey, ResourceEnergy>,
    pub idle: ResourceEnergy,
    pub unattributed: ResourceEnergy,
    /// Everything attributed: jobs + idle + unattributed, exactly.
    pub measured: ResourceEnergy,
    pub remainder_source: RemainderSource,
    /// How far the outlet meter read *below* the component meters (they disagree). The host's
    /// energy is then `measured.total_mj() − remainder_deficit_mj`, the outlet's reading.
    pub remainder_deficit_mj: u64,
}

impl HostAttribution {
    /// The host's energy: the outlet's reading where there is one, else components + factor.
    pub fn host_mj(&self) -> u64 {
        self.measured.total_mj() - self.remainder_deficit_mj
    }
}

/// Who receives a part of a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Recipient {
    Job(JobKey),
    Idle,
    Unattributed,
}

/// Attributes `pieces` to the jobs in `holdings`.
pub fn attribute(
    pieces: &[EnergyPiece<'_>],
    holdings: &[Holding],
    usage: &Usage,
    policy: &Policy,
) -> HostAttribution {
    let mut result = HostAttribution::default();
    let mut outlet: Option<EnergyByQuality> = None;
    for piece in pieces {
        match piece.resource {
            Resource::Gpu(device) => attribute_gpu(piece, device, holdings, usage, &mut result),
            Resource::CpuPackage(cpus) => attribute_cpu(
                piece,
                cpus,
                policy.package_baseline_mw,
                holdings,
                usage,
                policy,
                &mut result,
            ),
            Resource::Dram(cpus) => attribute_cpu(
                piece,
                cpus,
                policy.dram_baseline_mw,
                holdings,
                usage,
                policy,
                &mut result,
            ),
            Resource::Host => outlet
                .get_or_insert_with(EnergyByQuality::default)
                .add(piece.quality, piece.energy_mj),
        }
    }
    attribute_remainder(outlet, policy, &mut result);
    result
}

fn account(result: &mut HostAttribution, to: Recipient) -> &mut ResourceEnergy {
    match to {
        Recipient::Job(job) => result.jobs.entry(job).or_default(),
        Recipient::Idle => &mut result.idle,
        Recipient::Unattributed => &mut result.unattributed,
    }
}

fn credit(
    result: &mut HostAttribution,
    resource: Resource<'_>,
    to: Recipient,
    quality: Quality,
    mj: u64,
) {
    if mj == 0 {
        return;
    }
    result.measured.slot(resource).add(quality, mj);
    account(result, to).slot(resource).add(quality, mj);
}

/// Books `mj` of a piece, at the piece's own quality, to one recipient.
fn credit_whole(result: &mut HostAttribution, piece: &EnergyPiece<'_>, to: Recipient, mj: u64) {
    credit(result, piece.resource, to, piece.quality, mj);
}

/// Splits `mj` by `weights` (summing to more than zero) and books each part.
fn credit_by_weight(
    result: &mut HostAttribution,
    resource: Resource<'_>,
    mj: u64,
    weights: &[(Recipient, u64)],
    quality: Quality,
) -> bool {
    let list: Vec<u64> = weights.iter().map(|(_, w)| *w).collect();
    let Some(parts) = apportion(mj, &list) else {
        return false;
    };
    for ((recipient, _), part) in weights.iter().zip(parts) {
        credit(result, resource, *recipient, quality, part);
    }
    true
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

fn holds_gpu(holding: &Holding, device: DeviceKey) -> bool {
    holding.gpus.contains(&device) || holding.mig.iter().any(|m| m.device == device)
}

/// Who shares `device` over a sub-span, with weights, and how good the split is.
fn gpu_shares(
    device: DeviceKey,
    holders: &[&Holding],
    usage: &Usage,
    quality: Quality,
) -> (Vec<(Recipient, u64)>, Quality) {
    let mig_slices: BTreeMap<JobKey, u64> = holders
        .iter()
        .flat_map(|h| {
            h.mig
                .iter()
                .filter(|m| m.device == device)
                .map(|m| (h.job, u64::from(m.slices)))
        })
        .fold(BTreeMap::new(), |mut acc, (job, slices)| {
            *acc.entry(job).or_default() += slices;
            acc
        });
    let mut jobs: Vec<JobKey> = holders.iter().map(|h| h.job).collect();
    jobs.sort_unstable();
    jobs.dedup();
    if !mig_slices.is_empty() {
        // A MIG instance's share of the board is its share of the compute slices: a model.
        let mut weights: Vec<(Recipient, u64)> = jobs
            .iter()
            .map(|job| {
                let whole = holders
                    .iter()
                    .any(|h| h.job == *job && h.gpus.contains(&device));
                let slices = if whole {
                    u64::from(MIG_COMPUTE_SLICES)
                } else {
                    mig_slices.get(job).copied().unwrap_or(0)
                };
                (Recipient::Job(*job), slices)
            })
            .collect();
        let held: u64 = weights.iter().map(|(_, w)| w).sum();
        weights.push((
            Recipient::Idle,
            u64::from(MIG_COMPUTE_SLICES).saturating_sub(held),
        ));
        return (weights, quality.worst(Quality::Estimated));
    }
    if jobs.len() == 1 {
        return (vec![(Recipient::Job(jobs[0]), 1)], quality);
    }
    let utilisation: Vec<(Recipient, u64)> = jobs
        .iter()
        .map(|job| {
            (
                Recipient::Job(*job),
                usage.gpu.get(&(device, *job)).copied().unwrap_or(0),
            )
        })
        .collect();
    if utilisation.iter().any(|(_, w)| *w > 0) {
        // Energy split by each process's measured share of the GPU's busy time.
        return (utilisation, quality.worst(Quality::Interpolated));
    }
    let even = jobs
        .iter()
        .zip(split_evenly(1_000_000, jobs.len()))
        .map(|(job, w)| (Recipient::Job(*job), w))
        .collect();
    (even, quality.worst(Quality::Estimated))
}

fn attribute_gpu(
    piece: &EnergyPiece<'_>,
    device: DeviceKey,
    holdings: &[Holding],
    usage: &Usage,
    result: &mut HostAttribution,
) {
    let relevant: Vec<&Holding> = holdings
        .iter()
        .filter(|h| holds_gpu(h, device) && h.span.intersect(&piece.span).is_some())
        .collect();
    if relevant.is_empty() {
        credit_whole(result, piece, Recipient::Idle, piece.energy_mj);
        return;
    }
    let spans = sub_spans(piece.span, &relevant);
    let lengths: Vec<u64> = spans.iter().map(Span::len_ns).collect();
    let cut_in_time = spans.len() > 1;
    let Some(per_span) = apportion(piece.energy_mj, &lengths) else {
        // A zero-length piece carries no time to split by: it cannot be placed.
        credit_whole(result, piece, Recipient::Unattributed, piece.energy_mj);
        return;
    };
    for (span, energy) in spans.iter().zip(per_span) {
        let holders: Vec<&Holding> = relevant
            .iter()
            .filter(|h| h.span.start <= span.start && span.end <= h.span.end)
            .copied()
            .collect();
        let mut quality = piece.quality;
        if cut_in_time {
            quality = quality.worst(Quality::Interpolated);
        }
        if holders.is_empty() {
            credit(result, piece.resource, Recipient::Idle, quality, energy);
            continue;
        }
        let (weights, quality) = gpu_shares(device, &holders, usage, quality);
        if !credit_by_weight(result, piece.resource, energy, &weights, quality) {
            credit(result, piece.resource, Recipient::Idle, quality, energy);
        }
    }
}

/// Baseline energy of a piece: `baseline_mw` over its span, at most the piece's energy.
fn baseline_mj(piece: &EnergyPiece<'_>, baseline_mw: u64) -> u64 {
    let nanojoule_millis = u128::from(baseline_mw) * u128::from(piece.span.len_ns());
    let mj = nanojoule_millis / 1_000_000_000;
    u64::try_from(mj).unwrap_or(u64::MAX).min(piece.energy_mj)
}

fn attribute_cpu(
    piece: &EnergyPiece<'_>,
    meter_cpus: &[u32],
    baseline_mw: u64,
    holdings: &[Holding],
    usage: &Usage,
    policy: &Policy,
    result: &mut HostAttribution,
) {
    if meter_cpus.is_empty() {
        credit_whole(result, piece, Recipient::Unattributed, piece.energy_mj);
        return;
    }
    let relevant: Vec<(&Holding, u64)> = holdings
        .iter()
        .filter(|h| h.span.intersect(&piece.span).is_some())
        .map(|h| (h, cores_in(&h.cpus, meter_cpus)))
        .filter(|(_, cores)| *cores > 0)
        .collect();
    let by_cpu_time = cpu_time_weights(&relevant, usage);
    if by_cpu_time.is_empty() {
        split_by_cores(piece, piece.energy_mj, meter_cpus, &relevant, result);
        return;
    }
    let baseline = baseline_mj(piece, baseline_mw);
    let dynamic = piece.energy_mj - baseline;
    let quality = piece.quality.worst(Quality::Estimated);
    credit_by_weight(result, piece.resource, dynamic, &by_cpu_time, quality);
    match policy.cpu_baseline {
        CpuBaselinePolicy::ByCores => {
            split_by_cores(piece, baseline, meter_cpus, &relevant, result);
        }
        CpuBaselinePolicy::Idle => credit_whole(result, piece, Recipient::Idle, baseline),
    }
}

/// Each job's CPU time counted on this package: its CPU time × the share of its cores that are
/// here. Empty when no job on the package reported CPU time.
fn cpu_time_weights(relevant: &[(&Holding, u64)], usage: &Usage) -> Vec<(Recipient, u64)> {
    let mut here: BTreeMap<JobKey, (u64, u64)> = BTreeMap::new();
    for (holding, cores) in relevant {
        let entry = here.entry(holding.job).or_default();
        entry.0 += cores;
        entry.1 += holding.cpus.len() as u64;
    }
    let weights: Vec<(Recipient, u64)> = here
        .into_iter()
        .filter_map(|(job, (cores_here, cores_total))| {
            let cpu_ns = usage.cpu_ns.get(&job).copied()?;
            let weight = u128::from(cpu_ns) * u128::from(cores_here) / u128::from(cores_total);
            Some((
                Recipient::Job(job),
                u64::try_from(weight).unwrap_or(u64::MAX),
            ))
        })
        .collect();
    if weights.iter().all(|(_, w)| *w == 0) {
        return Vec::new();
    }
    weights
}

/// Splits `mj` of a package piece by cores held × time; cores nobody holds are idle.
fn split_by_cores(
    piece: &EnergyPiece<'_>,
    mj: u64,
    meter_cpus: &[u32],
    relevant: &[(&Holding, u64)],
    result: &mut HostAttribution,
) {
    if relevant.is_empty() {
        credit_whole(result, piece, Recipient::Idle, mj);
        return;
    }
    let refs: Vec<&Holding> = relevant.iter().map(|(h, _)| *h).collect();
    let meter_cores = meter_cpus.len() as u64;
    let mut weights: BTreeMap<Recipient, u64> = BTreeMap::new();
    for span in sub_spans(piece.span, &refs) {
        let len = span.len_ns();
        let mut held = 0u64;
        for (holding, cores) in relevant {
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
    let Some(parts) = apportion(mj, &weight_list) else {
        credit_whole(result, piece, Recipient::Unattributed, mj);
        return;
    };
    for ((recipient, weight), energy) in recipients.iter().zip(&weight_list).zip(parts) {
        let quality = if *weight >= whole_piece_weight {
            piece.quality
        } else {
            piece.quality.worst(Quality::Estimated)
        };
        credit(result, piece.resource, *recipient, quality, energy);
    }
}

/// Books the host remainder: outlet − components, or the overhead factor, split by each
/// recipient's component energy.
fn attribute_remainder(
    outlet: Option<EnergyByQuality>,
    policy: &Policy,
    result: &mut HostAttribution,
) {
    let components = result.measured.components_mj();
    let (remainder, quality) = match outlet {
        Some(outlet) => {
            result.remainder_source = RemainderSource::Outlet;
            let outlet_mj = outlet.total_mj();
            if outlet_mj < components {
                result.remainder_deficit_mj = components - outlet_mj;
                return;
            }
            let quality = [
                (outlet.estimated_mj, Quality::Estimated),
                (outlet.interpolated_mj, Quality::Interpolated),
            ]
            .into_iter()
            .find(|(mj, _)| *mj > 0)
            .map_or(Quality::Measured, |(_, q)| q);
            (outlet_mj - components, quality)
        }
        None if policy.host_overhead_ppm > 0 => {
            result.remainder_source = RemainderSource::Factor;
            let wide = u128::from(components) * u128::from(policy.host_overhead_ppm);
            let mj = u64::try_from((wide + 500_000) / 1_000_000).unwrap_or(u64::MAX);
            (mj, Quality::Estimated)
        }
        None => return,
    };
    if remainder == 0 {
        return;
    }
    let mut weights: Vec<(Recipient, u64)> = result
        .jobs
        .iter()
        .map(|(job, energy)| (Recipient::Job(*job), energy.components_mj()))
        .collect();
    weights.push((Recipient::Idle, result.idle.components_mj()));
    weights.push((Recipient::Unattributed, result.unattributed.components_mj()));
    weights.retain(|(_, w)| *w > 0);
    let quality = if weights.len() > 1 {
        quality.worst(Quality::Estimated)
    } else {
        quality
    };
    if !credit_by_weight(result, Resource::Host, remainder, &weights, quality) {
        // The outlet counted energy while no component meter did: nothing to share it by.
        credit(
            result,
            Resource::Host,
            Recipient::Unattributed,
            quality,
            remainder,
        );
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

/// GPU time each job held inside `window`, in GPU-nanoseconds (a MIG instance counts as its
/// share of a GPU).
pub fn gpu_time_held(window: Span, holdings: &[Holding]) -> BTreeMap<JobKey, u64> {
    let mut held: BTreeMap<JobKey, u64> = BTreeMap::new();
    for holding in holdings {
        if let Some(overlap) = holding.span.intersect(&window) {
            let whole = overlap.len_ns() * holding.gpus.len() as u64;
            let mig: u64 = holding
                .mig
                .iter()
                .map(|m| overlap.len_ns() * u64::from(m.slices) / u64::from(MIG_COMPUTE_SLICES))
                .sum();
            *held.entry(holding.job).or_default() += whole + mig;
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

    /// Attribution with no usage data and the default policy.
    fn plain(pieces: &[EnergyPiece<'_>], holdings: &[Holding]) -> HostAttribution {
        attribute(pieces, holdings, &Usage::default(), &Policy::default())
    }

    fn holding(job: JobKey, start: i64, end: i64, gpus: &[DeviceKey], cpus: &[u32]) -> Holding {
        Holding {
            job,
            span: span(start, end),
            gpus: gpus.to_vec(),
            mig: Vec::new(),
            cpus: cpus.to_vec(),
        }
    }

    #[test]
    fn a_gpu_held_all_window_goes_to_its_job_as_measured() {
        let result = plain(
            &[gpu_piece(0, 0, 10, 1_000)],
            &[holding(7, -5, 50, &[0], &[])],
        );
        assert_eq!(result.jobs[&7].gpu.measured_mj, 1_000);
        assert_eq!(result.idle.total_mj(), 0);
    }

    #[test]
    fn an_allocation_change_inside_a_piece_splits_by_time_overlap() {
        let holdings = [holding(1, 0, 4, &[0], &[]), holding(2, 4, 20, &[0], &[])];
        let result = plain(&[gpu_piece(0, 0, 10, 1_000)], &holdings);
        assert_eq!(result.jobs[&1].gpu.interpolated_mj, 400);
        assert_eq!(result.jobs[&2].gpu.interpolated_mj, 600);
    }

    #[test]
    fn an_unheld_gpu_is_idle_and_a_gap_in_holding_too() {
        let holdings = [holding(1, 0, 5, &[0], &[])];
        let result = plain(
            &[gpu_piece(0, 0, 10, 999), gpu_piece(1, 0, 10, 50)],
            &holdings,
        );
        assert_eq!(result.jobs[&1].gpu.total_mj(), 500);
        assert_eq!(result.idle.gpu.total_mj(), 499 + 50);
    }

    #[test]
    fn two_jobs_on_one_gpu_split_evenly_and_say_so() {
        let holdings = [holding(1, 0, 10, &[0], &[]), holding(2, 0, 10, &[0], &[])];
        let result = plain(&[gpu_piece(0, 0, 10, 101)], &holdings);
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
        let result = plain(&[piece], &holdings);
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
        let result = plain(&[piece], &[holding(1, 0, 10, &[], &[0])]);
        assert_eq!(result.unattributed.dram.measured_mj, 77);
    }

    #[test]
    fn a_shared_gpu_splits_by_per_process_utilisation() {
        let holdings = [holding(1, 0, 10, &[0], &[]), holding(2, 0, 10, &[0], &[])];
        let usage = Usage {
            gpu: BTreeMap::from([((0, 1), 300), ((0, 2), 100)]),
            ..Usage::default()
        };
        let result = attribute(
            &[gpu_piece(0, 0, 10, 1_000)],
            &holdings,
            &usage,
            &Policy::default(),
        );
        assert_eq!(result.jobs[&1].gpu.interpolated_mj, 750);
        assert_eq!(result.jobs[&2].gpu.interpolated_mj, 250);
    }

    #[test]
    fn mig_instances_split_by_slices_and_unheld_slices_are_idle() {
        let mut three = holding(1, 0, 10, &[], &[]);
        three.mig = vec![MigInstance {
            device: 0,
            slices: 3,
        }];
        let mut two = holding(2, 0, 10, &[], &[]);
        two.mig = vec![MigInstance {
            device: 0,
            slices: 2,
        }];
        let holdings = [three, two];
        let result = plain(&[gpu_piece(0, 0, 10, 700)], &holdings);
        assert_eq!(result.jobs[&1].gpu.estimated_mj, 300);
        assert_eq!(result.jobs[&2].gpu.estimated_mj, 200);
        assert_eq!(result.idle.gpu.estimated_mj, 200);
        // GPU time: a 3g instance for 7 ns is 3 GPU-ns.
        assert_eq!(gpu_time_held(span(0, 7), &holdings)[&1], 3);
    }

    #[test]
    fn cpu_dynamic_power_follows_cpu_time_and_baseline_follows_the_policy() {
        let cpus: Vec<u32> = (0..4).collect();
        // 10 s at a 20 W baseline = 200 000 mJ of the 500 000 mJ piece.
        let piece = EnergyPiece {
            resource: Resource::CpuPackage(&cpus),
            span: span(0, 10_000_000_000),
            energy_mj: 500_000,
            quality: Quality::Measured,
        };
        let holdings = [
            holding(1, 0, 10_000_000_000, &[], &[0]),
            holding(2, 0, 10_000_000_000, &[], &[1]),
        ];
        let usage = Usage {
            cpu_ns: BTreeMap::from([(1, 2_000_000_000), (2, 1_000_000_000)]),
            ..Usage::default()
        };
        let mut policy = Policy {
            package_baseline_mw: 20_000,
            ..Policy::default()
        };
        let by_cores = attribute(&[piece], &holdings, &usage, &policy);
        assert_eq!(by_cores.jobs[&1].cpu.total_mj(), 200_000 + 50_000);
        assert_eq!(by_cores.jobs[&2].cpu.total_mj(), 100_000 + 50_000);
        assert_eq!(by_cores.idle.cpu.total_mj(), 100_000);
        policy.cpu_baseline = CpuBaselinePolicy::Idle;
        let idle = attribute(&[piece], &holdings, &usage, &policy);
        assert_eq!(idle.jobs[&1].cpu.total_mj(), 200_000);
        assert_eq!(idle.jobs[&2].cpu.total_mj(), 100_000);
        assert_eq!(idle.idle.cpu.total_mj(), 200_000);
    }

    fn outlet_piece(energy_mj: u64) -> EnergyPiece<'static> {
        EnergyPiece {
            resource: Resource::Host,
            span: span(0, 10),
            energy_mj,
            quality: Quality::Measured,
        }
    }

    #[test]
    fn outlet_remainder_is_shared_by_component_energy() {
        // GPU 0 held by job 1 (600), GPU 1 idle (200); the outlet saw 1 000: 200 more.
        let pieces = [
            gpu_piece(0, 0, 10, 600),
            gpu_piece(1, 0, 10, 200),
            outlet_piece(1_000),
        ];
        let result = plain(&pieces, &[holding(1, 0, 10, &[0], &[])]);
        assert_eq!(result.remainder_source, RemainderSource::Outlet);
        assert_eq!(result.jobs[&1].remainder.estimated_mj, 150);
        assert_eq!(result.idle.remainder.estimated_mj, 50);
        assert_eq!(result.host_mj(), 1_000);
    }

    #[test]
    fn an_outlet_below_its_components_is_a_finding_not_a_negative_share() {
        let pieces = [gpu_piece(0, 0, 10, 600), outlet_piece(550)];
        let result = plain(&pieces, &[holding(1, 0, 10, &[0], &[])]);
        assert_eq!(result.remainder_deficit_mj, 50);
        assert_eq!(result.jobs[&1].remainder.total_mj(), 0);
        assert_eq!(result.jobs[&1].gpu.measured_mj, 600);
        assert_eq!(result.host_mj(), 550);
    }

    #[test]
    fn without_an_outlet_the_overhead_factor_is_estimated() {
        let policy = Policy {
            host_overhead_ppm: 80_000,
            ..Policy::default()
        };
        let result = attribute(
            &[gpu_piece(0, 0, 10, 1_000)],
            &[holding(1, 0, 10, &[0], &[])],
            &Usage::default(),
            &policy,
        );
        assert_eq!(result.remainder_source, RemainderSource::Factor);
        assert_eq!(result.jobs[&1].remainder.estimated_mj, 80);
        assert_eq!(result.host_mj(), 1_080);
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
                    mig: Vec::new(),
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
            mig in prop::collection::vec((0usize..8, 0u32..4, 1u32..8), 0..4),
            gpu_usage in prop::collection::btree_map((0u32..4, 0u32..5), 0u64..1_000, 0..6),
            cpu_ns in prop::collection::btree_map(0u32..5, 0u64..10_000_000_000, 0..5),
            outlet in prop::option::of(0u64..u64::MAX / 16),
            baseline_mw in 0u64..100_000,
            idle_baseline in any::<bool>(),
            host_overhead_ppm in 0u64..300_000,
        ) {
            let mut holdings = holdings;
            for (index, device, slices) in mig {
                if let Some(holding) = holdings.get_mut(index) {
                    holding.mig.push(MigInstance { device, slices });
                }
            }
            let usage = Usage { gpu: gpu_usage, cpu_ns };
            let policy = Policy {
                cpu_baseline: if idle_baseline { CpuBaselinePolicy::Idle } else { CpuBaselinePolicy::ByCores },
                package_baseline_mw: baseline_mw,
                dram_baseline_mw: baseline_mw / 4,
                host_overhead_ppm,
            };
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
            if let Some(outlet) = outlet {
                pieces.push(EnergyPiece {
                    resource: Resource::Host,
                    span: span(0, 10),
                    energy_mj: outlet,
                    quality: Quality::Measured,
                });
            }
            let result = attribute(&pieces, &holdings, &usage, &policy);
            let mut sum = result.idle;
            sum.merge(&result.unattributed);
            for job in result.jobs.values() {
                sum.merge(job);
            }
            prop_assert_eq!(sum.gpu.total_mj(), result.measured.gpu.total_mj());
            prop_assert_eq!(sum.cpu.total_mj(), result.measured.cpu.total_mj());
            prop_assert_eq!(sum.dram.total_mj(), result.measured.dram.total_mj());
            prop_assert_eq!(sum.remainder, result.measured.remainder);
            prop_assert_eq!(sum.by_quality(), result.measured.by_quality());
            let components: u64 = pieces
                .iter()
                .filter(|p| p.resource != Resource::Host)
                .map(|p| p.energy_mj)
                .sum();
            prop_assert_eq!(result.measured.components_mj(), components);
            match outlet {
                Some(outlet) => prop_assert_eq!(result.host_mj(), outlet),
                None => prop_assert_eq!(result.remainder_deficit_mj, 0),
            }
        }

        /// A job that alone holds a GPU over a whole piece gets all of it, at the piece's quality.
        #[test]
        fn sole_holder_gets_everything(energy in any::<u64>(), start in -50i64..50, len in 1i64..100) {
            let piece = gpu_piece(2, start, start + len, energy);
            let result = plain(&[piece], &[holding(9, start - 1, start + len + 1, &[2], &[])]);
            prop_assert_eq!(result.jobs.get(&9).map(|j| j.gpu.measured_mj).unwrap_or(0), energy);
        }
    }
}
