//! GPU power caps the aggregator asks for, applied so that they always come back off.
//!
//! Each cap is held under a lease: it lapses at `until_ns` unless renewed, and the GPU's
//! previous limit is restored then, when the aggregator says the cap is over, or when the
//! collector stops. Before a GPU is first capped, its previous limit is written to a state file
//! (fsynced, replaced atomically); a collector that starts and finds caps there (it was killed
//! while capping) restores them before anything else. A cap is clamped into the GPU's settable
//! range; without permission to set limits (not root, no `CAP_SYS_ADMIN`) or without the GPU,
//! nothing is changed and the outcome says so (a dry run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::sources::nvml::PowerLimits;

/// Why a limit could not be set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// Not allowed to set limits here: caps become a dry run.
    NoPermission(String),
    /// No such GPU, or its limit is not settable.
    Unknown(String),
    /// Anything else the driver said.
    Failed(String),
}

/// Sets GPU power limits: NVML on a GPU host, a stand-in in tests.
pub trait PowerLimiter: Send {
    /// The GPU's enforced limit and settable range, W.
    ///
    /// # Errors
    /// No such GPU, or its limits are not readable.
    fn limits(&mut self, device: &str) -> Result<PowerLimits, LimitError>;

    /// Sets the GPU's limit, W (within its range).
    ///
    /// # Errors
    /// Not permitted, no such GPU, or the driver refused.
    fn set(&mut self, device: &str, watts: u32) -> Result<(), LimitError>;
}

impl PowerLimiter for Box<dyn PowerLimiter> {
    fn limits(&mut self, device: &str) -> Result<PowerLimits, LimitError> {
        (**self).limits(device)
    }

    fn set(&mut self, device: &str, watts: u32) -> Result<(), LimitError> {
        (**self).set(device, watts)
    }
}

/// A host with no GPU power control: every cap is a dry run, said.
#[derive(Debug)]
pub struct NoGpuControl;

impl PowerLimiter for NoGpuControl {
    fn limits(&mut self, _device: &str) -> Result<PowerLimits, LimitError> {
        Err(LimitError::NoPermission(
            "this collector controls no GPU power (no NVML source): dry run".into(),
        ))
    }

    fn set(&mut self, _device: &str, _watts: u32) -> Result<(), LimitError> {
        Err(LimitError::NoPermission(
            "this collector controls no GPU power (no NVML source): dry run".into(),
        ))
    }
}

/// A cap in force, as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    /// The limit before the first cap, W: what is restored.
    previous_w: u32,
    cap_w: u32,
    until_ns: i64,
}

/// What became of a cap asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Set: from and to W, and why it differs from what was asked (clamped into the range).
    Applied {
        from_w: u32,
        to_w: u32,
        clamped: Option<String>,
    },
    /// Nothing changed: not permitted here, or no GPU; the reason.
    DryRun(String),
    /// Refused (unknown GPU, a driver error); the reason.
    Refused(String),
}

/// A limit put back, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub device: String,
    pub to_w: u32,
    pub why: &'static str,
    /// The driver's error if putting it back failed (it stays in the state file to retry).
    pub error: Option<String>,
}

