//! One poll: the VTN's events → the aggregator, and how it went.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use openleadr_client::{Client, Filter, VirtualEndNode};
use openleadr_wire::event::Event;
use openleadr_wire::program::ProgramId;

use crate::aggregator::{Aggregator, AggregatorError, Refusal, SourceReport};

/// What one poll did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PollOutcome {
    /// Events the VTN listed.
    pub listed: usize,
    /// Events posted because they were new or changed.
    pub posted: usize,
    /// Events cancelled because the VTN no longer lists them.
    pub cancelled: usize,
    /// Events the aggregator refused (their last valid version, if any, stays in force).
    pub refused: Vec<Refusal>,
    /// Why the poll failed; `None` when it read the VTN and relayed everything.
    pub error: Option<String>,
}

/// Relays one VTN's events (optionally one program's) to one aggregator.
pub struct Bridge {
    vtn: Client<VirtualEndNode>,
    vtn_url: String,
    program: Option<String>,
    program_id: Option<ProgramId>,
    aggregator: Aggregator,
    source: String,
    interval: Duration,
    /// Each relayed event's JSON as last posted: an unchanged event is not posted again.
    relayed: HashMap<String, String>,
}

impl Bridge {
    /// A bridge from `vtn` (at `vtn_url`, for messages) to `aggregator`, its events marked
    /// `source`; `program`: only that program's events (by `programName`).
    pub fn new(
        vtn: Client<VirtualEndNode>,
        vtn_url: String,
        program: Option<String>,
        aggregator: Aggregator,
        source: String,
        interval: Duration,
    ) -> Self {
        Self {
            vtn,
            vtn_url,
            program,
            program_id: None,
            aggregator,
            source,
            interval,
            relayed: HashMap::new(),
        }
    }

    /// Polls the VTN once, relays what changed, and reports the outcome to the aggregator.
    pub async fn poll(&mut self) -> PollOutcome {
        let mut outcome = PollOutcome::default();
        if let Err(error) = self.relay(&mut outcome).await {
            outcome.error = Some(error);
        }
        let report = SourceReport {
            ok: outcome.error.is_none(),
            error: outcome.error.clone(),
            events: u32::try_from(outcome.listed).unwrap_or(u32::MAX),
            refused: outcome.refused.clone(),
            poll_interval_s: u32::try_from(self.interval.as_secs().max(1)).unwrap_or(u32::MAX),
        };
        if let Err(error) = self.aggregator.report(&self.source, &report).await {
            let error = format!("reporting the poll: {error}");
            outcome.error = Some(match outcome.error.take() {
                Some(first) => format!("{first}; {error}"),
                None => error,
            });
        }
        outcome
    }

    async fn relay(&mut self, outcome: &mut PollOutcome) -> Result<(), String> {
        let vtn_error = |e: openleadr_client::Error| format!("VTN {}: {e}", self.vtn_url);
        if let (Some(name), None) = (&self.program, &self.program_id) {
            let programs = self
                .vtn
                .get_program_list(Filter::none())
                .await
                .map_err(vtn_error)?;
            let program = programs
                .iter()
                .find(|p| &p.content().program_name == name)
                .ok_or_else(|| format!("VTN {}: no program named {name:?}", self.vtn_url))?;
            self.program_id = Some(program.id().clone());
        }
        let events = self
            .vtn
            .get_event_list(self.program_id.as_ref(), Filter::none())
            .await
            .map_err(vtn_error)?;
        outcome.listed = events.len();
        let mut listed = HashSet::new();
        for event in &events {
            let id = event.id().to_string();
            listed.insert(id.clone());
            let wire = Event {
                id: event.id().clone(),
                created_date_time: event.created_date_time(),
                modification_date_time: event.modification_date_time(),
                content: event.content().clone(),
            };
            let json = serde_json::to_value(&wire)
                .map_err(|e| format!("event {id}: cannot be written as JSON: {e}"))?;
            let text = json.to_string();
            if self.relayed.get(&id) == Some(&text) {
                continue;
            }
            match self.aggregator.post_event(&self.source, &json).await {
                Ok(()) => {
                    outcome.posted += 1;
                    self.relayed.insert(id, text);
                }
                Err(AggregatorError::Refused(reason)) => {
                    tracing::warn!(event = %id, %reason, "the aggregator refused the VTN's event");
                    outcome.refused.push(Refusal { id, reason });
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        let held = self
            .aggregator
            .held_events(&self.source)
            .await
            .map_err(|e| e.to_string())?;
        for id in held.iter().filter(|id| !listed.contains(*id)) {
            self.aggregator
                .cancel_event(id)
                .await
                .map_err(|e| e.to_string())?;
            self.relayed.remove(id);
            outcome.cancelled += 1;
        }
        Ok(())
    }
}
