//! Each node's standing in the fleet, as a differential collection: its latest clock, its status
//! (online, stale, offline) on event-time timers, the median of its recent rhythm-window
//! periods, a processing failure it is in, and its dead letters in the last hour and by hour.
//!
//! [`NodeTracker`] is a timely operator. It also takes the registry (a collection of `(node,
//! meta)`), exchanged by node like the events, so each node's view meets its registry records on
//! the worker that owns the node: it emits the node's membership, `(view, meta)` per record (the
//! default record for a node the registry does not know; a never-seen view for a registered node
//! not heard from). That is the outer join of the views with the registry, done where both
//! sides are a lookup (each node has one view and, normally, one record): in differential's
//! `join` and two `antijoin`s it arranged 100 000 views three times and sent six updates per
//! change downstream, two thirds of the views' time. A node's new view retracts its previous
//! one at the same time, so downstream operators see one change per node per tick. Time-based changes (a node
//! turning stale, then offline; a dead letter leaving the last hour) are timers in event time:
//! they fire when the input frontier (the watermark) passes them, so a replay and a live run
//! over the same input change the same views at the same ticks. When the input ends the
//! pending timers are dropped, not fired: event time stops where the input stops.

use std::collections::{BTreeMap, VecDeque};

use foldhash::{HashMap, HashMapExt};

use kaiabc_schemas::{LakeRow, Metric, Reason};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use differential_dataflow::VecCollection;

use super::group::NodeMeta;
use super::{FleetConfig, Name, OrdF64};
use crate::dataflow::node_hash;

/// Ticks of event time are minutes.
const HOUR: u64 = 60;

/// Whether a node is reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A reading within `stale_after`.
    Online,
    /// Its last reading is older than `stale_after` but not yet `offline_after`.
    Stale,
    /// No reading for `offline_after`, its Last Will arrived, or (registered) never heard from.
    Offline,
}

impl Status {
    /// The name used in JSON and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Stale => "stale",
            Self::Offline => "offline",
        }
    }
}

/// What a node's latest state says, for the fleet's views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClockView {
    /// Fraction of the cycle, 0–1.
    pub phase: OrdF64,
    /// Circadian time, h.
    pub circadian_time: OrdF64,
    /// The node's current period estimate, h.
    pub period_hours: OrdF64,
    /// KaiC output activity, 0–1.
    pub koa: OrdF64,
    /// The filtered temperature its clock ran at, K.
    pub temperature_kelvin: OrdF64,
}

/// A node as the fleet's views see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeView {
    /// Whether it is reporting.
    pub status: Status,
    /// Event time of its last reading or dead letter as of the view's last change, µs since
    /// the epoch (`None`: registered, never heard from): exact when it went offline.
    pub last_seen: Option<i64>,
    /// Whether it went offline by its Last Will (live only).
    pub last_will: bool,
    /// Its latest state as of the last clock refresh (see `FleetConfig::clock_resolution_minutes`).
    pub clock: Option<ClockView>,
    /// The median period of its last rhythm windows (KOA), once one has closed with a period.
    pub window_period: Option<OrdF64>,
    /// The processing failure its latest reading met (`ODE_INSTABILITY`,
    /// `FILTER_DIVERGENCE`), until a reading is applied again.
    pub failing: Option<Reason>,
    /// Its dead letters in the last hour of event time.
    pub dead_last_hour: u32,
}

impl NodeView {
    /// A registered node that has not been heard from.
    pub fn never_seen() -> Self {
        Self {
            status: Status::Offline,
            last_seen: None,
            last_will: false,
            clock: None,
            window_period: None,
            failing: None,
            dead_last_hour: 0,
        }
    }

    /// Whether its clock counts in its groups' synchrony and statistics: it has a state and is
    /// not offline (an offline node's clock no longer runs on fresh readings).
    pub fn live_clock(&self) -> Option<&ClockView> {
        self.clock
            .as_ref()
            .filter(|_| self.status != Status::Offline)
    }
}