/// Runs a capper for the daemon: applies the directives that arrive on `directives`, restores
/// caps whose lease ran out (checked every second of the wall clock), and everything when
/// `stop` is cancelled; every outcome, and every cap it ends, goes out on `reports`.
pub async fn serve(
    limiter: Box<dyn PowerLimiter>,
    state_file: PathBuf,
    mut directives: tokio::sync::mpsc::Receiver<footprint_proto::v1::PowerCap>,
    reports: tokio::sync::mpsc::Sender<footprint_proto::v1::DirectiveAck>,
    stop: tokio_util::sync::CancellationToken,
) {
    use footprint_proto::v1::DirectiveAck;
    use footprint_proto::v1::directive_ack::Outcome as Kind;
    let now = || crate::time::wall_clock_now().0;
    let report = |ack: DirectiveAck| {
        if reports.try_send(ack).is_err() {
            warn!("Power-cap report dropped: the uplink is not taking them.");
        }
    };
    let restored_ack = |r: Restored| DirectiveAck {
        id: 0,
        device: r.device,
        outcome: Kind::Restored as i32,
        from_w: 0,
        to_w: r.to_w,
        until_ns: 0,
        reason: match r.error {
            Some(error) => format!("{}; restoring failed: {error}", r.why),
            None => r.why.to_owned(),
        },
        at_ns: now(),
    };
    let (mut capper, restored) = Capper::open(limiter, &state_file);
    for r in restored {
        report(restored_ack(r));
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                for r in capper.expire(now()) {
                    report(restored_ack(r));
                }
            }
            directive = directives.recv() => {
                let Some(first) = directive else { break };
                // Everything waiting goes in one burst: one state-file write for all of it.
                let mut burst = vec![first];
                while let Ok(next) = directives.try_recv() {
                    burst.push(next);
                }
                let (releases, caps): (Vec<_>, Vec<_>) = burst.into_iter().partition(|c| c.release);
                let asked: Vec<(String, u32, i64)> =
                    caps.iter().map(|c| (c.device.clone(), c.watts, c.until_ns)).collect();
                for (cap, outcome) in caps.iter().zip(capper.apply_all(&asked)) {
                    let (kind, from_w, to_w, reason) = match outcome {
                        Outcome::Applied { from_w, to_w, clamped } => (
                            Kind::Applied,
                            from_w,
                            to_w,
                            clamped.map_or_else(|| cap.reason.clone(), |c| format!("{}; {c}", cap.reason)),
                        ),
                        Outcome::DryRun(why) => (Kind::DryRun, 0, 0, why),
                        Outcome::Refused(why) => (Kind::Refused, 0, 0, why),
                    };
                    report(DirectiveAck {
                        id: cap.id,
                        device: cap.device.clone(),
                        outcome: kind as i32,
                        from_w,
                        to_w,
                        until_ns: cap.until_ns,
                        reason,
                        at_ns: now(),
                    });
                }
                for cap in releases {
                    let ack = match capper.release(&cap.device) {
                        Some(r) => DirectiveAck { id: cap.id, ..restored_ack(r) },
                        None => DirectiveAck {
                            id: cap.id,
                            device: cap.device.clone(),
                            outcome: Kind::Refused as i32,
                            reason: format!("no cap on {} to end", cap.device),
                            at_ns: now(),
                            ..DirectiveAck::default()
                        },
                    };
                    report(ack);
                }
            }
        }
    }
    for r in capper.release_all() {
        report(restored_ack(r));
    }
}

/// The caps this collector holds.
pub struct Capper<L: PowerLimiter> {
    limiter: L,
    state_file: PathBuf,
    held: BTreeMap<String, Held>,
}

