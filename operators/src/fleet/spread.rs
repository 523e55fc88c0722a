//! Order statistics (min, median, max) of each group's measures, and the outliers against a
//! group's median window period, kept incrementally: a change costs O(log n) in the size of its
//! group, not a pass over the group's values.
//!
//! Differential's `reduce` hands its closure every value of a key that changed, so the fleet
//! group's median cost a read of all its nodes' values whenever any of them changed (half the
//! views' time at 100 000 nodes). Here each group keeps, per measure, its values as two ordered
//! halves (`Halves`); the median is read off the boundary between them, and outliers are
//! the ends of the halves beyond the configured distance, so a median that moves touches only the
//! outliers it changes. The clock measures keep bare values (a multiset: only their order
//! statistics are asked for); the window period keeps `(value, node)`, to name its outliers. A
//! node's change is one update per group carrying all its measures. Time is totally ordered (ticks), so the operator applies each completed
//! tick's updates in order and sends each touched key's old record retracted and new one inserted,
//! as `reduce` would.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};

use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::group::{GroupKey, Measure, Spread};
use super::views::FleetFact;
use super::{Name, OrdF64};

/// A member of the window-period halves: the value, then the node (so equal values stay
/// distinct and outliers are named).
type Member = (OrdF64, Name);

/// What a group's halves hold: ordered by its value first.
trait Valued: Ord + Clone + std::fmt::Debug {
    /// The value.
    fn value(&self) -> OrdF64;
}

impl Valued for OrdF64 {
    fn value(&self) -> OrdF64 {
        *self
    }
}

impl Valued for Member {
    fn value(&self) -> OrdF64 {
        self.0
    }
}

/// A multiset as two ordered halves: `low` holds the smaller ⌈n/2⌉, `high` the rest, and every
/// member of `low` is at most every member of `high`. The median's two middle ranks, (n−1)/2 and
/// n/2, are then `low`'s last and (for an even n) `high`'s first.
#[derive(Debug)]
struct Halves<K> {
    low: BTreeMap<K, u32>,
    high: BTreeMap<K, u32>,
    low_n: u64,
    high_n: u64,
}

impl<K> Default for Halves<K> {
    fn default() -> Self {
        Self {
            low: BTreeMap::new(),
            high: BTreeMap::new(),
            low_n: 0,
            high_n: 0,
        }
    }
}

impl<K: Valued> Halves<K> {
    fn len(&self) -> u64 {
        self.low_n + self.high_n
    }

    fn insert(&mut self, m: K) {
        if self.low.last_key_value().is_none_or(|(top, _)| m <= *top) {
            *self.low.entry(m).or_default() += 1;
            self.low_n += 1;
        } else {
            *self.high.entry(m).or_default() += 1;
            self.high_n += 1;
        }
        self.balance();
    }

    /// Removes one copy of `m`; `false` if it is not held (an update that retracts what was
    /// never inserted, which a consistent collection does not send).
    fn remove(&mut self, m: &K) -> bool {
        let (half, n) = if self.low.contains_key(m) {
            (&mut self.low, &mut self.low_n)
        } else if self.high.contains_key(m) {
            (&mut self.high, &mut self.high_n)
        } else {
            return false;
        };
        take_one(half, m);
        *n -= 1;
        self.balance();
        true
    }

    /// Moves members one copy at a time until `low` holds ⌈n/2⌉.
    fn balance(&mut self) {
        let want = self.len().div_ceil(2);
        while self.low_n > want {
            let top = pop_one(self.low.last_entry().expect("low is not empty"));
            *self.high.entry(top).or_default() += 1;
            self.low_n -= 1;
            self.high_n += 1;
        }
        while self.low_n < want {
            let bottom = pop_one(self.high.first_entry().expect("high is not empty"));
            *self.low.entry(bottom).or_default() += 1;
            self.high_n -= 1;
            self.low_n += 1;
        }
    }