/// What the tracker takes in: the parts of the lake's rows the fleet needs, and (live) what the
/// server learns about liveness outside the readings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NodeEvent {
    /// A node's new state.
    State {
        /// The node.
        node: Name,
        /// The reading's event time, µs since the epoch.
        at: i64,
        /// What the state says.
        clock: ClockView,
    },
    /// A rhythm window of a node's KOA closed.
    Window {
        /// The node.
        node: Name,
        /// Its Lomb–Scargle period, h (`None`: no peak).
        period_hours: Option<f64>,
    },
    /// A dead letter.
    DeadLetter {
        /// The node it names, if any.
        node: Option<Name>,
        /// Why.
        reason: Reason,
        /// When it was received, µs since the epoch.
        at: i64,
    },
    /// Live only: a node's status message (its Last Will when `online` is false).
    Liveness {
        /// The node.
        node: Name,
        /// Online (`true`) or gone.
        online: bool,
    },
}

impl NodeEvent {
    /// The event a lake row makes, if the fleet needs it.
    pub fn of(row: &LakeRow) -> Option<Self> {
        match row {
            LakeRow::State(s) => Some(Self::State {
                node: s.node_id.as_str().into(),
                at: s.timestamp.timestamp_micros(),
                clock: ClockView {
                    phase: OrdF64::from(s.phase),
                    circadian_time: OrdF64::from(s.circadian_time),
                    period_hours: OrdF64::from(s.period_hours),
                    koa: OrdF64::from(s.koa_metric),
                    temperature_kelvin: OrdF64::from(s.temperature_kelvin),
                },
            }),
            LakeRow::Rhythm(w) if w.metric == Metric::Koa => Some(Self::Window {
                node: w.node_id.as_str().into(),
                period_hours: w.period_hours.filter(|p| p.is_finite()),
            }),
            LakeRow::DeadLetter(d) => Some(Self::DeadLetter {
                node: d.node_id.as_deref().map(Name::from),
                reason: d.reason,
                at: d.received_at.timestamp_micros(),
            }),
            _ => None,
        }
    }

    fn node(&self) -> Option<&Name> {
        match self {
            Self::State { node, .. } | Self::Window { node, .. } | Self::Liveness { node, .. } => {
                Some(node)
            }
            Self::DeadLetter { node, .. } => node.as_ref(),
        }
    }
}

/// What the tracker emits: each node's view with each of its registry records, and dead letters
/// counted by node, hour and reason (the count is the record's multiplicity; it is retracted
/// `dead_letter_retention` after its hour).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeFact {
    /// A node's view with a registry record it is grouped by.
    Member(Name, NodeView, NodeMeta),
    /// One dead letter of a node (or of none) in the hour starting at the tick, for a reason.
    DeadLetters(Option<Name>, u64, Reason),
}

/// A timer: what to check at a tick. Each node has at most one liveness and one dead-letter
/// timer armed (re-armed when it fires early), so a node that reports every minute costs no
/// timer per reading.
#[derive(Clone, Debug)]
enum Timer {
    /// Its status by the age of its last reading.
    Liveness(Name),
    /// Its dead letters older than an hour leave its last hour.
    DeadExpiry(Name),
    /// Dead-letter hours older than the retention are retracted.
    Hours,
}

/// One node's tracked standing.
#[derive(Debug)]
struct Tracked {
    view: NodeView,
    /// Event time of its last reading or dead letter.
    seen: Option<i64>,
    /// The tick its clock was last refreshed at.
    clock_tick: Option<u64>,
    /// The tick it was last heard from.
    last_tick: u64,
    /// The latest time its view was emitted at (a later event of the node is emitted no
    /// earlier, so a retraction never precedes its insertion).
    out_time: u64,
    /// Its last window periods (at most `outlier_windows`).
    windows: VecDeque<f64>,
    /// The ticks of its dead letters within the last hour.
    dead: VecDeque<u64>,
    /// Whether its liveness timer is armed.
    liveness_armed: bool,
    /// Whether its dead-letter timer is armed.
    dead_armed: bool,
    /// Its registry records, with their multiplicities.
    metas: Vec<(NodeMeta, isize)>,
    /// Whether it has been heard from (any event): then it is a member without a registry
    /// record too, by the default one.
    heard: bool,
}

impl Tracked {
    fn new() -> Self {
        Self {
            view: NodeView::never_seen(),
            seen: None,
            clock_tick: None,
            last_tick: 0,
            out_time: 0,
            windows: VecDeque::new(),
            dead: VecDeque::new(),
            liveness_armed: false,
            dead_armed: false,
            metas: Vec::new(),
            heard: false,
        }
    }
}

