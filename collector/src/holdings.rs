//! Turning "who holds what now", seen at each tick, into the allocations that started, changed
//! or ended since the last tick — for sources that observe holdings (NVML processes, Kubernetes
//! pods) rather than being told of them.

use std::collections::{BTreeMap, BTreeSet};

use footprint_core::UnixNanos;
use footprint_proto::v1::{Allocation, Job, MigInstance};

/// What one job holds at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub job: Job,
    /// GPUs held whole, as `MeterInfo.device` names them.
    pub gpus: BTreeSet<String>,
    /// MIG slices held, per GPU.
    pub mig: BTreeMap<String, u32>,
    /// Logical CPUs held exclusively.
    pub cpus: BTreeSet<u32>,
}

impl Held {
    pub fn new(job: Job) -> Self {
        Self {
            job,
            gpus: BTreeSet::new(),
            mig: BTreeMap::new(),
            cpus: BTreeSet::new(),
        }
    }

    fn same_resources(&self, other: &Held) -> bool {
        self.gpus == other.gpus && self.mig == other.mig && self.cpus == other.cpus
    }
}

/// What one job holds, since when.
#[derive(Clone, Debug, PartialEq)]
struct Holding {
    held: Held,
    start_ns: i64,
}

impl Holding {
    fn allocation(&self, end_ns: i64) -> Allocation {
        Allocation {
            job: Some(self.held.job.clone()),
            gpus: self.held.gpus.iter().cloned().collect(),
            cpus: self.held.cpus.iter().copied().collect(),
            start_ns: self.start_ns,
            end_ns,
            mig: self
                .held
                .mig
                .iter()
                .map(|(device, slices)| MigInstance {
                    device: device.clone(),
                    slices: *slices,
                })
                .collect(),
        }
    }
}

/// The holdings reported so far.
#[derive(Debug, Default)]
pub struct Holdings {
    current: BTreeMap<String, Holding>,
}

impl Holdings {
    /// Compares what is held now (job id → holding) with what was; returns the allocations to
    /// report: a job gone ends at `at`, a new one starts at `at`, a changed one ends and starts
    /// again at `at`.
    pub fn update(&mut self, seen: BTreeMap<String, Held>, at: UnixNanos) -> Vec<Allocation> {
        let mut changes = Vec::new();
        let gone: Vec<String> = self
            .current
            .keys()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(holding) = self.current.remove(&id) {
                changes.push(holding.allocation(at.0));
            }
        }
        for (id, held) in seen {
            match self.current.get(&id) {
                Some(holding) if holding.held.same_resources(&held) => {}
                previous => {
                    if let Some(previous) = previous {
                        changes.push(previous.allocation(at.0));
                    }
                    let holding = Holding {
                        held,
                        start_ns: at.0,
                    };
                    changes.push(holding.allocation(0));
                    self.current.insert(id, holding);
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &str, gpus: &[&str]) -> (String, Held) {
        let mut held = Held::new(Job {
            id: id.into(),
            ..Job::default()
        });
        held.gpus = gpus.iter().map(|g| (*g).to_owned()).collect();
        (id.to_owned(), held)
    }

    #[test]
    fn starts_changes_and_ends_are_reported_once() {
        let mut holdings = Holdings::default();
        let summary = |allocations: Vec<Allocation>| -> Vec<(String, Vec<String>, i64, i64)> {
            allocations
                .into_iter()
                .map(|a| (a.job.unwrap().id, a.gpus, a.start_ns, a.end_ns))
                .collect()
        };
        let first = holdings.update([held("a", &["gpu0"])].into(), UnixNanos(10));
        assert_eq!(summary(first), [("a".into(), vec!["gpu0".into()], 10, 0)]);
        assert!(
            holdings
                .update([held("a", &["gpu0"])].into(), UnixNanos(20))
                .is_empty()
        );
        let changed = holdings.update([held("a", &["gpu0", "gpu1"])].into(), UnixNanos(30));
        assert_eq!(
            summary(changed),
            [
                ("a".into(), vec!["gpu0".into()], 10, 30),
                ("a".into(), vec!["gpu0".into(), "gpu1".into()], 30, 0)
            ]
        );
        let ended = holdings.update(BTreeMap::new(), UnixNanos(40));
        assert_eq!(
            summary(ended),
            [("a".into(), vec!["gpu0".into(), "gpu1".into()], 30, 40)]
        );
    }
}
