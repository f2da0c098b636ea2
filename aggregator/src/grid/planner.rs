//! From a demand-response budget to GPU power caps: how much of the budget is left for the GPUs
//! jobs hold once the rest of the site's draw is counted, and how it is shared among them —
//! each GPU keeps its minimum and gets a share of the rest in proportion to what it draws above
//! its minimum now, so a capped GPU's cap is also its next draw and the plan holds still. Caps go
//! out under a lease and are renewed while the event is in force; when it ends they are released.

use rusqlite::{Connection, params};

use crate::Result;

/// A GPU a job holds, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuNow {
    pub collector: String,
    pub device: String,
    /// Its mean draw over the latest built window, W.
    pub power_w: f64,
    pub min_w: u32,
    pub max_w: u32,
    /// The holding job's kind (`JobKind`).
    pub kind: i32,
    /// The holding job's priority from `grid.job_priorities` (0 when no rule matches).
    pub priority: i64,
}

/// The caps for a budget: (collector, device, W) for every GPU whose share is below its
/// maximum, and a line saying how it was decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub caps: Vec<(String, String, u32)>,
    pub note: String,
}

/// Which GPUs give way first under a budget (`grid.cap_policy`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CapPolicy {
    /// Every GPU a job holds gives way in proportion to its draw above its minimum.
    #[default]
    Proportional,
    /// Training jobs' GPUs give way first; the others keep their draw while the budget allows.
    TrainingFirst,
    /// Inference jobs' GPUs give way first.
    InferenceFirst,
    /// The GPUs of jobs of lower priority (`grid.job_priorities`) give way first.
    ByPriority,
}

/// A rule giving the jobs it matches a priority (`[[grid.job_priorities]]`): every field given
/// must match; the first rule that matches a job wins; a job no rule matches has priority 0.
/// Higher keeps its power longer under `cap_policy = "by_priority"`.
#[derive(
    Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct JobPriority {
    /// The job's project (Slurm account, Kubernetes namespace).
    pub project: Option<String>,
    /// The job's user.
    pub user: Option<String>,
    /// The start of the job's name.
    pub name_prefix: Option<String>,
    /// `training`, `inference` or `other`.
    pub kind: Option<String>,
    /// `slurm`, `kubernetes`, `process` or `static`.
    pub scheduler: Option<String>,
    /// The priority of the jobs the rule matches; higher keeps power longer.
    pub priority: i64,
}

/// The fields of a job the priority rules look at.
#[derive(Clone, Copy, Debug)]
pub struct JobFields<'a> {
    pub project: &'a str,
    pub user: &'a str,
    pub name: &'a str,
    pub kind: i32,
    pub scheduler: &'a str,
}

