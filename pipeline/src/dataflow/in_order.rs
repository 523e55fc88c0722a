//! Splitting and inspecting a stream in arrival order. timely's own `ok_err` and `inspect` read
//! their input with `for_each_stamp`, which sorts the waiting messages by time with an unstable
//! sort. Live, that reorders what must stay in order: two readings of one node stamped at the
//! same watermark tick (seen as readings marked late with no kill at all, found by the crash
//! test), and a checkpoint barrier (stamped at the input frontier) ahead of rows of later ticks
//! that were sent before it, which the sink would then commit after the barrier's checkpoint.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

/// Arrival-order versions of `ok_err` and `inspect`.
pub trait InOrder<'scope, D: 'static> {
    /// Sends each record to the first stream (`Ok`) or the second (`Err`), in arrival order.
    #[allow(clippy::type_complexity)]
    fn ok_err_in_order<D1, D2, L>(
        self,
        logic: L,
    ) -> (Stream<'scope, u64, Vec<D1>>, Stream<'scope, u64, Vec<D2>>)
    where
        D1: Clone + 'static,
        D2: Clone + 'static,
        L: FnMut(D) -> Result<D1, D2> + 'static;

    /// Passes the stream on unchanged, and sends what `func` makes of each record (where it
    /// makes something) on a second stream, both in arrival order.
    #[allow(clippy::type_complexity)]
    fn tap_in_order<D2, F>(
        self,
        func: F,
    ) -> (Stream<'scope, u64, Vec<D>>, Stream<'scope, u64, Vec<D2>>)
    where
        D2: Clone + 'static,
        F: FnMut(&D) -> Option<D2> + 'static;

    /// Calls `func` on each batch of records as it arrives, in arrival order, and passes the
    /// stream on unchanged: for work that is cheaper done a batch at a time.
    fn inspect_batches_in_order<F>(self, func: F) -> Stream<'scope, u64, Vec<D>>
    where
        F: FnMut(&[D]) + 'static;
}

impl<'scope, D: Clone + 'static> InOrder<'scope, D> for Stream<'scope, u64, Vec<D>> {
    fn ok_err_in_order<D1, D2, L>(
        self,
        mut logic: L,
    ) -> (Stream<'scope, u64, Vec<D1>>, Stream<'scope, u64, Vec<D2>>)
    where
        D1: Clone + 'static,
        D2: Clone + 'static,
        L: FnMut(D) -> Result<D1, D2> + 'static,
    {
        let mut builder = OperatorBuilder::new("OkErrInOrder".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (ok, ok_stream) = builder.new_output::<Vec<D1>>();
        let (err, err_stream) = builder.new_output::<Vec<D2>>();
        let mut ok = OutputBuilder::<_, CapacityContainerBuilder<Vec<D1>>>::from(ok);
        let mut err = OutputBuilder::<_, CapacityContainerBuilder<Vec<D2>>>::from(err);
        builder.build(move |_| {
            move |_frontiers| {
                let mut ok = ok.activate();
                let mut err = err.activate();
                input.for_each(|cap, data| {
                    let mut to_ok = ok.session(&cap);
                    let mut to_err = err.session(&cap);
                    for d in data.drain(..) {
                        match logic(d) {
                            Ok(x) => to_ok.give(x),
                            Err(y) => to_err.give(y),
                        }
                    }
                });
            }
        });
        (ok_stream, err_stream)
    }

    fn tap_in_order<D2, F>(
        self,
        mut func: F,
    ) -> (Stream<'scope, u64, Vec<D>>, Stream<'scope, u64, Vec<D2>>)
    where
        D2: Clone + 'static,
        F: FnMut(&D) -> Option<D2> + 'static,
    {
        let mut builder = OperatorBuilder::new("TapInOrder".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (same, same_stream) = builder.new_output::<Vec<D>>();
        let (tap, tap_stream) = builder.new_output::<Vec<D2>>();
        let mut same = OutputBuilder::<_, CapacityContainerBuilder<Vec<D>>>::from(same);
        let mut tap = OutputBuilder::<_, CapacityContainerBuilder<Vec<D2>>>::from(tap);
        builder.build(move |_| {
            move |_frontiers| {
                let mut same = same.activate();
                let mut tap = tap.activate();
                input.for_each(|cap, data| {
                    let mut tapped = tap.session(&cap);
                    for d in data.iter() {
                        if let Some(x) = func(d) {
                            tapped.give(x);
                        }
                    }
                    drop(tapped);
                    same.session(&cap).give_container(data);
                });
            }
        });
        (same_stream, tap_stream)
    }

    fn inspect_batches_in_order<F>(self, mut func: F) -> Stream<'scope, u64, Vec<D>>
    where
        F: FnMut(&[D]) + 'static,
    {
        self.unary(Pipeline, "InspectInOrder", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    func(data);
                    output.session(&cap).give_container(data);
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::core::UnorderedInput;
    use timely::dataflow::operators::Capture;

    /// Messages at one time keep the order they were sent in (timely's `ok_err` and `inspect`
    /// sort a step's messages by time, unstably).
    #[test]
    fn records_at_one_time_keep_their_arrival_order() {
        let (oks, errs, seen) = timely::execute_directly(|worker| {
            let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let log = std::rc::Rc::clone(&seen);
            let (mut input, cap, oks, errs) = worker.dataflow::<u64, _, _>(|scope| {
                let ((input, cap), stream) =
                    scope.new_unordered_input::<CapacityContainerBuilder<Vec<u32>>>();
                let (oks, errs) = stream
                    .inspect_batches_in_order(move |x: &[u32]| {
                        log.borrow_mut().extend_from_slice(x)
                    })
                    .ok_err_in_order(|x| if x % 3 == 0 { Err(x) } else { Ok(x) });
                (input, cap, oks.capture(), errs.capture())
            });
            // One message per record, all at time 5, then one at time 7, then time 5 again.
            for (t, x) in [(5u64, 1u32), (5, 2), (5, 3), (7, 4), (5, 5), (5, 6), (5, 7)] {
                let at = cap.delayed(&t);
                input.activate().session(&at).give_container(&mut vec![x]);
            }
            drop(cap);
            drop(input);
            while worker.step() {}
            let seen = seen.borrow().clone();
            (oks, errs, seen)
        });
        let flat = |c: std::sync::mpsc::Receiver<_>| -> Vec<u32> {
            c.extract().into_iter().flat_map(|(_, v)| v).collect()
        };
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
        // `extract` groups by time; within a time the arrival order must hold.
        assert_eq!(flat(oks), [1, 2, 5, 7, 4]);
        assert_eq!(flat(errs), [3, 6]);
    }
}