/// Where one node's membership changes go at one time: `(view, meta)` records, `sign` times
/// each of its registry records, or with `default` when it has none and has been heard from.
struct Memberships<'a> {
    out: &'a mut Vec<(NodeFact, u64, isize)>,
    default: &'a NodeMeta,
    node: &'a Name,
    at: u64,
}

impl Memberships<'_> {
    fn send(&mut self, view: &NodeView, metas: &[(NodeMeta, isize)], heard: bool, sign: isize) {
        let (node, at) = (self.node, self.at);
        let fact = |m: &NodeMeta| NodeFact::Member(node.clone(), view.clone(), m.clone());
        if metas.is_empty() {
            if heard {
                self.out.push((fact(self.default), at, sign));
            }
        } else {
            self.out
                .extend(metas.iter().map(|(m, c)| (fact(m), at, sign * c)));
        }
    }
}

/// The tracker's state on one worker.
struct Tracker {
    cfg: FleetConfig,
    nodes: HashMap<Name, Tracked>,
    timers: BTreeMap<u64, Vec<Timer>>,
    /// Dead letters by (hour, node, reason), until retracted.
    hours: BTreeMap<(u64, Option<Name>, Reason), isize>,
    /// Changes to send: (fact, time, diff).
    out: Vec<(NodeFact, u64, isize)>,
    /// The record of a node the registry does not know.
    default_meta: NodeMeta,
}

impl Tracker {
    /// Notes that `node` was heard from at `tick` (event time `at`), and arms its liveness
    /// timer.
    fn heard(&mut self, node: &Name, tick: u64, at: i64) -> &mut Tracked {
        let first = self
            .cfg
            .stale_after_minutes
            .min(self.cfg.offline_after_minutes);
        let t = self.nodes.entry(node.clone()).or_insert_with(Tracked::new);
        t.last_tick = t.last_tick.max(tick);
        if !t.liveness_armed {
            t.liveness_armed = true;
            self.timers
                .entry(t.last_tick + first)
                .or_default()
                .push(Timer::Liveness(node.clone()));
        }
        t.seen = Some(t.seen.map_or(at, |s| s.max(at)));
        if t.view.status != Status::Online {
            // Back (or new): the view changes anyway.
            t.view.last_seen = t.seen;
        }
        t.view.status = Status::Online;
        t.view.last_will = false;
        t
    }

    /// Applies one event at `tick`, noting the node's old view for [`Tracker::emit`].
    fn apply(&mut self, ev: NodeEvent, tick: u64) {
        let Some(node) = ev.node().cloned() else {
            if let NodeEvent::DeadLetter { reason, .. } = ev {
                self.dead_hour(None, reason, tick);
            }
            return;
        };
        let before = self.nodes.get(&node).map(|t| (t.view.clone(), t.heard));
        match ev {
            NodeEvent::State { at, clock, .. } => {
                let res = self.cfg.clock_resolution_minutes.max(1);
                let t = self.heard(&node, tick, at);
                // The clock part of the view is refreshed once per resolution window, by the
                // first state at or after each boundary: a reading a minute then costs the
                // views one change in ten, not one per reading.
                if t.clock_tick.is_none_or(|c| tick / res > c / res) || t.view.failing.is_some() {
                    t.view.clock = Some(clock);
                    t.view.last_seen = t.seen;
                    t.clock_tick = Some(tick);
                }
                t.view.failing = None;
            }
            NodeEvent::Window { period_hours, .. } => {
                let n = self.cfg.outlier_windows.max(1);
                let t = self.nodes.entry(node.clone()).or_insert_with(Tracked::new);
                if let Some(p) = period_hours {
                    t.windows.push_back(p);
                    while t.windows.len() > n {
                        t.windows.pop_front();
                    }
                    t.view.window_period = Some(OrdF64::from(median(&t.windows)));
                }
            }
            NodeEvent::DeadLetter { reason, at, .. } => {
                let t = self.heard(&node, tick, at);
                if matches!(reason, Reason::OdeInstability | Reason::FilterDivergence) {
                    t.view.failing = Some(reason);
                }
                t.dead.push_back(tick);
                t.view.dead_last_hour = t.dead.len() as u32;
                if !t.dead_armed {
                    t.dead_armed = true;
                    self.timers
                        .entry(tick + HOUR)
                        .or_default()
                        .push(Timer::DeadExpiry(node.clone()));
                }
                self.dead_hour(Some(node.clone()), reason, tick);
            }
            NodeEvent::Liveness { online, .. } => {
                let t = self.nodes.entry(node.clone()).or_insert_with(Tracked::new);
                if online {
                    // A status message says it is connected; its readings keep it online.
                    if t.view.status == Status::Offline && t.view.last_will {
                        t.view.status = Status::Online;
                        t.view.last_will = false;
                    }
                } else {
                    t.view.status = Status::Offline;
                    t.view.last_will = true;
                }
            }
        }
        self.emit(&node, before, tick);
    }