/// The priority of the first rule in `rules` that matches `job`; 0 when none does.
pub fn priority_of(rules: &[JobPriority], job: JobFields<'_>) -> i64 {
    let kind = footprint_proto::v1::JobKind::try_from(job.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("JOB_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    rules
        .iter()
        .find(|rule| {
            rule.project.as_deref().is_none_or(|p| p == job.project)
                && rule.user.as_deref().is_none_or(|u| u == job.user)
                && rule
                    .name_prefix
                    .as_deref()
                    .is_none_or(|n| job.name.starts_with(n))
                && rule.kind.as_deref().is_none_or(|k| k == kind)
                && rule.scheduler.as_deref().is_none_or(|s| s == job.scheduler)
        })
        .map_or(0, |rule| rule.priority)
}

/// Shares `budget_kw` of a site drawing `facility_kw` among `gpus`, by `policy`.
pub fn plan(budget_kw: f64, facility_kw: f64, gpus: &[GpuNow], policy: CapPolicy) -> Plan {
    let gpu_w: f64 = gpus.iter().map(|g| g.power_w.max(0.0)).sum();
    let other_w = (facility_kw * 1_000.0 - gpu_w).max(0.0);
    let for_gpus = budget_kw * 1_000.0 - other_w;
    let floor_w: f64 = gpus.iter().map(|g| f64::from(g.min_w)).sum();
    // Tiers, most important first: a tier keeps its draw while the budget allows it with every
    // tier after it at its minimum; the first that cannot shares what is left above those
    // minimums, and every tier after it is held at its minimum.
    let tier_of = |gpu: &GpuNow| -> i64 {
        let training = footprint_proto::v1::JobKind::Training as i32;
        let inference = footprint_proto::v1::JobKind::Inference as i32;
        match policy {
            CapPolicy::Proportional => 0,
            CapPolicy::TrainingFirst => i64::from(gpu.kind != training),
            CapPolicy::InferenceFirst => i64::from(gpu.kind != inference),
            CapPolicy::ByPriority => gpu.priority,
        }
    };
    let mut tiers: std::collections::BTreeMap<i64, Vec<&GpuNow>> = Default::default();
    for gpu in gpus {
        tiers.entry(tier_of(gpu)).or_default().push(gpu);
    }
    let tiers: Vec<Vec<&GpuNow>> = tiers.into_values().rev().collect();
    let floor_of = |tier: &[&GpuNow]| -> f64 { tier.iter().map(|g| f64::from(g.min_w)).sum() };
    let mut caps = Vec::new();
    let mut left_w = for_gpus;
    for (index, tier) in tiers.iter().enumerate() {
        let below_floor: f64 = tiers[index + 1..].iter().map(|t| floor_of(t)).sum();
        let keep_w: f64 = tier.iter().map(|g| g.power_w.max(f64::from(g.min_w))).sum();
        let last = index + 1 == tiers.len();
        if !last && left_w - below_floor >= keep_w {
            left_w -= keep_w;
            continue;
        }
        caps.extend(share(left_w - below_floor, tier));
        for lower in &tiers[index + 1..] {
            caps.extend(share(floor_of(lower), lower));
        }
        break;
    }
    caps.sort();
    let order = match policy {
        CapPolicy::Proportional => "shared by draw above each GPU's minimum",
        CapPolicy::TrainingFirst => "training jobs' GPUs giving way first",
        CapPolicy::InferenceFirst => "inference jobs' GPUs giving way first",
        CapPolicy::ByPriority => "lower-priority jobs' GPUs giving way first",
    };
    let note = if for_gpus < floor_w {
        format!(
            "budget {budget_kw} kW cannot be met: the rest of the site draws {:.1} kW and the \
             GPUs' minimums add up to {:.1} kW; GPUs at their minimum",
            other_w / 1_000.0,
            floor_w / 1_000.0
        )
    } else {
        format!(
            "budget {budget_kw} kW: {:.1} kW for {} GPUs (the rest of the site draws {:.1} kW), \
             {order}",
            for_gpus / 1_000.0,
            gpus.len(),
            other_w / 1_000.0
        )
    };
    Plan { caps, note }
}

/// `budget_w` shared among `gpus`: each keeps its minimum and gets a share of the rest in
/// proportion to its draw above it; only caps below a GPU's maximum are returned.
fn share(budget_w: f64, gpus: &[&GpuNow]) -> Vec<(String, String, u32)> {
    let floor_w: f64 = gpus.iter().map(|g| f64::from(g.min_w)).sum();
    let above: Vec<f64> = gpus
        .iter()
        .map(|g| (g.power_w - f64::from(g.min_w)).max(0.0))
        .collect();
    let above_total: f64 = above.iter().sum();
    let spare = (budget_w - floor_w).max(0.0);
    gpus.iter()
        .zip(&above)
        .filter_map(|(gpu, above)| {
            let share = if above_total > 0.0 {
                spare * above / above_total
            } else {
                spare / gpus.len().max(1) as f64
            };
            let watts = (f64::from(gpu.min_w) + share).floor();
            let watts = (watts as u32).clamp(gpu.min_w, gpu.max_w.max(gpu.min_w));
            (watts < gpu.max_w).then(|| (gpu.collector.clone(), gpu.device.clone(), watts))
        })
        .collect()
}

/// Plans and sends caps every `grid.cap_interval_s` while `grid.cap_gpus` is on, until
/// `shutdown`; the GPUs it capped are released when no budget is in force any more, and when it
/// stops.
pub async fn run(
    reader: crate::query::LedgerReader,
    directives: crate::ingest::Directives,
    config: crate::config::AggregatorConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use std::collections::BTreeSet;
    let grid = config.grid.clone();
    let mut capped: BTreeSet<(String, String)> = BTreeSet::new();
    let mut next_id = 1u64;
    let release = |capped: &mut BTreeSet<(String, String)>,
                   keep: &BTreeSet<(String, String)>,
                   why: &str| {
        for (collector, device) in capped.difference(keep) {
            let cap = footprint_proto::v1::PowerCap {
                device: device.clone(),
                release: true,
                reason: why.to_owned(),
                ..Default::default()
            };
            if let Err(error) = directives.send_cap(collector, cap) {
                tracing::warn!(%collector, %device, %error, "Releasing a GPU cap failed; its lease will.");
            }
        }
        capped.retain(|gpu| keep.contains(gpu));
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(u64::from(
        grid.cap_interval_s.max(1),
    )));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = crate::now_ns();
        let connected = directives.connected();
        let settings = config.clone();
        let read = reader
            .with(move |connection| {
                let events = super::events::list(connection, Some(now))?;
                let budget = super::signal::budget_of(&events);
                let facility = super::signal::facility_power_kw(connection, &settings, now)?;
                let priorities = &settings.grid.job_priorities;
                Ok((
                    budget,
                    facility,
                    gpus_now(connection, &connected, priorities)?,
                ))
            })
            .await;
        let (budget, facility, gpus) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "Planning GPU caps failed this round.");
                continue;
            }
        };
        let Some((budget_kw, event)) = budget else {
            release(
                &mut capped,
                &BTreeSet::new(),
                "no capacity limit is in force",
            );
            continue;
        };
        let Some(facility_kw) = facility else {
            tracing::warn!(
                "A capacity limit is in force but no site window is built: no caps this round."
            );
            continue;
        };
        let planned = plan(budget_kw, facility_kw, &gpus, grid.cap_policy);
        let until_ns = now + i64::from(grid.cap_lease_s) * 1_000_000_000;
        let mut sent = BTreeSet::new();
        for (collector, device, watts) in planned.caps {
            let cap = footprint_proto::v1::PowerCap {
                device: device.clone(),
                watts,
                until_ns,
                id: next_id,
                reason: format!("event {event}: {}", planned.note),
                release: false,
            };
            next_id += 1;
            match directives.send_cap(&collector, cap) {
                Ok(()) => {
                    sent.insert((collector, device));
                }
                Err(error) => {
                    tracing::warn!(%collector, %device, %error, "Sending a GPU cap failed.")
                }
            }
        }
        release(&mut capped, &sent, "the plan no longer caps this GPU");
        capped.extend(sent);
    }
    release(&mut capped, &BTreeSet::new(), "the aggregator is stopping");
}

