//! Live what-if: `change` checks the caller owns a running run, then reaches the shard that
//! runs it through the mesh (as `stop` does); there the run's [`Inbox`] checks the changes
//! against the run's design and queues them, and the runner applies them at its next slice,
//! at the simulated time the answer gives. The engine logs each on the run's timeline and
//! lists it in the report's `changes`, from which a replay gives the same report.
//!
//! A change that reaches an instance which does not run the run (the gateway's balancer chose
//! another simulation instance) is forwarded to the instance the run's row names, over gRPC
//! with the caller it acts for ([`Owners`], set up by the server from the registry). The owner
//! never forwards: a run its row gives to it and that it does not hold is not running.

use super::runner::Runner;
use super::Simulations;
use crate::contract::SimulationService;
use sdsim_core::runtime::Shard;
use sdsim_engine::design::{Design, Problem};
use sdsim_engine::engine::changes::{parse_changes, Change};
use sdsim_engine::engine::Simulation;
use sdsim_projects::{Caller, Failure};
use serde::Serialize;
use sonic_rs::JsonContainerTrait;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Most changes one request may carry.
pub const MAX_CHANGES_PER_REQUEST: usize = 100;
/// Most changes a run takes over its life (each stays in its report).
pub const MAX_CHANGES_PER_RUN: usize = 1_000;

/// What a caller asks for: changes to run `simulation_id`.
#[derive(Debug, Clone, Default)]
pub struct ChangeRequest {
    /// The run.
    pub simulation_id: String,
    /// The `changes` array, as JSON text.
    pub changes: String,
}

/// Changes accepted: the run applies them at its next slice.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeAccepted {
    /// The run.
    pub id: String,
    /// The changes, normalised (the form the report lists them in).
    pub accepted: Vec<Change>,
    /// The run's simulated time when they were accepted: the time they take effect.
    pub simulated_s: f64,
}

/// A run's what-if mailbox on its shard: what the run checks changes against, and the
/// changes waiting for its next slice.
#[derive(Default)]
pub(super) struct Inbox {
    /// The run's design, once it runs.
    design: RefCell<Option<Design>>,
    pending: RefCell<Vec<Change>>,
    /// Simulated time after the latest slice.
    now: Cell<f64>,
    /// Changes accepted so far (pending or applied).
    taken: Cell<usize>,
    /// The run has ended (or is about to): no change is accepted any more.
    closed: Cell<bool>,
}

impl Inbox {
    /// The run started with `design`.
    pub(super) fn open(&self, design: &Design) {
        *self.design.borrow_mut() = Some(design.clone());
    }

    /// Applies the waiting changes to the run now (a change the run refuses, because it
    /// just finished, is dropped).
    pub(super) fn apply_to(&self, sim: &mut Simulation) {
        for change in self.pending.borrow_mut().drain(..) {
            if let Err(e) = sim.apply(&change) {
                tracing::info!(error = %e, "what-if change not applied");
            }
        }
    }

    /// Where the run is after a slice; `finished` closes the inbox before the run next
    /// yields, so no change is accepted that it would not apply.
    pub(super) fn after_slice(&self, now: f64, finished: bool) {
        self.now.set(now);
        if finished {
            self.closed.set(true);
        }
    }

    /// The run has ended.
    pub(super) fn close(&self) {
        self.closed.set(true);
    }

    /// Checks `changes` (the JSON array) against the run's design and queues them.
    fn take(&self, id: &str, changes: &str) -> Result<ChangeAccepted, Failure> {
        let design = self.design.borrow();
        let (Some(design), false) = (design.as_ref(), self.closed.get()) else {
            return Err(Failure::RunFinished(format!(
                "simulation {id} is not running: changes apply to a running run"
            )));
        };
        let list: sonic_rs::Value =
            sonic_rs::from_str(changes).map_err(|e| invalid("$.changes", e))?;
        let accepted = parse_changes(&list, design, "$.changes").map_err(|p| problems(&p))?;
        let taken = self.taken.get() + accepted.len();
        if taken > MAX_CHANGES_PER_RUN {
            return Err(invalid(
                "$.changes",
                format!(
                    "a run takes at most {MAX_CHANGES_PER_RUN} changes; this one has {} already",
                    self.taken.get()
                ),
            ));
        }
        self.taken.set(taken);
        self.pending.borrow_mut().extend(accepted.iter().cloned());
        Ok(ChangeAccepted {
            id: id.to_string(),
            accepted,
            simulated_s: self.now.get(),
        })
    }
}

fn invalid(field: &str, message: impl ToString) -> Failure {
    Failure::InvalidChange {
        field: field.to_string(),
        message: message.to_string(),
    }
}