    /// Counts a dead letter in its hour, and sets the timer that retracts the hour.
    fn dead_hour(&mut self, node: Option<Name>, reason: Reason, tick: u64) {
        let hour = tick - tick % HOUR;
        *self.hours.entry((hour, node.clone(), reason)).or_default() += 1;
        self.out
            .push((NodeFact::DeadLetters(node, hour, reason), tick, 1));
        let expiry = hour + HOUR + self.cfg.dead_letter_retention_hours * HOUR;
        let timers = self.timers.entry(expiry).or_default();
        if !timers.iter().any(|t| matches!(t, Timer::Hours)) {
            timers.push(Timer::Hours);
        }
    }

    /// Sends `node`'s memberships if its view changed from `before` (its view then, and
    /// whether it had been heard from): each old `(view, meta)` retracted and each new one
    /// inserted, at `time` or the node's last output time, whichever is later. The node has
    /// now been heard from.
    fn emit(&mut self, node: &Name, before: Option<(NodeView, bool)>, time: u64) {
        let Some(t) = self.nodes.get_mut(node) else {
            return;
        };
        t.heard = true;
        if before
            .as_ref()
            .is_some_and(|(view, heard)| *heard && *view == t.view)
        {
            return;
        }
        let at = time.max(t.out_time);
        t.out_time = at;
        let mut send = Memberships {
            out: &mut self.out,
            default: &self.default_meta,
            node,
            at,
        };
        if let Some((old, heard)) = before {
            send.send(&old, &t.metas, heard, -1);
        }
        send.send(&t.view, &t.metas, true, 1);
    }

    /// Applies a registry change at `tick`: the node's memberships under its old records
    /// retracted and under its new ones inserted.
    fn register(&mut self, node: Name, meta: NodeMeta, diff: isize, tick: u64) {
        let t = self.nodes.entry(node.clone()).or_insert_with(Tracked::new);
        let at = tick.max(t.out_time);
        t.out_time = at;
        let mut send = Memberships {
            out: &mut self.out,
            default: &self.default_meta,
            node: &node,
            at,
        };
        send.send(&t.view, &t.metas, t.heard, -1);
        match t.metas.iter_mut().find(|(m, _)| *m == meta) {
            Some((_, c)) => *c += diff,
            None => t.metas.push((meta, diff)),
        }
        t.metas.retain(|(_, c)| *c != 0);
        send.send(&t.view, &t.metas, t.heard, 1);
        if !t.heard && t.metas.is_empty() {
            self.nodes.remove(&node);
        }
    }