    /// Applies a tick's updates: one at a time when they are few against the values held,
    /// otherwise by merging them, sorted, with the values and rebuilding both halves (O(n + k
    /// log k) for k updates, against O(k log n) with a cache miss per tree level).
    fn apply(&mut self, mut updates: Vec<(K, isize)>) {
        if updates.len() < 64 || (updates.len() as u64) < self.len() / 8 {
            // Insertions first, so a retraction always finds what it retracts.
            updates.sort_by_key(|(_, d)| std::cmp::Reverse(*d > 0));
            for (member, d) in updates {
                for _ in 0..d.unsigned_abs() {
                    if d > 0 {
                        self.insert(member.clone());
                    } else {
                        let held = self.remove(&member);
                        debug_assert!(held, "retraction of {member:?}, not held");
                    }
                }
            }
            return;
        }
        // Consolidated: sorted (unstable: equal members are summed anyway), equal ones summed.
        updates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        updates.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 += later.1;
            }
            same
        });
        updates.retain(|(_, d)| *d != 0);
        let held = std::mem::take(&mut self.low)
            .into_iter()
            .chain(std::mem::take(&mut self.high))
            .map(|(m, c)| (m, c as isize));
        let mut merged: Vec<(K, isize)> = Vec::with_capacity(self.len() as usize + updates.len());
        let mut changes = updates.into_iter().peekable();
        for (m, c) in held {
            while let Some(u) = changes.next_if(|(u, _)| *u < m) {
                merged.push(u);
            }
            let c = c + changes.next_if(|(u, _)| *u == m).map_or(0, |(_, d)| d);
            merged.push((m, c));
        }
        merged.extend(changes);
        // A member split between the halves came out twice, side by side: one count.
        merged.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 += later.1;
            }
            same
        });
        merged.retain(|(_, c)| *c > 0);
        let n: u64 = merged.iter().map(|(_, c)| *c as u64).sum();
        let mut want = n.div_ceil(2);
        let (mut low, mut high) = (Vec::new(), Vec::new());
        for (m, c) in merged {
            let c = c as u64;
            let to_low = c.min(want);
            want -= to_low;
            if to_low > 0 && to_low < c {
                low.push((m.clone(), to_low as u32));
                high.push((m, (c - to_low) as u32));
            } else if to_low > 0 {
                low.push((m, c as u32));
            } else {
                high.push((m, c as u32));
            }
        }
        // Sorted input: both maps are built in bulk.
        self.low = low.into_iter().collect();
        self.high = high.into_iter().collect();
        self.low_n = n.div_ceil(2);
        self.high_n = n / 2;
    }

    /// Min, median (the mean of the middle two for an even count) and max; `None` when empty.
    fn spread(&self) -> Option<Spread> {
        let (lo_first, lo_last) = (
            self.low.first_key_value()?.0.value(),
            self.low.last_key_value()?.0.value(),
        );
        let hi_first = self.high.first_key_value().map(|(m, _)| m.value());
        let hi_last = self.high.last_key_value().map(|(m, _)| m.value());
        let upper = if self.len() % 2 == 1 {
            lo_last
        } else {
            hi_first.unwrap_or(lo_last)
        };
        Some(Spread {
            min: lo_first,
            median: OrdF64::from((lo_last.get() + upper.get()) / 2.0),
            max: hi_last.unwrap_or(lo_last),
        })
    }

    /// The members further than `distance` from `median`: they are a prefix of `low` and a
    /// suffix of `high`, since the median lies between the halves.
    fn beyond(&self, median: f64, distance: f64) -> impl Iterator<Item = (&K, u32)> + '_ {
        let far = move |m: &&K| (m.value().get() - median).abs() > distance;
        let below = self.low.iter().take_while(move |(m, _)| far(m));
        let above = self.high.iter().rev().take_while(move |(m, _)| far(m));
        below.chain(above).map(|(m, c)| (m, *c))
    }
}

/// Takes one copy of an entry's member out of its half.
fn pop_one<K: Ord + Clone>(mut e: std::collections::btree_map::OccupiedEntry<'_, K, u32>) -> K {
    if *e.get() > 1 {
        *e.get_mut() -= 1;
        e.key().clone()
    } else {
        e.remove_entry().0
    }
}

/// Removes one copy of `m` from a half (which holds it).
fn take_one<K: Ord>(half: &mut BTreeMap<K, u32>, m: &K) {
    if let Some(c) = half.get_mut(m) {
        *c -= 1;
        if *c == 0 {
            half.remove(m);
        }
    }
}

/// A node's values of each measure, in [`Measure::ALL`]'s order (`None`: it has none).
pub type NodeValues = [Option<OrdF64>; 4];

/// The clock measures, whose values are kept bare.
const CLOCK: [Measure; 3] = [
    Measure::PeriodHours,
    Measure::Koa,
    Measure::TemperatureKelvin,
];

/// One group's values on its worker.
#[derive(Debug, Default)]
struct GroupValues {
    /// By measure, in [`CLOCK`]'s order.
    clock: [Halves<OrdF64>; 3],
    /// The window periods, with their nodes.
    window: Halves<Member>,
}