/// Every problem in one error: the first names the field, the others follow in the message.
fn problems(p: &[Problem]) -> Failure {
    let mut message = p.first().map(|p| p.message.clone()).unwrap_or_default();
    for other in p.iter().skip(1) {
        message.push_str(&format!("; {other}"));
    }
    Failure::InvalidChange {
        field: p
            .first()
            .map_or_else(|| "$.changes".into(), |p| p.path.clone()),
        message,
    }
}

/// Checks the shape of a PATCH body, `{"changes": [...]}`, and returns the array as text.
pub fn changes_of_body(body: &[u8]) -> Result<String, Failure> {
    let v: sonic_rs::Value = sdsim_net::json::decode(body)
        .map_err(|e| invalid("$", format!("the body must be {{\"changes\": [...]}}: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(invalid(
            "$",
            "the body must be an object: {\"changes\": [...]}",
        ));
    };
    for (key, _) in obj.iter() {
        if key != "changes" {
            return Err(invalid(
                &format!("$.{key}"),
                "unknown field (allowed: changes)",
            ));
        }
    }
    let Some(list) = obj.get(&"changes") else {
        return Err(invalid(
            "$.changes",
            "missing (required): an array of changes",
        ));
    };
    match list.as_array().map(|a| a.len()) {
        None => Err(invalid("$.changes", "must be an array of changes")),
        Some(0) => Err(invalid("$.changes", "must hold at least one change")),
        Some(n) if n > MAX_CHANGES_PER_REQUEST => Err(invalid(
            "$.changes",
            format!("{n} changes: at most {MAX_CHANGES_PER_REQUEST} per request"),
        )),
        Some(_) => Ok(list.to_string()),
    }
}

impl Simulations {
    /// Changes run `id` while it runs (only who started it may; others get 404 as for a run
    /// they cannot see). A queued run has not started: 409 as for a finished one.
    pub async fn change(
        &self,
        who: &Caller,
        req: ChangeRequest,
    ) -> Result<ChangeAccepted, Failure> {
        who.require("simulation:start")?;
        let id = req.simulation_id.clone();
        let run = self.get(who, &id).await?;
        if run.user_id != *who.user_id {
            return Err(Failure::NotFound(format!("simulation {id} not found")));
        }
        if run.status != "running" {
            return Err(Failure::RunFinished(format!(
                "simulation {id} is {}: changes apply to a running run",
                run.status
            )));
        }
        let (key, changes) = (id.clone(), req.changes.clone());
        let answer = Shard::current()
            .mesh()
            .broadcast(move || {
                let runner = Shard::current().get::<Runner>()?;
                let stops = runner.stops.borrow();
                let run = stops.get(&key)?;
                Some(run.inbox.take(&key, &changes))
            })
            .await
            .into_iter()
            .find_map(|r| r.ok().flatten());
        match answer {
            Some(answer) => answer,
            None => self.change_elsewhere(who, req).await,
        }
    }

    /// Forwards `req` to the instance the run's row names, when that is another one.
    async fn change_elsewhere(
        &self,
        who: &Caller,
        req: ChangeRequest,
    ) -> Result<ChangeAccepted, Failure> {
        let id = &req.simulation_id;
        let row = self
            .store
            .query_opt(
                "SELECT instance FROM simulation_schema.simulations WHERE id = $1",
                vec![id.as_str().into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("simulation {id} not found")))?;
        // Runs from before runs had owners count as this instance's (as at restart).
        let owner = match row.text(0) {
            Ok(owner) => owner.to_string(),
            Err(_) => self.instance.clone(),
        };
        if owner == self.instance {
            return Err(Failure::Unavailable(format!(
                "simulation {id} is not running: this instance ({owner}) holds it and no shard runs it (it is ending)"
            )));
        }
        let Some(owners) = Shard::current().get::<Owners>() else {
            return Err(Failure::Unavailable(format!(
                "simulation {id} runs on instance {owner}: this instance cannot forward changes to it (set gateway.service_token, accepted by the other instances' auth.tokens)"
            )));
        };
        let service = (owners.0)(&owner)?;
        service.change_simulation(who, req).await
    }
}

/// How a shard reaches simulation instance `id` (another process, found in the registry) to
/// forward a live change to the run it holds. The server installs one per shard when it can
/// call other instances.
pub struct Owners(pub Rc<OwnerLookup>);

/// The service of the simulation instance named, or why it cannot be reached (503).
pub type OwnerLookup = dyn Fn(&str) -> Result<Rc<dyn SimulationService>, Failure>;