    /// Fires the timers at `tick`, re-arming those that fired early.
    fn fire(&mut self, tick: u64, timers: Vec<Timer>) {
        let (stale, offline) = (self.cfg.stale_after_minutes, self.cfg.offline_after_minutes);
        for timer in timers {
            match timer {
                Timer::Liveness(node) => {
                    let Some(t) = self.nodes.get_mut(&node) else {
                        continue;
                    };
                    let age = tick.saturating_sub(t.last_tick);
                    let before = Some((t.view.clone(), t.heard));
                    let next = if age >= offline {
                        t.view.status = Status::Offline;
                        // Stays put while it is offline (the alert carries it).
                        t.view.last_seen = t.seen;
                        None
                    } else if age >= stale {
                        if t.view.status == Status::Online {
                            t.view.status = Status::Stale;
                        }
                        Some(t.last_tick + offline)
                    } else {
                        Some(t.last_tick + stale.min(offline))
                    };
                    t.liveness_armed = next.is_some();
                    if let Some(at) = next {
                        self.timers
                            .entry(at)
                            .or_default()
                            .push(Timer::Liveness(node.clone()));
                    }
                    self.emit(&node, before, tick);
                }
                Timer::DeadExpiry(node) => {
                    let Some(t) = self.nodes.get_mut(&node) else {
                        continue;
                    };
                    let before = Some((t.view.clone(), t.heard));
                    while t.dead.front().is_some_and(|&d| d + HOUR <= tick) {
                        t.dead.pop_front();
                    }
                    t.view.dead_last_hour = t.dead.len() as u32;
                    t.dead_armed = !t.dead.is_empty();
                    if let Some(&front) = t.dead.front() {
                        self.timers
                            .entry(front + HOUR)
                            .or_default()
                            .push(Timer::DeadExpiry(node.clone()));
                    }
                    self.emit(&node, before, tick);
                }
                Timer::Hours => {
                    let keep = self.cfg.dead_letter_retention_hours * HOUR + HOUR;
                    while let Some(entry) = self.hours.first_entry() {
                        let (hour, _, _) = entry.key();
                        if hour + keep > tick {
                            break;
                        }
                        let ((hour, node, reason), n) = entry.remove_entry();
                        self.out
                            .push((NodeFact::DeadLetters(node, hour, reason), tick, -n));
                    }
                }
            }
        }
    }
}

/// Input held until its tick is complete: a capability for the tick, its registry changes and
/// its events.
type Stash = BTreeMap<u64, (Capability<u64>, Registered, Vec<NodeEvent>)>;

/// Registry changes: `((node, meta), diff)`.
type Registered = Vec<((Name, NodeMeta), isize)>;

/// The median of a few numbers.
fn median(v: &VecDeque<f64>) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Extension trait: each node's standing from the events of its rows, joined with the registry.
pub trait NodeTracker<'scope> {
    /// Exchanges events and registry records by node and turns them into [`NodeFact`] changes
    /// (a differential collection's updates: `(fact, time, diff)`), with status and expiry
    /// timers in event time.
    ///
    /// # Examples
    /// ```
    /// use differential_dataflow::input::Input as _;
    /// use kaiabc_operators::fleet::{ClockView, FleetConfig, Name, NodeEvent, NodeFact, NodeMeta, NodeTracker, OrdF64, Status};
    /// use timely::dataflow::operators::vec::Input;
    /// use timely::dataflow::operators::Capture;
    /// use timely::dataflow::operators::capture::Extract;
    ///
    /// let clock = ClockView {
    ///     phase: OrdF64::from(0.5), circadian_time: OrdF64::from(12.0),
    ///     period_hours: OrdF64::from(24.0), koa: OrdF64::from(0.4),
    ///     temperature_kelvin: OrdF64::from(303.15),
    /// };
    /// // One reading at minute 0 and another node's at minute 10: the first is offline by then.
    /// let events = vec![
    ///     (NodeEvent::State { node: "a".into(), at: 0, clock }, 0u64),
    ///     (NodeEvent::State { node: "b".into(), at: 600_000_000, clock }, 10),
    /// ];
    /// let out = timely::execute_directly(move |worker| {
    ///     let (mut input, mut registry, out) = worker.dataflow::<u64, _, _>(|scope| {
    ///         let (input, events) = scope.new_input::<NodeEvent>();
    ///         let (registry, records) = scope.new_collection::<(Name, NodeMeta), isize>();
    ///         (input, registry, events.node_tracker(records, FleetConfig::default()).capture())
    ///     });
    ///     for (event, tick) in events {
    ///         input.advance_to(tick);
    ///         registry.advance_to(tick);
    ///         input.send(event);
    ///     }
    ///     out
    /// });
    /// let changes: Vec<(NodeFact, u64, isize)> =
    ///     out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// let offline_at: Vec<u64> = changes.iter().filter_map(|(f, t, d)| match f {
    ///     NodeFact::Member(n, v, _) if n == "a" && v.status == Status::Offline && *d > 0 => Some(*t),
    ///     _ => None,
    /// }).collect();
    /// assert_eq!(offline_at, [5]);
    /// ```
    fn node_tracker(
        self,
        registry: VecCollection<'scope, u64, (Name, NodeMeta)>,
        cfg: FleetConfig,
    ) -> Stream<'scope, u64, Vec<(NodeFact, u64, isize)>>;
}

