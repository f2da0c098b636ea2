//! The simulated site of the demo: hosts, their jobs, and a facility meter, drawn from a seed.
//!
//! Each host has two halves of four GPUs (one per CPU package). Hosts 0 and 1 start with one
//! distributed training job holding all their GPUs; every half then runs a random sequence of
//! training jobs (all four GPUs), inference jobs (one or two GPUs) and idle gaps. Every GPU is
//! an H100 drawing the recorded power of BioHPC's H100 host (cbsugpu08, Nov–Dec 2024): a training
//! job replays a stretch of the trace as long as itself whose mean is a busy GPU's, an inference
//! job one whose mean is a partly loaded GPU's, and idle GPUs draw just below the trace's floor.

use footprint_collector::config::{CollectorConfig, SimulatedClockConfig, SourceConfig};
use footprint_collector::sources::replay::{ReplayConfig, ReplayJobConfig, ReplayOutletConfig};
use footprint_collector::sources::site_replay::SiteReplayConfig;
use footprint_collector::trace::PowerTrace;
use footprint_core::UnixNanos;
use footprint_core::rng::SplitMix64;
use footprint_core::time::format_rfc3339;

const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;

/// What the demo simulates.
#[derive(Clone, Debug)]
pub struct SitePlan {
    pub hosts: u32,
    pub gpus_per_host: u32,
    pub start: UnixNanos,
    pub hours: u32,
    pub seed: u64,
    pub speed: f64,
    pub sample_interval_ms: u64,
    pub samples_per_batch: u32,
    /// Where each collector's spool directory goes (one per collector); `None`: in memory.
    pub spool_root: Option<std::path::PathBuf>,
}

const TRAINING_MODELS: [&str; 5] = [
    "llama-3-70b",
    "mistral-7b-ft",
    "vit-h-14",
    "whisper-large-ft",
    "sdxl-ft",
];
/// Throughput the demo's jobs report, thousands of tokens per GPU-hour: illustrative round
/// figures for H100-class GPUs, used only to show per-unit figures and SCI.
const TRAINING_KTOKENS_PER_GPU_HOUR: u64 = 2_000;
const INFERENCE_KTOKENS_PER_GPU_HOUR: u64 = 4_000;
const INFERENCE_MODELS: [&str; 4] = ["llama-3-8b-chat", "e5-embed", "whisper-asr", "bge-rerank"];
const TEAMS: [(&str, &str); 4] = [
    ("ana", "nlp"),
    ("bo", "vision"),
    ("chen", "speech"),
    ("dee", "platform"),
];

fn pick<'a, T>(rng: &mut SplitMix64, items: &'a [T]) -> &'a T {
    &items[rng.range(0, items.len() as u64) as usize]
}

/// The trace the demo's GPUs replay: BioHPC's H100 host, so that every simulated host is the
/// hardware its power came from.
const TRACE_HOST: &str = "cbsugpu08";
/// The GPU model of that host, as NVML would name it.
const TRACE_GPU_MODEL: &str = "NVIDIA H100 80GB HBM3";
/// Idle board power of the simulated GPUs, W: just below the trace's lowest hour (49.8 W), so a
/// GPU a job holds never draws less than an idle one.
const GPU_IDLE_W: f64 = 48.0;
/// Mean per-GPU power, W, over a job's span of the trace: training runs from its busy stretches,
/// inference from its partly loaded ones (the trace's idle hours sit near 50 W, its busy ones
/// near 345 W).
const TRAINING_W: std::ops::Range<f64> = 280.0..f64::INFINITY;
const INFERENCE_W: std::ops::Range<f64> = 80.0..280.0;

/// A random trace hour label of the demo's trace host from which the next `span_hours` hours
/// (cycling at the trace's end) average a power in `watts`; any hour when none does.
fn trace_start(
    rng: &mut SplitMix64,
    trace: &PowerTrace,
    watts: &std::ops::Range<f64>,
    span_hours: usize,
) -> String {
    let hours = trace.hours(TRACE_HOST).unwrap_or(&[]);
    let span = span_hours.clamp(1, hours.len().max(1));
    let mean_w = |first: usize| {
        (0..span)
            .map(|offset| hours[(first + offset) % hours.len()].power_mw as f64)
            .sum::<f64>()
            / span as f64
            / 1_000.0
    };
    let fitting: Vec<usize> = (0..hours.len())
        .filter(|first| watts.contains(&mean_w(*first)))
        .collect();
    let pool: Vec<usize> = if fitting.is_empty() {
        (0..hours.len()).collect()
    } else {
        fitting
    };
    pool.get(rng.range(0, pool.len() as u64) as usize)
        .map(|first| hours[*first].label.clone())
        .unwrap_or_default()
}

fn span_hours(from_ns: i64, to_ns: i64) -> usize {
    usize::try_from((to_ns - from_ns + HOUR_NS - 1) / HOUR_NS).unwrap_or(1)
}

