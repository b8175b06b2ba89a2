//! Component kinds: one file per kind, holding its fields, its parser and what it does to a
//! request, and one table, [`kinds!`] below, that lists them.
//!
//! A kind is either a *station* (instances × workers with queues, [`Station`]) whose
//! [`Behavior`] variant says what it does besides serving, or a kind that is not a station and
//! has its own [`Kind`] variant (the load balancer forwards at once, with no workers).
//! Adding a station kind is its file, implementing [`StationKind`], plus one row of the table:
//! the row declares the module, the names a design uses for it, and the [`Behavior`] variant
//! its stations get (a row without one only parses: `external` builds a plain service).
//!
//! The engine dispatches on [`Behavior`] with a `match` generated from the table, so a hook
//! costs what the hand-written `match` it replaced did: no boxing, no dynamic call per event.
//! Hooks decide and the engine acts: [`StationKind::arrive`] returns an [`Arrival`] and
//! [`StationKind::operation`] an [`Operation`], which the engine carries out; the hooks see
//! only the [`Ctx`] of the request at hand.

use super::dist::{Dist, Rng};
use super::{Request, StationState};
use crate::design::{parse_dist, Checker, Kind, Station, Target};
use sonic_rs::{JsonValueTrait, Value};

/// A value of [`Request::op`]: the request takes its station's other operation (a cache hit,
/// a database write).
pub(super) const OP_SPECIAL: u8 = 1;

/// What the engine does with a request arriving at a component.
pub(super) enum Arrival {
    /// Take a worker or wait for one, as at any station.
    Serve,
    /// Pass straight on to `to` after `latency`, counted as served here in no time.
    Forward {
        /// The component it goes to.
        to: usize,
        /// The hop's latency (`None`: arrives now).
        latency: Option<f64>,
    },
    /// Refuse it at once: an error here, and for the caller or the end-to-end count.
    Reject,
    /// Answer the sender now and carry the request on here as a background message.
    Detach,
}

/// Which operation a request takes at a station, decided as it arrives.
pub(super) enum Operation {
    /// The station's usual work, on any instance.
    Plain,
    /// The kind's other operation (a cache hit): [`OP_SPECIAL`] on the request.
    Special,
    /// The other operation, served only by the primary, instance 0 (a database write).
    SpecialOnPrimary,
}

/// What happens to a request once its service (and calls) at a station are done.
pub(super) enum After {
    /// Follow the station's routes.
    Route,
    /// Go to this component (a cache miss to its origin).
    To(usize),
    /// Stop here successfully (a cache hit).
    Complete,
    /// Stop here with an error.
    Fail,
}

/// The request a hook decides about, and the parts of the run it may read or change.
pub(super) struct Ctx<'a> {
    /// Simulated time.
    pub(super) now: f64,
    /// The component the request is at.
    pub(super) component: usize,
    /// The request.
    pub(super) request: &'a mut Request,
    /// The routing stream: every draw that decides where a request goes or what it does.
    pub(super) routing: &'a mut Rng,
    /// Every station's run state, by component (`None`: not a station).
    pub(super) stations: &'a mut [Option<StationState>],
}

impl Ctx<'_> {
    /// The run state of the station the request is at.
    #[inline]
    pub(super) fn station(&mut self) -> Option<&mut StationState> {
        self.stations[self.component].as_mut()
    }
}

/// What stations of one kind do besides serving. Every hook defaults to what a plain service
/// does, so a kind writes only what differs.
///
/// Implementations mark their hooks `#[inline]`: a kind's file is compiled apart from the
/// event loop, and without it the hooks stop being inlined into it (5 % more instructions
/// per event on a design with every kind, measured with callgrind).
pub(super) trait StationKind {
    /// The kind's name in reports (`components.<id>.kind`).
    const REPORT_NAME: &'static str;
    /// What one station of this kind remembers between requests during a run.
    type State: Default;

    /// A request arrives, before it takes a worker or waits.
    #[inline]
    fn arrive(&self, _ctx: &mut Ctx<'_>, _state: &mut Self::State) -> Arrival {
        Arrival::Serve
    }

    /// The operation of a request that is served here.
    #[inline]
    fn operation(&self, _ctx: &mut Ctx<'_>) -> Operation {
        Operation::Plain
    }

    /// The distribution of the service time of a request, `special` if it takes
    /// [`Operation::Special`].
    #[inline]
    fn service_time<'a>(&'a self, station: &'a Station, _special: bool) -> &'a Dist {
        &station.service_time
    }

    /// Where a request goes once served (the station's own error rate is already drawn).
    #[inline]
    fn after_service(&self, _ctx: &mut Ctx<'_>) -> After {
        After::Route
    }

    /// The mean service time over the kind's mix of operations (for sizing).
    #[inline]
    fn mean_service(&self, station: &Station) -> f64 {
        station.service_time.mean()
    }
}

/// The component being parsed, and what its parser may look up.
pub(crate) struct Entry<'a> {
    /// Its `kind` as written.
    pub(crate) kind: &'a str,
    /// Its JSON object.
    pub(crate) item: &'a Value,
    /// Its JSON path, `$.components[i]`.
    pub(crate) path: &'a str,
    /// Its index among the components.
    pub(crate) index: usize,
    /// Resolves a field naming another component to its index.
    pub(crate) target: &'a Target<'a>,
    /// The request class names of the design.
    pub(crate) classes: &'a [String],
}