impl GroupValues {
    fn is_empty(&self) -> bool {
        self.window.len() == 0 && self.clock.iter().all(|h| h.len() == 0)
    }

    /// Applies a tick's updates of the group's members.
    fn apply(&mut self, updates: &[MemberUpdate]) {
        for (i, halves) in self.clock.iter_mut().enumerate() {
            let m = CLOCK[i] as usize;
            let values: Vec<(OrdF64, isize)> = updates
                .iter()
                .filter_map(|((_, v), d)| v[m].map(|x| (x, *d)))
                .collect();
            if !values.is_empty() {
                halves.apply(values);
            }
        }
        let w = Measure::WindowPeriodHours as usize;
        let windows: Vec<(Member, isize)> = updates
            .iter()
            .filter_map(|((node, v), d)| v[w].map(|x| ((x, node.clone()), *d)))
            .collect();
        if !windows.is_empty() {
            self.window.apply(windows);
        }
    }

    /// The facts the group holds: a spread per measure with values and the window period's
    /// outliers.
    fn facts(&self, group: &GroupKey, distance: f64) -> Vec<FleetFact> {
        let mut facts: Vec<FleetFact> = CLOCK
            .iter()
            .zip(&self.clock)
            .filter_map(|(m, h)| h.spread().map(|s| FleetFact::Spread(group.clone(), *m, s)))
            .collect();
        if let Some(spread) = self.window.spread() {
            facts.push(FleetFact::Spread(
                group.clone(),
                Measure::WindowPeriodHours,
                spread,
            ));
            for ((p, node), _) in self.window.beyond(spread.median.get(), distance) {
                facts.push(FleetFact::Outlier(
                    group.clone(),
                    node.clone(),
                    *p,
                    spread.median,
                ));
            }
        }
        facts
    }
}

/// Extension trait: the order statistics and outliers of a collection of group members.
pub trait GroupSpreads<'scope> {
    /// From `(group, (node, values))` members, each group's [`FleetFact::Spread`] per measure
    /// and, for [`Measure::WindowPeriodHours`], a [`FleetFact::Outlier`] for each node further
    /// than `distance` hours from the group's median.
    fn group_spreads(self, distance: f64) -> VecCollection<'scope, u64, FleetFact>;
}

/// A node's values in a group, and its multiplicity.
type MemberUpdate = ((Name, NodeValues), isize);

/// A group member's update.
type Update = ((GroupKey, (Name, NodeValues)), isize);

/// Updates held until their tick is complete, with the capability they came with.
type Stash = BTreeMap<u64, (Capability<u64>, Vec<Update>)>;