fn cpulist(first: u32, count: u32) -> String {
    if count == 0 {
        String::new()
    } else {
        format!("{first}-{}", first + count - 1)
    }
}

impl SitePlan {
    pub fn end(&self) -> UnixNanos {
        UnixNanos(self.start.0 + i64::from(self.hours) * HOUR_NS)
    }

    pub fn host_name(index: u32) -> String {
        format!("gpu-node-{:02}", index + 1)
    }

    /// The replay configuration of every host.
    pub fn hosts(&self) -> Vec<(String, ReplayConfig)> {
        let trace = PowerTrace::embedded();
        let mut rng = SplitMix64::new(self.seed);
        let (start, end) = (self.start.0, self.end().0);
        let half = (self.gpus_per_host / 2).max(1);
        let cpus_per_gpu = 64 / self.gpus_per_host.max(1);
        let mut job_number = 0u32;
        let mut next_id = |prefix: &str| {
            job_number += 1;
            format!("{prefix}-{job_number:03}")
        };
        let distributed_end = (start + 12 * HOUR_NS).min(end);
        let distributed_id = next_id("train");
        let distributed_trace = trace_start(
            &mut rng,
            &trace,
            &TRAINING_W,
            span_hours(start, distributed_end),
        );
        let mut hosts = Vec::new();
        for host in 0..self.hosts {
            let mut jobs = Vec::new();
            let mut lane_start = start;
            if host < 2 && self.hosts >= 2 {
                jobs.push(ReplayJobConfig {
                    id: distributed_id.clone(),
                    name: "pretrain llama-3-70b (2 nodes)".into(),
                    user: "ana".into(),
                    project: "nlp".into(),
                    kind: "training".into(),
                    model: "llama-3-70b".into(),
                    gpus: (0..self.gpus_per_host).collect(),
                    cpus: cpulist(0, self.gpus_per_host * cpus_per_gpu),
                    start: format_rfc3339(UnixNanos(start)),
                    end: format_rfc3339(UnixNanos(distributed_end)),
                    trace_host: TRACE_HOST.into(),
                    trace_start: distributed_trace.clone(),
                    functional_unit: "1k tokens".into(),
                    units_per_hour: TRAINING_KTOKENS_PER_GPU_HOUR * u64::from(self.gpus_per_host),
                });
                lane_start = distributed_end;
            }
            for lane in 0..(self.gpus_per_host / half) {
                let lane_gpus: Vec<u32> = (lane * half..(lane + 1) * half).collect();
                let mut at = lane_start;
                while at < end {
                    let roll = rng.unit();
                    let minutes = |rng: &mut SplitMix64, low: u64, high: u64| {
                        i64::try_from(rng.range(low, high)).unwrap_or(60) * MINUTE_NS
                    };
                    if roll < 0.15 {
                        at += minutes(&mut rng, 20, 150);
                        continue;
                    }
                    let (team, project) = *pick(&mut rng, &TEAMS);
                    let training = roll < 0.55;
                    let (duration, gpus) = if training {
                        (minutes(&mut rng, 180, 720), lane_gpus.clone())
                    } else {
                        let count = rng.range(1, 3).min(lane_gpus.len() as u64) as usize;
                        (minutes(&mut rng, 45, 360), lane_gpus[..count].to_vec())
                    };
                    let job_end = (at + duration).min(end);
                    let (id, model, watts) = if training {
                        (
                            next_id("train"),
                            *pick(&mut rng, &TRAINING_MODELS),
                            &TRAINING_W,
                        )
                    } else {
                        (
                            next_id("infer"),
                            *pick(&mut rng, &INFERENCE_MODELS),
                            &INFERENCE_W,
                        )
                    };
                    let gpus_held = gpus.len() as u64;
                    jobs.push(ReplayJobConfig {
                        name: format!("{} {model}", if training { "train" } else { "serve" }),
                        id,
                        user: team.into(),
                        project: project.into(),
                        kind: if training { "training" } else { "inference" }.into(),
                        model: model.into(),
                        cpus: cpulist(gpus[0] * cpus_per_gpu, gpus.len() as u32 * cpus_per_gpu),
                        gpus,
                        start: format_rfc3339(UnixNanos(at)),
                        end: format_rfc3339(UnixNanos(job_end)),
                        trace_host: TRACE_HOST.into(),
                        trace_start: trace_start(&mut rng, &trace, watts, span_hours(at, job_end)),
                        functional_unit: "1k tokens".into(),
                        units_per_hour: if training {
                            TRAINING_KTOKENS_PER_GPU_HOUR
                        } else {
                            INFERENCE_KTOKENS_PER_GPU_HOUR
                        } * gpus_held,
                    });
                    at = job_end;
                }
            }
            hosts.push((
                Self::host_name(host),
                ReplayConfig {
                    trace: None,
                    gpus: self.gpus_per_host,
                    cpus: 64,
                    cpu_packages: 2,
                    gpu_idle_w: GPU_IDLE_W,
                    cpu_idle_w: 45.0,
                    cpu_core_w: 3.5,
                    dram_idle_w: 6.0,
                    dram_core_w: 0.4,
                    rapl_counter_max_mj: 262_143_328,
                    counter_start_mj: rng.range(0, 1_000_000_000),
                    gpu_model: TRACE_GPU_MODEL.into(),
                    // Odd-numbered hosts sit on a metered PDU outlet; the others rely on the
                    // aggregator's host overhead factor.
                    outlet: (host % 2 == 0).then_some(ReplayOutletConfig {
                        psu_efficiency: 0.94,
                        unmetered_w: 180.0,
                    }),
                    jobs,
                },
            ));
        }
        hosts
    }

