//! Order statistics (min, median, max) of each group's measures, and the outliers against a
//! group's median window period, kept incrementally: a change costs O(log n) in the size of its
//! group, not a pass over the group's values.
//!
//! Differential's `reduce` hands its closure every value of a key that changed, so the fleet
//! group's median cost a read of all its nodes' values whenever any of them changed (half the
//! views' time at 100 000 nodes). Here each `(group, measure)` keeps its values as two ordered
//! halves (see [`Halves`]); the median is read off the boundary between them, and outliers are
//! the ends of the halves beyond the configured distance, so a median that moves touches only the
//! outliers it changes. Time is totally ordered (ticks), so the operator applies each completed
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

/// One member of a group's values: the value, then the node (so equal values stay distinct).
type Member = (OrdF64, Name);

/// A multiset of members as two ordered halves: `low` holds the smaller ⌈n/2⌉, `high` the rest,
/// and every member of `low` is at most every member of `high`. The median's two middle ranks,
/// (n−1)/2 and n/2, are then `low`'s last and (for an even n) `high`'s first.
#[derive(Debug, Default)]
struct Halves {
    low: BTreeMap<Member, u32>,
    high: BTreeMap<Member, u32>,
    low_n: u64,
    high_n: u64,
}

impl Halves {
    fn len(&self) -> u64 {
        self.low_n + self.high_n
    }

    fn insert(&mut self, m: Member) {
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
    fn remove(&mut self, m: &Member) -> bool {
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
    fn apply(&mut self, mut updates: Vec<(Member, isize)>) {
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
        differential_dataflow::consolidation::consolidate(&mut updates);
        let held = std::mem::take(&mut self.low)
            .into_iter()
            .chain(std::mem::take(&mut self.high))
            .map(|(m, c)| (m, c as isize));
        let mut merged: Vec<(Member, isize)> =
            Vec::with_capacity(self.len() as usize + updates.len());
        let mut changes = updates.into_iter().peekable();
        for (m, c) in held {
            while let Some(u) = changes.next_if(|(u, _)| *u < m) {
                merged.push(u);
            }
            let c = c + changes.next_if(|(u, _)| *u == m).map_or(0, |(_, d)| d);
            merged.push((m, c));
        }
        merged.extend(changes);
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
            self.low.first_key_value()?.0 .0,
            self.low.last_key_value()?.0 .0,
        );
        let hi_first = self.high.first_key_value().map(|(m, _)| m.0);
        let hi_last = self.high.last_key_value().map(|(m, _)| m.0);
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
    fn beyond(&self, median: f64, distance: f64) -> impl Iterator<Item = (&Member, u32)> + '_ {
        let far = move |m: &&Member| (m.0.get() - median).abs() > distance;
        let below = self.low.iter().take_while(move |(m, _)| far(m));
        let above = self.high.iter().rev().take_while(move |(m, _)| far(m));
        below.chain(above).map(|(m, c)| (m, *c))
    }
}

/// Takes one copy of an entry's member out of its half.
fn pop_one(mut e: std::collections::btree_map::OccupiedEntry<'_, Member, u32>) -> Member {
    if *e.get() > 1 {
        *e.get_mut() -= 1;
        e.key().clone()
    } else {
        e.remove_entry().0
    }
}

/// Removes one copy of `m` from a half (which holds it).
fn take_one(half: &mut BTreeMap<Member, u32>, m: &Member) {
    if let Some(c) = half.get_mut(m) {
        *c -= 1;
        if *c == 0 {
            half.remove(m);
        }
    }
}

/// The key of a group's values: the group and the measure.
type SpreadKey = (GroupKey, Measure);

/// One key's state on its worker.
#[derive(Debug, Default)]
struct KeyState {
    halves: Halves,
}

/// The facts a key holds: its spread and (for the window period) its outliers.
fn facts_of(key: &SpreadKey, halves: &Halves, distance: f64) -> Vec<FleetFact> {
    let Some(spread) = halves.spread() else {
        return Vec::new();
    };
    let (group, measure) = key;
    let mut facts = vec![FleetFact::Spread(group.clone(), *measure, spread)];
    if *measure == Measure::WindowPeriodHours {
        for ((p, node), _) in halves.beyond(spread.median.get(), distance) {
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

/// Extension trait: the order statistics and outliers of a collection of group members.
pub trait GroupSpreads<'scope> {
    /// From `((group, measure), (value, node))` members, each group's [`FleetFact::Spread`] per
    /// measure and, for [`Measure::WindowPeriodHours`], a [`FleetFact::Outlier`] for each node
    /// further than `distance` hours from the group's median.
    fn group_spreads(self, distance: f64) -> VecCollection<'scope, u64, FleetFact>;
}

/// Updates held until their tick is complete, with the capability they came with.
type Stash = BTreeMap<u64, (Capability<u64>, Vec<((SpreadKey, Member), isize)>)>;

impl<'scope> GroupSpreads<'scope> for VecCollection<'scope, u64, (SpreadKey, Member)> {
    fn group_spreads(self, distance: f64) -> VecCollection<'scope, u64, FleetFact> {
        let pact = Exchange::new(|u: &((SpreadKey, Member), u64, isize)| u.0 .0.hashed());
        self.inner
            .unary_frontier(pact, "GroupSpreads", move |_initial, _info| {
                let mut stash = Stash::new();
                let mut keys: HashMap<SpreadKey, KeyState> = HashMap::new();
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
                        let mut by_key: HashMap<SpreadKey, Vec<(Member, isize)>> =
                            HashMap::default();
                        for ((key, member), d) in updates {
                            by_key.entry(key).or_default().push((member, d));
                        }
                        // Each touched key's facts before the tick.
                        let mut before: Vec<(SpreadKey, Vec<FleetFact>)> = Vec::new();
                        for (key, updates) in by_key {
                            let state = keys.entry(key.clone()).or_default();
                            before.push((key.clone(), facts_of(&key, &state.halves, distance)));
                            state.halves.apply(updates);
                        }
                        let mut session = output.session(&cap);
                        for (key, old) in before {
                            let state = keys.get(&key).expect("touched keys exist");
                            let new = facts_of(&key, &state.halves, distance);
                            if state.halves.len() == 0 {
                                keys.remove(&key);
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
        let mut h = Halves::default();
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
        let mut h = Halves::default();
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
    fn outliers_are_the_ends_beyond_the_distance() {
        let mut h = Halves::default();
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