impl<'scope> NodeTracker<'scope> for Stream<'scope, u64, Vec<NodeEvent>> {
    fn node_tracker(
        self,
        registry: VecCollection<'scope, u64, (Name, NodeMeta)>,
        cfg: FleetConfig,
    ) -> Stream<'scope, u64, Vec<(NodeFact, u64, isize)>> {
        let events = Exchange::new(|e: &NodeEvent| node_hash(e.node().map_or("", |n| n)));
        let records = Exchange::new(|r: &((Name, NodeMeta), u64, isize)| node_hash(&r.0 .0));
        self.binary_frontier(
            registry.inner,
            events,
            records,
            "NodeTracker",
            move |initial, _info| {
                // Data come with their own capabilities; timers are held by one at (or before)
                // the earliest.
                drop(initial);
                let mut held: Option<Capability<u64>> = None;
                let mut stash: Stash = BTreeMap::new();
                // The latest tick of input seen: when the input ends, timers up to it still fire.
                let mut last_input = 0u64;
                let mut tracker = Tracker {
                    cfg,
                    nodes: HashMap::new(),
                    timers: BTreeMap::new(),
                    hours: BTreeMap::new(),
                    out: Vec::new(),
                    default_meta: NodeMeta::default(),
                };
                move |(input, frontier), (registry, registry_frontier), output| {
                    // In arrival order within a tick: a node's events apply in the order they came.
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else {
                            return;
                        };
                        let tick = *cap.time();
                        last_input = last_input.max(tick);
                        stash
                            .entry(tick)
                            .or_insert_with(|| (cap, Vec::new(), Vec::new()))
                            .2
                            .append(data);
                    });
                    registry.for_each(|cap, data| {
                        for (record, t, d) in data.drain(..) {
                            stash
                                .entry(t)
                                .or_insert_with(|| (cap.delayed(&t, 0), Vec::new(), Vec::new()))
                                .1
                                .push((record, d));
                        }
                    });
                    // Complete ticks in order, a tick's registry changes and events before its
                    // timers (which then see them): the same changes however the input was batched.
                    let ended = frontier.is_empty();
                    let done =
                        |t: &u64| !frontier.less_equal(t) && !registry_frontier.less_equal(t);
                    loop {
                        let next_input = stash.keys().next().copied().filter(done);
                        let next_timer = tracker
                            .timers
                            .keys()
                            .next()
                            .copied()
                            .filter(|t| done(t) && (!ended || *t <= last_input));
                        match (next_input, next_timer) {
                            (Some(i), t) if t.is_none_or(|t| i <= t) => {
                                let Some((cap, records, events)) = stash.remove(&i) else {
                                    break;
                                };
                                for ((node, meta), d) in records {
                                    tracker.register(node, meta, d, i);
                                }
                                for ev in events {
                                    tracker.apply(ev, i);
                                }
                                if let Some(first) = tracker.timers.keys().next().copied() {
                                    if held.as_ref().is_none_or(|h| *h.time() > first) {
                                        held = Some(cap.delayed(&first.max(i)));
                                    }
                                }
                                // Every time is at or after `i` (see `Tracker::emit`).
                                output.session(&cap).give_iterator(tracker.out.drain(..));
                            }
                            (_, Some(t)) => {
                                let Some(timers) = tracker.timers.remove(&t) else {
                                    break;
                                };
                                tracker.fire(t, timers);
                                if let Some(h) = held.as_ref() {
                                    output.session(h).give_iterator(tracker.out.drain(..));
                                }
                            }
                            _ => break,
                        }
                    }
                    if ended {
                        // Event time stops where the input stopped, and so do the timers.
                        tracker.timers.clear();
                    }
                    match tracker.timers.keys().next() {
                        Some(&next) => {
                            if let Some(h) = held.as_mut() {
                                if *h.time() < next {
                                    h.downgrade(&next);
                                }
                            }
                        }
                        None => held = None,
                    }
                }
            },
        )
    }
}