impl<'scope> GroupSpreads<'scope> for VecCollection<'scope, u64, (GroupKey, (Name, NodeValues))> {
    fn group_spreads(self, distance: f64) -> VecCollection<'scope, u64, FleetFact> {
        let pact =
            Exchange::new(|u: &((GroupKey, (Name, NodeValues)), u64, isize)| u.0 .0.hashed());
        self.inner
            .unary_frontier(pact, "GroupSpreads", move |_initial, _info| {
                let mut stash = Stash::new();
                let mut groups: HashMap<GroupKey, GroupValues> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for (member, t, d) in data.drain(..) {
                            stash
                                .entry(t)
                                .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()))
                                .1
                                .push((member, d));
                        }
                    });
                    while let Some(entry) = stash.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (t, (cap, updates)) = entry.remove_entry();
                        let mut by_group: HashMap<GroupKey, Vec<MemberUpdate>> = HashMap::new();
                        for ((group, member), d) in updates {
                            by_group.entry(group).or_default().push((member, d));
                        }
                        let mut session = output.session(&cap);
                        for (group, updates) in by_group {
                            let state = groups.entry(group.clone()).or_default();
                            let old = state.facts(&group, distance);
                            state.apply(&updates);
                            let new = state.facts(&group, distance);
                            if state.is_empty() {
                                groups.remove(&group);
                            }
                            if old == new {
                                continue;
                            }
                            let mut changes: Vec<(FleetFact, isize)> = old
                                .into_iter()
                                .map(|f| (f, -1))
                                .chain(new.into_iter().map(|f| (f, 1)))
                                .collect();
                            differential_dataflow::consolidation::consolidate(&mut changes);
                            session.give_iterator(changes.into_iter().map(|(f, d)| (f, t, d)));
                        }
                    }
                }
            })
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spread the same way `Spread::of_sorted` computes it from all the values.
    fn reference(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<OrdF64> = values.iter().map(|&x| OrdF64::from(x)).collect();
        v.sort();
        let counted: Vec<(&OrdF64, isize)> = v.iter().map(|x| (x, 1)).collect();
        Spread::of_sorted(&counted)
    }

    #[test]
    fn halves_keep_the_median_through_inserts_and_removals() {
        let mut h: Halves<Member> = Halves::default();
        let mut held: Vec<(f64, Name)> = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..2_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A few repeated values, so ties between nodes are exercised.
            let v = f64::from((x % 37) as u32) / 4.0;
            let node: Name = format!("n{}", x % 50).into();
            if step % 3 == 2 && !held.is_empty() {
                let (v, node) = held.remove((x % held.len() as u64) as usize);
                assert!(h.remove(&(OrdF64::from(v), node)));
            } else {
                h.insert((OrdF64::from(v), node.clone()));
                held.push((v, node));
            }
            let values: Vec<f64> = held.iter().map(|(v, _)| *v).collect();
            assert_eq!(h.spread(), reference(&values), "after step {step}");
        }
        assert!(!h.remove(&(OrdF64::from(1e9), "absent".into())));
    }

    #[test]
    fn batches_of_any_size_give_the_same_spread_and_outliers() {
        let mut h: Halves<Member> = Halves::default();
        let mut held: Vec<(OrdF64, Name)> = Vec::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Batch sizes on both sides of the bulk threshold, including ones that empty the set.
        for (round, size) in [5usize, 300, 40, 1_000, 3, 700, 2_000, 64, 1]
            .iter()
            .enumerate()
        {
            let mut batch: Vec<(Member, isize)> = Vec::new();
            for i in 0..*size {
                let r = next();
                if r % 3 == 0 && !held.is_empty() {
                    let m = held.remove((r % held.len() as u64) as usize);
                    batch.push((m, -1));
                } else {
                    let m = (
                        OrdF64::from(f64::from((r % 101) as u32) / 4.0),
                        format!("n{round}_{i}").into(),
                    );
                    held.push(m.clone());
                    batch.push((m, 1));
                }
            }
            h.apply(batch);
            let values: Vec<f64> = held.iter().map(|(v, _)| v.get()).collect();
            let spread = h.spread();
            assert_eq!(spread, reference(&values), "round {round}");
            if let Some(s) = spread {
                let m = s.median.get();
                let mut far: Vec<Member> = h.beyond(m, 5.0).map(|(m, _)| m.clone()).collect();
                let mut want: Vec<Member> = held
                    .iter()
                    .filter(|(v, _)| (v.get() - m).abs() > 5.0)
                    .cloned()
                    .collect();
                far.sort();
                want.sort();
                assert_eq!(far, want, "round {round}");
            }
        }
    }

    #[test]
    fn repeated_bare_values_split_between_the_halves_count_once() {
        let mut h: Halves<OrdF64> = Halves::default();
        let mut held: Vec<f64> = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for (round, size) in [70usize, 5, 200, 130, 9, 400, 80].iter().enumerate() {
            let mut batch: Vec<(OrdF64, isize)> = Vec::new();
            for _ in 0..*size {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(2) && !held.is_empty() {
                    let v = held.remove((x % held.len() as u64) as usize);
                    batch.push((OrdF64::from(v), -1));
                } else {
                    // Three values only: every one is split between the halves.
                    let v = f64::from((x % 3) as u32);
                    held.push(v);
                    batch.push((OrdF64::from(v), 1));
                }
            }
            h.apply(batch);
            assert_eq!(h.len() as usize, held.len(), "round {round}");
            assert_eq!(h.spread(), reference(&held), "round {round}");
        }
    }

    #[test]
    fn outliers_are_the_ends_beyond_the_distance() {
        let mut h: Halves<Member> = Halves::default();
        for (i, v) in [20.0, 23.5, 24.0, 24.2, 24.4, 27.0, 30.0]
            .iter()
            .enumerate()
        {
            h.insert((OrdF64::from(*v), format!("n{i}").into()));
        }
        let median = h.spread().unwrap().median.get();
        assert_eq!(median, 24.2);
        let far: Vec<f64> = h.beyond(median, 1.0).map(|(m, _)| m.0.get()).collect();
        assert_eq!(far, [20.0, 30.0, 27.0]);
    }
}