    fn collector(&self, name: &str, aggregator: &str, source: SourceConfig) -> CollectorConfig {
        CollectorConfig {
            collector_id: Some(name.to_owned()),
            host: name.to_owned(),
            aggregator: aggregator.to_owned(),
            tls: None,
            insecure: false,
            sample_interval_ms: self.sample_interval_ms,
            samples_per_batch: self.samples_per_batch,
            // Only wall-clock ticks spread; the demo's clock is simulated.
            spread_ticks: true,
            spool_dir: self.spool_root.as_ref().map(|root| root.join(name)),
            spool_max_bytes: 1 << 30,
            spool_max_age_s: footprint_collector::config::default_spool_max_age_s(),
            spool_aged_step_s: footprint_collector::config::default_spool_aged_step_s(),
            flush_timeout_s: 60,
            metrics_listen: None,
            clock: Some(SimulatedClockConfig {
                start: format_rfc3339(self.start),
                speed: self.speed,
                stop_at: Some(format_rfc3339(self.end())),
                real_start: None,
            }),
            sources: vec![source],
        }
    }

    /// One collector config per host plus the facility meter's, named.
    pub fn collectors(&self, aggregator: &str) -> Vec<(String, CollectorConfig)> {
        let hosts = self.hosts();
        let site = SiteReplayConfig {
            meter_id: "site-main".into(),
            base_w: 400.0,
            pue_by_hour: vec![
                1.12, 1.115, 1.11, 1.11, 1.115, 1.12, 1.13, 1.15, 1.18, 1.21, 1.24, 1.27, 1.29,
                1.30, 1.30, 1.29, 1.27, 1.24, 1.21, 1.18, 1.16, 1.14, 1.13, 1.125,
            ],
            counter_start_mj: 7_200_000_000_000,
            water_meter_id: Some("site-water".into()),
            wue_by_hour: vec![
                0.9, 0.85, 0.8, 0.8, 0.85, 0.9, 1.0, 1.2, 1.4, 1.7, 2.0, 2.3, 2.5, 2.6, 2.6, 2.5,
                2.3, 2.0, 1.7, 1.4, 1.2, 1.1, 1.0, 0.95,
            ],
            hosts: hosts.iter().map(|(_, config)| config.clone()).collect(),
        };
        let mut collectors: Vec<(String, CollectorConfig)> = hosts
            .into_iter()
            .map(|(name, replay)| {
                let config = self.collector(&name, aggregator, SourceConfig::Replay(replay));
                (name, config)
            })
            .collect();
        collectors.push((
            "site-meter".to_owned(),
            self.collector("site-meter", aggregator, SourceConfig::SiteReplay(site)),
        ));
        collectors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_core::config::ConfigFile;

    fn plan(seed: u64) -> SitePlan {
        SitePlan {
            hosts: 4,
            gpus_per_host: 8,
            start: UnixNanos(1_730_678_400_000_000_000),
            hours: 24,
            seed,
            speed: 1440.0,
            sample_interval_ms: 5_000,
            samples_per_batch: 12,
            spool_root: None,
        }
    }

    #[test]
    fn every_generated_collector_config_validates_after_a_toml_round_trip() {
        for (name, config) in plan(7).collectors("http://127.0.0.1:1") {
            let text = toml::to_string(&config).unwrap();
            let loaded =
                CollectorConfig::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            assert_eq!(loaded.host, name);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_site_and_another_seed_another() {
        let a = toml::to_string(&plan(1).collectors("http://x:1")[0].1).unwrap();
        let b = toml::to_string(&plan(1).collectors("http://x:1")[0].1).unwrap();
        let c = toml::to_string(&plan(2).collectors("http://x:1")[0].1).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn there_are_training_and_inference_jobs_and_one_spans_two_hosts() {
        let hosts = plan(42).hosts();
        let jobs: Vec<&ReplayJobConfig> = hosts.iter().flat_map(|(_, h)| &h.jobs).collect();
        assert!(jobs.iter().any(|j| j.kind == "training"));
        assert!(jobs.iter().any(|j| j.kind == "inference"));
        let first = &jobs[0].id;
        assert_eq!(
            hosts
                .iter()
                .filter(|(_, h)| h.jobs.iter().any(|j| &j.id == first))
                .count(),
            2
        );
    }
}