/// Generates, from the rows of the table: the modules, [`Behavior`] and its dispatch,
/// [`KindState`], [`parse`] and [`NAMES`].
macro_rules! kinds {
    ($($module:ident: [$($name:literal),+] $(=> $variant:ident)?;)*) => {
        $(mod $module;)*
        $($(pub use $module::$variant;)?)*

        /// What a station does with a request besides serving it: one variant per station
        /// kind of the table.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Behavior {
            $($(
                #[doc = concat!("A station of the `", stringify!($module), "` row of the table.")]
                $variant($module::$variant),
            )?)*
        }

        /// What each station remembers between requests during a run, by kind.
        pub(super) enum KindState {
            /// Not a station.
            None,
            $($(
                #[doc = concat!("Of a `", stringify!($module), "` station.")]
                $variant(<$module::$variant as StationKind>::State),
            )?)*
        }

        /// Every kind name a design may use, in table order (`source` is not in the table).
        pub(crate) const NAMES: &[&str] = &[$($($name),+),*];

        /// Parses a component of a kind of the table; `None` if `kind` is not one of them.
        pub(crate) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Option<Kind>> {
            match entry.kind {
                $($($name)|+ => Some($module::parse(c, entry)),)*
                _ => None,
            }
        }

        impl Behavior {
            /// The run state of a station with this behaviour, before its first request.
            #[inline]
            pub(super) fn new_state(&self) -> KindState {
                match self {
                    $($(Behavior::$variant(_) => KindState::$variant(Default::default()),)?)*
                }
            }

            /// See [`StationKind::REPORT_NAME`].
            pub(crate) fn report_name(&self) -> &'static str {
                match self {
                    $($(Behavior::$variant(_) => {
                        <$module::$variant as StationKind>::REPORT_NAME
                    })?)*
                }
            }

            /// See [`StationKind::arrive`].
            #[inline]
            pub(super) fn arrive(&self, ctx: &mut Ctx<'_>, state: &mut KindState) -> Arrival {
                match (self, state) {
                    $($((Behavior::$variant(kind), KindState::$variant(state)) => {
                        kind.arrive(ctx, state)
                    })?)*
                    // Unreachable: each station's state is made from its behaviour.
                    _ => Arrival::Serve,
                }
            }

            /// See [`StationKind::operation`].
            #[inline]
            pub(super) fn operation(&self, ctx: &mut Ctx<'_>) -> Operation {
                match self {
                    $($(Behavior::$variant(kind) => kind.operation(ctx),)?)*
                }
            }

            /// See [`StationKind::service_time`].
            #[inline]
            pub(super) fn service_time<'a>(&'a self, station: &'a Station, special: bool) -> &'a Dist {
                match self {
                    $($(Behavior::$variant(kind) => kind.service_time(station, special),)?)*
                }
            }

            /// See [`StationKind::after_service`].
            #[inline]
            pub(super) fn after_service(&self, ctx: &mut Ctx<'_>) -> After {
                match self {
                    $($(Behavior::$variant(kind) => kind.after_service(ctx),)?)*
                }
            }

            /// See [`StationKind::mean_service`].
            #[inline]
            pub(crate) fn mean_service(&self, station: &Station) -> f64 {
                match self {
                    $($(Behavior::$variant(kind) => kind.mean_service(station),)?)*
                }
            }
        }
    };
}

// module: [names in a design] => the Behavior variant of its stations (none: it builds a
// plain service, or is not a station).
kinds! {
    service: ["service", "api_gateway"] => Service;
    external: ["external"];
    cache: ["cache", "cdn"] => Cache;
    database: ["database"] => Database;
    queue: ["queue"] => Queue;
    load_balancer: ["load_balancer"];
    rate_limiter: ["rate_limiter"] => RateLimiter;
}

pub use load_balancer::{Balancer, Strategy};

impl Station {
    /// A station of `instances` × `concurrency` workers and nothing else: no routes, no
    /// calls, the plain service behaviour, FIFO.
    pub(crate) fn plain(
        instances: u32,
        concurrency: u32,
        service_time: Dist,
        queue_capacity: Option<usize>,
    ) -> Station {
        Station {
            instances,
            concurrency,
            service_time,
            queue_capacity,
            routes: Vec::new(),
            calls: Vec::new(),
            fanout: crate::design::Fanout::Sequential,
            behavior: Behavior::Service(Service),
            error_rate: 0.0,
            timeout: None,
            autoscale: None,
            contention: None,
            discipline: crate::design::Discipline::Fifo,
        }
    }

    /// The mean service time over the behaviour's mix (for sizing).
    pub fn mean_service(&self) -> f64 {
        self.behavior.mean_service(self)
    }
}

/// A required distribution field, or `default` when it is absent and there is one.
fn dist_field(
    c: &mut Checker,
    item: &Value,
    path: &str,
    key: &str,
    default: Option<Dist>,
) -> Option<Dist> {
    match item.get(key) {
        Some(d) => parse_dist(c, d, &format!("{path}.{key}")),
        None if default.is_some() => default,
        None => {
            c.problem(
                &format!("{path}.{key}"),
                "missing (required): a distribution",
            );
            None
        }
    }
}

/// An optional waiting-room bound (`null` = unbounded).
fn queue_capacity(c: &mut Checker, item: &Value, path: &str, key: &str) -> Option<usize> {
    item.get(key)
        .filter(|v| !v.is_null())
        .map(|_| c.integer(item, path, key, 0, 0) as usize)
}

/// The fields every component but a source has, then `extra`.
fn fields(extra: &[&'static str]) -> Vec<&'static str> {
    let mut all = vec!["id", "kind", "name", crate::design::COST_INSTANCE_FIELD];
    all.extend_from_slice(extra);
    all
}

/// A probability that may be 0 (an error or write ratio).
const RATIO: (&str, fn(f64) -> bool) = ("a probability in [0, 1]", |p| (0.0..=1.0).contains(&p));