impl<L: PowerLimiter> std::fmt::Debug for Capper<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capper")
            .field("state_file", &self.state_file)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl<L: PowerLimiter> Capper<L> {
    /// Opens the capper with its state file; caps a previous run left in force are restored
    /// first, and returned.
    pub fn open(limiter: L, state_file: &Path) -> (Self, Vec<Restored>) {
        let held = match std::fs::read(state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                warn!(file = %state_file.display(), %error, "Power-cap state unreadable; nothing to restore from it.");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        let mut capper = Self {
            limiter,
            state_file: state_file.to_path_buf(),
            held,
        };
        let restored = capper.restore_where(|_| true, "left in force by a previous run");
        (capper, restored)
    }

    /// Caps `device` at `watts` until `until_ns` (renewing a cap in force), clamped into the
    /// GPU's settable range.
    pub fn apply(&mut self, device: &str, watts: u32, until_ns: i64) -> Outcome {
        self.apply_all(&[(device.to_owned(), watts, until_ns)])
            .pop()
            .unwrap_or_else(|| Outcome::Refused("nothing applied".into()))
    }

    /// Applies several caps (`device`, W, lease end) with one write of the state file before
    /// any is set: a burst of directives costs one fsync, not one each. Outcomes in order.
    pub fn apply_all(&mut self, caps: &[(String, u32, i64)]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; caps.len()];
        let mut planned = Vec::new();
        let before = self.held.clone();
        for (index, (device, watts, until_ns)) in caps.iter().enumerate() {
            let limits = match self.limiter.limits(device) {
                Ok(limits) => limits,
                Err(LimitError::NoPermission(why)) => {
                    outcomes[index] = Some(Outcome::DryRun(why));
                    continue;
                }
                Err(LimitError::Unknown(why) | LimitError::Failed(why)) => {
                    outcomes[index] = Some(Outcome::Refused(why));
                    continue;
                }
            };
            let to_w = (*watts).clamp(limits.min_w, limits.max_w.max(limits.min_w));
            let clamped = (to_w != *watts).then(|| {
                format!(
                    "{watts} W is outside {device}'s settable range {}–{} W: set to {to_w} W",
                    limits.min_w, limits.max_w
                )
            });
            let previous_w = self
                .held
                .get(device)
                .map_or(limits.enforced_w, |held| held.previous_w);
            self.held.insert(
                device.clone(),
                Held {
                    previous_w,
                    cap_w: to_w,
                    until_ns: *until_ns,
                },
            );
            planned.push((index, device.clone(), limits.enforced_w, to_w, clamped));
        }
        // Write the limits to restore before changing anything.
        if !planned.is_empty()
            && let Err(error) = self.save()
        {
            self.held = before;
            for (index, ..) in planned {
                outcomes[index] = Some(Outcome::Refused(format!(
                    "the cap could not be recorded first: {error}"
                )));
            }
            return outcomes.into_iter().flatten().collect();
        }
        let mut undo = false;
        for (index, device, from_w, to_w, clamped) in planned {
            outcomes[index] = Some(match self.limiter.set(&device, to_w) {
                Ok(()) => {
                    info!(%device, from_w, to_w, "GPU power capped.");
                    Outcome::Applied {
                        from_w,
                        to_w,
                        clamped,
                    }
                }
                Err(error) => {
                    // Not set: what is held for it is what was held before.
                    match before.get(&device) {
                        Some(held) => self.held.insert(device.clone(), held.clone()),
                        None => self.held.remove(&device),
                    };
                    undo = true;
                    match error {
                        LimitError::NoPermission(why) => Outcome::DryRun(why),
                        LimitError::Unknown(why) | LimitError::Failed(why) => Outcome::Refused(why),
                    }
                }
            });
        }
        if undo {
            let _ = self.save();
        }
        outcomes.into_iter().flatten().collect()
    }

    /// Ends the cap on `device` now (the event is over), restoring its previous limit.
    pub fn release(&mut self, device: &str) -> Option<Restored> {
        self.restore_where(|d| d == device, "the cap was ended")
            .into_iter()
            .next()
    }

    /// Restores every cap whose lease has run out at `now_ns`.
    pub fn expire(&mut self, now_ns: i64) -> Vec<Restored> {
        let lapsed: Vec<String> = self
            .held
            .iter()
            .filter(|(_, held)| held.until_ns <= now_ns)
            .map(|(device, _)| device.clone())
            .collect();
        self.restore_where(|d| lapsed.iter().any(|l| l == d), "its lease ran out")
    }

    /// Restores every cap (the collector is stopping).
    pub fn release_all(&mut self) -> Vec<Restored> {
        self.restore_where(|_| true, "the collector stopped")
    }

    /// The caps in force: device, cap W, lease end.
    pub fn held(&self) -> Vec<(String, u32, i64)> {
        self.held
            .iter()
            .map(|(d, h)| (d.clone(), h.cap_w, h.until_ns))
            .collect()
    }

    fn restore_where(&mut self, pick: impl Fn(&str) -> bool, why: &'static str) -> Vec<Restored> {
        let picked: Vec<(String, Held)> = self
            .held
            .iter()
            .filter(|(device, _)| pick(device))
            .map(|(d, h)| (d.clone(), h.clone()))
            .collect();
        let mut restored = Vec::new();
        for (device, held) in picked {
            let error = match self.limiter.set(&device, held.previous_w) {
                Ok(()) => {
                    self.held.remove(&device);
                    info!(%device, to_w = held.previous_w, why, "GPU power limit restored.");
                    None
                }
                // Gone, or never settable: nothing left to restore.
                Err(LimitError::Unknown(e) | LimitError::NoPermission(e)) => {
                    self.held.remove(&device);
                    Some(e)
                }
                Err(LimitError::Failed(e)) => {
                    warn!(%device, error = %e, "Restoring a GPU power limit failed; kept to retry.");
                    Some(e)
                }
            };
            restored.push(Restored {
                device,
                to_w: held.previous_w,
                why,
                error,
            });
        }
        if !restored.is_empty()
            && let Err(error) = self.save()
        {
            warn!(%error, "Power-cap state could not be written.");
        }
        restored
    }

    /// Writes the caps in force, atomically and durably; with none left, removes the file.
    fn save(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        if self.held.is_empty() {
            return match std::fs::remove_file(&self.state_file) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            };
        }
        let temporary = self.state_file.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec(&self.held).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.state_file)?;
        if let Some(dir) = self.state_file.parent()
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPUs whose limits live in memory; `permitted` false answers as a non-root process.
    #[derive(Debug, Default)]
    struct FakeGpus {
        limits: BTreeMap<String, PowerLimits>,
        permitted: bool,
        sets: Vec<(String, u32)>,
    }

    impl PowerLimiter for &mut FakeGpus {
        fn limits(&mut self, device: &str) -> Result<PowerLimits, LimitError> {
            self.limits
                .get(device)
                .copied()
                .ok_or_else(|| LimitError::Unknown(format!("no GPU {device}")))
        }

        fn set(&mut self, device: &str, watts: u32) -> Result<(), LimitError> {
            if !self.permitted {
                return Err(LimitError::NoPermission("not root".into()));
            }
            let limits = self
                .limits
                .get_mut(device)
                .ok_or_else(|| LimitError::Unknown(format!("no GPU {device}")))?;
            limits.enforced_w = watts;
            self.sets.push((device.to_owned(), watts));
            Ok(())
        }
    }

    fn gpus() -> FakeGpus {
        let limit = PowerLimits {
            enforced_w: 700,
            min_w: 200,
            max_w: 700,
        };
        FakeGpus {
            limits: [("gpu0".to_owned(), limit), ("gpu1".to_owned(), limit)].into(),
            permitted: true,
            sets: Vec::new(),
        }
    }

    #[test]
    fn a_cap_is_clamped_renewed_and_restored_when_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("caps.json");
        let mut fake = gpus();
        let (mut capper, restored) = Capper::open(&mut fake, &state);
        assert!(restored.is_empty());
        assert_eq!(
            capper.apply("gpu0", 100, 1_000),
            Outcome::Applied {
                from_w: 700,
                to_w: 200,
                clamped: Some(
                    "100 W is outside gpu0's settable range 200–700 W: set to 200 W".into()
                )
            }
        );
        // Renewed at another level: still restores to the limit before the first cap.
        assert!(matches!(
            capper.apply("gpu0", 450, 2_000),
            Outcome::Applied {
                from_w: 200,
                to_w: 450,
                ..
            }
        ));
        assert_eq!(capper.expire(1_999), vec![]);
        let back = capper.expire(2_000);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].to_w, back[0].why, back[0].error.clone()),
            (700, "its lease ran out", None)
        );
        assert!(capper.held().is_empty());
        drop(capper);
        assert_eq!(fake.limits["gpu0"].enforced_w, 700);
        assert_eq!(
            fake.sets,
            vec![
                ("gpu0".into(), 200),
                ("gpu0".into(), 450),
                ("gpu0".into(), 700)
            ]
        );
    }

    #[test]
    fn a_collector_killed_while_capping_restores_first_when_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("caps.json");
        let mut fake = gpus();
        {
            let (mut capper, _) = Capper::open(&mut fake, &state);
            capper.apply("gpu1", 300, i64::MAX);
            // Killed: no release, the state file stays.
            std::mem::forget(capper);
        }
        assert_eq!(fake.limits["gpu1"].enforced_w, 300);
        let (capper, restored) = Capper::open(&mut fake, &state);
        assert_eq!(restored.len(), 1);
        assert_eq!(
            (restored[0].device.as_str(), restored[0].to_w),
            ("gpu1", 700)
        );
        assert!(capper.held().is_empty());
        drop(capper);
        assert_eq!(fake.limits["gpu1"].enforced_w, 700);
    }

    #[test]
    fn without_permission_or_a_gpu_nothing_changes_and_it_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("caps.json");
        let mut fake = gpus();
        fake.permitted = false;
        let (mut capper, _) = Capper::open(&mut fake, &state);
        assert_eq!(
            capper.apply("gpu0", 300, 10),
            Outcome::DryRun("not root".into())
        );
        assert!(capper.held().is_empty());
        assert!(
            matches!(capper.apply("gpu9", 300, 10), Outcome::Refused(why) if why.contains("no GPU gpu9"))
        );
        assert!(capper.release_all().is_empty());
        drop(capper);
        assert!(fake.sets.is_empty());
        assert_eq!(fake.limits["gpu0"].enforced_w, 700);
    }

    #[test]
    fn a_burst_is_recorded_once_and_each_cap_stands_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("caps.json");
        let mut fake = gpus();
        let (mut capper, _) = Capper::open(&mut fake, &state);
        let outcomes = capper.apply_all(&[
            ("gpu0".into(), 300, 100),
            ("gpu9".into(), 300, 100),
            ("gpu1".into(), 900, 100),
        ]);
        assert!(matches!(outcomes[0], Outcome::Applied { to_w: 300, .. }));
        assert!(matches!(&outcomes[1], Outcome::Refused(why) if why.contains("gpu9")));
        assert!(matches!(
            outcomes[2],
            Outcome::Applied {
                to_w: 700,
                clamped: Some(_),
                ..
            }
        ));
        assert_eq!(capper.held().len(), 2);
        // The state file holds both, with the limits to restore.
        let saved: BTreeMap<String, Held> =
            serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(saved.keys().collect::<Vec<_>>(), ["gpu0", "gpu1"]);
        assert!(saved.values().all(|h| h.previous_w == 700));
    }

    #[test]
    fn ending_a_cap_or_stopping_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("caps.json");
        let mut fake = gpus();
        let (mut capper, _) = Capper::open(&mut fake, &state);
        capper.apply("gpu0", 400, i64::MAX);
        capper.apply("gpu1", 500, i64::MAX);
        assert_eq!(capper.release("gpu0").unwrap().why, "the cap was ended");
        assert_eq!(capper.release("gpu0"), None);
        let stopped = capper.release_all();
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].why, "the collector stopped");
        drop(capper);
        assert!(fake.limits.values().all(|l| l.enforced_w == 700));
        // Nothing left to restore at the next start, and no file left behind.
        assert!(!state.exists());
        let (_, restored) = Capper::open(&mut fake, &state);
        assert!(restored.is_empty());
    }
}