/// A GPU's settable range from the method text the NVML source writes ("… power limit 700 W
/// (settable 200–700 W)").
pub fn settable_range(method: &str) -> Option<(u32, u32)> {
    let rest = &method[method.find("(settable ")? + "(settable ".len()..];
    let (min, rest) = rest.split_once('–')?;
    let max = rest.split_once(" W)")?.0;
    Some((min.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// The GPUs jobs hold on the collectors in `connected`, with their draw over each host's latest
/// built window (a job's GPU energy over its GPU time there) and their settable range.
///
/// # Errors
/// A database error.
pub fn gpus_now(
    connection: &Connection,
    connected: &[String],
    priorities: &[JobPriority],
) -> Result<Vec<GpuNow>> {
    let mut gpus = Vec::new();
    let mut held = connection.prepare_cached(
        "SELECT a.job, a.gpus, j.kind, j.project, j.user, j.name, j.scheduler
         FROM allocations a JOIN jobs j ON j.id = a.job
         WHERE a.collector = ?1 AND a.end_ns IS NULL",
    )?;
    let mut latest = connection.prepare_cached(
        "SELECT gpu_mj, gpu_ns FROM window_jobs WHERE collector = ?1 AND job = ?2
         AND start_ns = (SELECT MAX(start_ns) FROM window_jobs WHERE collector = ?1 AND job = ?2)",
    )?;
    let mut method = connection.prepare_cached(
        "SELECT method FROM meters WHERE collector = ?1 AND device = ?2 AND kind = ?3 LIMIT 1",
    )?;
    for name in connected {
        let Some(collector): Option<i64> = connection
            .query_row("SELECT id FROM collectors WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .ok()
        else {
            continue;
        };
        let allocations: Vec<(i64, String, i32, i64)> = held
            .query_map([collector], |r| {
                let kind = r.get(2)?;
                let (project, user, name, scheduler): (String, String, String, String) =
                    (r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
                let fields = JobFields {
                    project: &project,
                    user: &user,
                    name: &name,
                    kind,
                    scheduler: &scheduler,
                };
                Ok((r.get(0)?, r.get(1)?, kind, priority_of(priorities, fields)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (job, devices, kind, priority) in allocations {
            let (gpu_mj, gpu_ns): (i64, i64) = latest
                .query_row(params![collector, job], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap_or((0, 0));
            if gpu_ns <= 0 {
                continue;
            }
            // mJ over GPU-ns: the mean draw of one of the job's GPUs.
            let power_w = gpu_mj as f64 / (gpu_ns as f64 / 1e6);
            for device in crate::codec::split_list(&devices) {
                let text: Option<String> = method
                    .query_row(
                        params![
                            collector,
                            device,
                            footprint_proto::v1::MeterKind::GpuEnergy as i32
                        ],
                        |r| r.get(0),
                    )
                    .ok();
                let Some((min_w, max_w)) = text.as_deref().and_then(settable_range) else {
                    continue;
                };
                gpus.push(GpuNow {
                    collector: name.clone(),
                    device,
                    power_w,
                    min_w,
                    max_w,
                    kind,
                    priority,
                });
            }
        }
    }
    Ok(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gpu(device: &str, power_w: f64) -> GpuNow {
        GpuNow {
            collector: "a".into(),
            device: device.into(),
            power_w,
            min_w: 200,
            max_w: 700,
            kind: footprint_proto::v1::JobKind::Training as i32,
            priority: 0,
        }
    }

    #[test]
    fn a_policy_chooses_which_jobs_give_way_first() {
        let inference = GpuNow {
            kind: footprint_proto::v1::JobKind::Inference as i32,
            ..gpu("gpu1", 500.0)
        };
        let gpus = [gpu("gpu0", 500.0), inference];
        // 1.6 kW for a site of 2.0 (1.0 of it not GPUs): 600 W for two GPUs drawing 500 each.
        let training_first = plan(1.6, 2.0, &gpus, CapPolicy::TrainingFirst);
        // Inference's 500 W and training's 200 W minimum do not fit in 600 W: training goes to its
        // minimum and inference gets the 400 W left.
        assert_eq!(
            training_first.caps,
            vec![
                ("a".into(), "gpu0".into(), 200),
                ("a".into(), "gpu1".into(), 400)
            ]
        );
        // With room for inference's whole draw, only training gives way.
        let roomy = plan(1.8, 2.0, &gpus, CapPolicy::TrainingFirst);
        assert_eq!(roomy.caps, vec![("a".into(), "gpu0".into(), 300)]);
        let inference_first = plan(1.8, 2.0, &gpus, CapPolicy::InferenceFirst);
        assert_eq!(inference_first.caps, vec![("a".into(), "gpu1".into(), 300)]);
        assert!(
            inference_first
                .note
                .contains("inference jobs' GPUs giving way first")
        );
        // Proportional: both give way alike.
        let even = plan(1.8, 2.0, &gpus, CapPolicy::Proportional);
        assert_eq!(
            even.caps,
            vec![
                ("a".into(), "gpu0".into(), 400),
                ("a".into(), "gpu1".into(), 400)
            ]
        );
    }

    #[test]
    fn by_priority_the_least_important_give_way_first_and_rules_match_in_order() {
        let with = |device: &str, priority: i64| GpuNow {
            priority,
            ..gpu(device, 500.0)
        };
        let gpus = [with("low", -5), with("normal", 0), with("high", 10)];
        // 1.0 kW of the site is not GPUs; a 2.2 kW budget leaves 1 200 W for GPUs drawing
        // 1 500: high and normal keep their 500 (the low one's 200 W minimum still fits) and
        // low gets the 200 W left, its minimum.
        let planned = plan(2.2, 2.5, &gpus, CapPolicy::ByPriority);
        assert_eq!(planned.caps, vec![("a".into(), "low".into(), 200)]);
        // 900 W for GPUs: high keeps 500; normal gets what is left above low's minimum,
        // 900 − 500 − 200 = 200 W (its minimum); low its minimum.
        let planned = plan(1.9, 2.5, &gpus, CapPolicy::ByPriority);
        assert_eq!(
            planned.caps,
            vec![
                ("a".into(), "low".into(), 200),
                ("a".into(), "normal".into(), 200)
            ]
        );
        assert!(
            planned
                .note
                .contains("lower-priority jobs' GPUs giving way first")
        );

        let rules = [
            JobPriority {
                project: Some("serving".into()),
                kind: Some("inference".into()),
                priority: 10,
                ..Default::default()
            },
            JobPriority {
                name_prefix: Some("sweep-".into()),
                priority: -5,
                ..Default::default()
            },
            JobPriority {
                project: Some("serving".into()),
                priority: 5,
                ..Default::default()
            },
        ];
        let job = |project, name, kind: footprint_proto::v1::JobKind| JobFields {
            project,
            user: "ana",
            name,
            kind: kind as i32,
            scheduler: "slurm",
        };
        use footprint_proto::v1::JobKind;
        assert_eq!(
            priority_of(&rules, job("serving", "chat", JobKind::Inference)),
            10
        );
        assert_eq!(
            priority_of(&rules, job("serving", "sweep-1", JobKind::Training)),
            -5
        );
        assert_eq!(
            priority_of(&rules, job("serving", "eval", JobKind::Training)),
            5
        );
        assert_eq!(
            priority_of(&rules, job("research", "llm", JobKind::Training)),
            0
        );
    }

    #[test]
    fn the_budget_left_for_gpus_is_shared_by_draw_above_their_minimum() {
        // Site 2 000 W: GPUs 600 + 400, the rest 1 000. Budget 1.6 kW leaves 600 W for the GPUs:
        // 400 W of minimums and 200 W shared 400:200.
        let shared = plan(
            1.6,
            2.0,
            &[gpu("gpu0", 600.0), gpu("gpu1", 400.0)],
            CapPolicy::Proportional,
        );
        assert_eq!(
            shared.caps,
            vec![
                ("a".into(), "gpu0".into(), 333),
                ("a".into(), "gpu1".into(), 266)
            ]
        );
        assert!(shared.note.contains("0.6 kW for 2 GPUs"), "{}", shared.note);
        // A budget the GPUs alone cannot meet: everything at its minimum, and said.
        let short = plan(
            1.1,
            2.0,
            &[gpu("gpu0", 600.0), gpu("gpu1", 400.0)],
            CapPolicy::Proportional,
        );
        assert!(short.caps.iter().all(|c| c.2 == 200));
        assert!(short.note.contains("cannot be met"));
        // Room to spare: no GPU is capped below its maximum, so no cap is sent.
        assert!(
            plan(10.0, 2.0, &[gpu("gpu0", 600.0)], CapPolicy::Proportional)
                .caps
                .is_empty()
        );
    }

    #[test]
    fn ranges_are_read_from_the_nvml_method_text() {
        let method = "NVML nvmlDeviceGetTotalEnergyConsumption (board energy counter, mJ) of NVIDIA H100 GPU-x; power limit 700 W (settable 200–700 W)";
        assert_eq!(settable_range(method), Some((200, 700)));
        assert_eq!(settable_range("power limit unreadable"), None);
    }

    proptest! {
        /// Under `by_priority`, a GPU gives way (is capped below its draw) only once every GPU of
        /// a job of lower priority is at its minimum; and every cap is within its GPU's range.
        #[test]
        fn a_gpu_gives_way_only_after_every_less_important_one(
            gpus in prop::collection::vec((0.0f64..800.0, -3i64..3), 1..20),
            other_kw in 0.0f64..20.0,
            budget_kw in 0.0f64..40.0,
        ) {
            let gpus: Vec<GpuNow> = gpus
                .iter()
                .enumerate()
                .map(|(i, (draw, priority))| GpuNow { priority: *priority, ..gpu(&format!("gpu{i}"), *draw) })
                .collect();
            let facility_kw = other_kw + gpus.iter().map(|g| g.power_w).sum::<f64>() / 1_000.0;
            let planned = plan(budget_kw, facility_kw, &gpus, CapPolicy::ByPriority);
            let cap_of = |g: &GpuNow| planned.caps.iter().find(|c| c.1 == g.device).map(|c| c.2);
            for g in &gpus {
                if let Some(watts) = cap_of(g) {
                    prop_assert!((g.min_w..g.max_w).contains(&watts));
                    if f64::from(watts) + 1.0 < g.power_w {
                        for lower in gpus.iter().filter(|h| h.priority < g.priority) {
                            prop_assert_eq!(cap_of(lower), Some(lower.min_w), "{} gave way before {}", g.device, lower.device);
                        }
                    }
                }
            }
        }

        /// Whatever the budget and draws: every cap within its GPU's range, and the caps never
        /// add up to more than the budget leaves the GPUs when it can be met.
        #[test]
        fn caps_stay_in_range_and_within_the_budget(
            draws in prop::collection::vec(0.0f64..800.0, 1..20),
            other_kw in 0.0f64..50.0,
            budget_kw in 0.0f64..60.0,
        ) {
            let gpus: Vec<GpuNow> = draws.iter().enumerate().map(|(i, d)| gpu(&format!("gpu{i}"), *d)).collect();
            let facility_kw = other_kw + draws.iter().sum::<f64>() / 1_000.0;
            let planned = plan(budget_kw, facility_kw, &gpus, CapPolicy::Proportional);
            for (_, _, watts) in &planned.caps {
                prop_assert!((200..700).contains(watts));
            }
            let for_gpus = budget_kw * 1_000.0 - other_kw * 1_000.0;
            let floor = 200.0 * gpus.len() as f64;
            if for_gpus >= floor {
                // Uncapped GPUs may draw their maximum: with the caps, still within the budget.
                let capped: f64 = planned.caps.iter().map(|c| f64::from(c.2)).sum();
                let uncapped = (gpus.len() - planned.caps.len()) as f64 * 700.0;
                prop_assert!(capped + uncapped <= for_gpus + 1e-6, "{capped} + {uncapped} > {for_gpus}");
            } else {
                prop_assert!(planned.caps.iter().all(|c| c.2 == 200));
                prop_assert_eq!(planned.caps.len(), gpus.len());
            }
        }
    }
}
