//! `first_value` and `last_value` for lake sessions: DataFusion's own functions, with a groups
//! accumulator typed on the value and on a single ordering key when both are fixed-width
//! primitives (a lake's `last_value(koa_metric ORDER BY timestamp)` and the latest-per-node
//! rewrite of [`super::first_row`]).
//!
//! DataFusion 55.2's accumulator handles any number of ordering columns of any type: every
//! row goes through a dynamic lexicographic comparator, and each batch's winners through
//! `ScalarValue`s. On the latest-per-node queries over a day of 2 000 nodes that was a fifth of
//! the query's CPU. Here a row costs one integer comparison against its group's best key.
//!
//! [`FirstLast`] wraps DataFusion's `FirstValue`/`LastValue` and answers every question about
//! the function (name, signature, state fields, reversal, ordering) by asking it; only
//! [`AggregateUDFImpl::create_groups_accumulator`] differs, and only when [`TypedArgs::of`]
//! accepts the call. Otherwise DataFusion's accumulator runs, unchanged.
//!
//! The typed accumulator keeps DataFusion's semantics exactly, tie-breaking included: a row
//! replaces its group's value only when its key sorts strictly before (`first_value`) or
//! strictly after (`last_value`) the best so far under the ORDER BY's direction and null
//! placement, so among tied rows the first one seen wins, in both accumulators. Its partial
//! state has DataFusion's layout (value, key, is-set), so either side of a repartition can be
//! either accumulator.

use std::any::Any;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{make_array, Array, ArrayData, ArrayRef, AsArray, BooleanArray};
use arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowNativeType, DataType, FieldRef};
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::functions_aggregate::first_last::{FirstValue, LastValue};
use datafusion::logical_expr::expr::{
    AggregateFunction, AggregateFunctionParams, WindowFunctionParams,
};
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, Expr, GroupsAccumulator,
    Operator, ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};

/// DataFusion's `first_value` (or `last_value`) with the typed groups accumulator.
#[derive(Debug)]
pub(crate) struct FirstLast {
    /// DataFusion's function, asked everything but the groups accumulator.
    inner: Arc<dyn AggregateUDFImpl>,
    /// `first_value` (true) or `last_value`.
    pick_first: bool,
}

impl PartialEq for FirstLast {
    fn eq(&self, other: &Self) -> bool {
        let other: &dyn Any = other.inner.as_ref();
        self.inner.dyn_eq(other)
    }
}

impl Eq for FirstLast {}

impl Hash for FirstLast {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.dyn_hash(state);
    }
}

/// `first_value` for a lake session.
pub(crate) fn first_value_udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(FirstLast {
        inner: Arc::new(FirstValue::new()),
        pick_first: true,
    }))
}

/// `last_value` for a lake session.
pub(crate) fn last_value_udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(FirstLast {
        inner: Arc::new(LastValue::new()),
        pick_first: false,
    }))
}

impl AggregateUDFImpl for FirstLast {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.schema_name(params)
    }
    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.human_display(params)
    }
    fn window_function_schema_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.inner.window_function_schema_name(params)
    }
    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.display_name(params)
    }
    fn window_function_display_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.inner.window_function_display_name(params)
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.return_field(arg_fields)
    }
    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }
    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(acc_args)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match TypedArgs::of(&args, self.pick_first)? {
            Some(typed) => Ok(typed.accumulator()),
            None => self.inner.create_groups_accumulator(args),
        }
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }
    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        let inner = Arc::clone(&self.inner).with_beneficial_ordering(beneficial_ordering)?;
        Ok(inner.map(|inner| {
            Arc::new(FirstLast {
                inner,
                pick_first: self.pick_first,
            }) as Arc<dyn AggregateUDFImpl>
        }))
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.inner.simplify()
    }
    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        self.inner
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        // DataFusion's answer names its own function; the lake's twin keeps the typed path.
        match self.inner.reverse_expr() {
            ReversedUDAF::Reversed(f) if f.name() == "first_value" => {
                ReversedUDAF::Reversed(first_value_udaf())
            }
            ReversedUDAF::Reversed(f) if f.name() == "last_value" => {
                ReversedUDAF::Reversed(last_value_udaf())
            }
            other => other,
        }
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
    }
    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(statistics_args)
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }
    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }
    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }
}

/// What the typed accumulator needs to know of a call, when it can take it.
struct TypedArgs {
    pick_first: bool,
    descending: bool,
    nulls_first: bool,
    ignore_nulls: bool,
    value_type: DataType,
    key_type: DataType,
}

impl TypedArgs {
    /// The call's particulars if it orders by exactly one expression of a signed integer
    /// type (integers, timestamps, dates, times, durations) and its value has a native width
    /// of 4 or 8 bytes; otherwise `None`, and DataFusion's accumulator runs.
    fn of(args: &AccumulatorArgs, pick_first: bool) -> Result<Option<Self>> {
        let [order] = args.order_bys else {
            return Ok(None);
        };
        let key_type = order.expr.data_type(args.schema)?;
        let value_type = args.return_field.data_type().clone();
        if key_width(&key_type).is_none() || value_width(&value_type).is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            pick_first,
            descending: order.options.descending,
            nulls_first: order.options.nulls_first,
            ignore_nulls: args.ignore_nulls,
            value_type,
            key_type,
        }))
    }

    fn accumulator(self) -> Box<dyn GroupsAccumulator> {
        match (value_width(&self.value_type), key_width(&self.key_type)) {
            (Some(4), Some(4)) => Box::new(Typed::<i32, i32>::new(self)),
            (Some(4), _) => Box::new(Typed::<i32, i64>::new(self)),
            (_, Some(4)) => Box::new(Typed::<i64, i32>::new(self)),
            _ => Box::new(Typed::<i64, i64>::new(self)),
        }
    }
}

/// The native width of an ordering key the accumulator compares as a signed integer.
fn key_width(t: &DataType) -> Option<usize> {
    use DataType::*;
    match t {
        Int32 | Date32 | Time32(_) => Some(4),
        Int64 | Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => Some(8),
        _ => None,
    }
}

/// The native width of a value the accumulator copies as raw bits (4 or 8 bytes).
fn value_width(t: &DataType) -> Option<usize> {
    match t.primitive_width() {
        Some(w @ (4 | 8)) if t.is_primitive() => Some(w),
        _ => None,
    }
}

/// A primitive array's values as `T` (any type of that width: the bits are only compared as
/// keys, or copied as values), and its validity.
fn natives<T: ArrowNativeType>(a: &ArrayRef) -> (ScalarBuffer<T>, Option<NullBuffer>) {
    let data = a.to_data();
    let values = ScalarBuffer::new(data.buffers()[0].clone(), data.offset(), data.len());
    (values, a.logical_nulls())
}

/// A primitive array of `data_type` from native values and validity.
fn array_of<T: ArrowNativeType>(
    data_type: &DataType,
    values: Vec<T>,
    valid: Vec<bool>,
) -> Result<ArrayRef> {
    let len = values.len();
    let nulls = NullBuffer::from(valid);
    let data = ArrayData::builder(data_type.clone())
        .len(len)
        .add_buffer(Buffer::from_vec(values))
        .nulls((nulls.null_count() > 0).then_some(nulls))
        .build()?;
    Ok(make_array(data))
}

/// A group's best row so far: its key and value, and which of them it has (`SET`: the group
/// has a row; `KEY`, `VALUE`: they are not null). One struct a group, so a row touches one
/// cache line.
#[derive(Clone, Copy, Default)]
struct Best<V, K> {
    key: K,
    value: V,
    flags: u8,
}

const SET: u8 = 1;
const KEY: u8 = 2;
const VALUE: u8 = 4;

/// The typed groups accumulator: per group, the best key so far and its row's value. `V` and
/// `K` are the value's and the key's native representations.
struct Typed<V, K> {
    args: TypedArgs,
    best: Vec<Best<V, K>>,
}

impl<V: ArrowNativeType, K: ArrowNativeType + Ord> Typed<V, K> {
    fn new(args: TypedArgs) -> Self {
        Self {
            args,
            best: Vec::new(),
        }
    }

    /// How key `a` sorts against key `b` under the ORDER BY (`None` is a null key).
    #[inline]
    fn order(&self, a: Option<K>, b: Option<K>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) if self.args.descending => b.cmp(&a),
            (Some(a), Some(b)) => a.cmp(&b),
            (None, None) => Ordering::Equal,
            (None, Some(_)) if self.args.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if self.args.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
        }
    }

    /// Whether a row with key `k` replaces `best`.
    #[inline]
    fn wins(&self, best: &Best<V, K>, k: Option<K>) -> bool {
        if best.flags & SET == 0 {
            return true;
        }
        let current = (best.flags & KEY != 0).then_some(best.key);
        let o = self.order(k, current);
        if self.args.pick_first {
            o == Ordering::Less
        } else {
            o == Ordering::Greater
        }
    }

    /// Offers each row `i` with `take(i)` to its group `groups[i]`.
    fn offer(
        &mut self,
        values: &ArrayRef,
        keys: &ArrayRef,
        groups: &[usize],
        take: impl Fn(usize) -> bool,
    ) {
        let (vals, val_nulls) = natives::<V>(values);
        let (ks, key_nulls) = natives::<K>(keys);
        if val_nulls.is_none() && key_nulls.is_none() {
            // The lake's case: no nulls, one comparison a row. Ascending `last_value` and
            // descending `first_value` both keep the greatest key.
            let keep_greatest = self.args.pick_first == self.args.descending;
            // A key beats a group's null key when it sorts before it for `first_value`.
            let beats_null = self.args.pick_first != self.args.nulls_first;
            for (i, &g) in groups.iter().enumerate() {
                if !take(i) {
                    continue;
                }
                let k = ks[i];
                let best = &mut self.best[g];
                let wins = if best.flags & KEY != 0 {
                    if keep_greatest {
                        k > best.key
                    } else {
                        k < best.key
                    }
                } else {
                    best.flags & SET == 0 || beats_null
                };
                if wins {
                    *best = Best {
                        key: k,
                        value: vals[i],
                        flags: SET | KEY | VALUE,
                    };
                }
            }
            return;
        }
        for (i, &g) in groups.iter().enumerate() {
            if !take(i) {
                continue;
            }
            let value_valid = val_nulls.as_ref().is_none_or(|n| n.is_valid(i));
            if self.args.ignore_nulls && !value_valid {
                continue;
            }
            let k = key_nulls
                .as_ref()
                .is_none_or(|n| n.is_valid(i))
                .then(|| ks[i]);
            if self.wins(&self.best[g], k) {
                self.best[g] = Best {
                    key: k.unwrap_or_default(),
                    value: vals[i],
                    flags: SET
                        | if k.is_some() { KEY } else { 0 }
                        | if value_valid { VALUE } else { 0 },
                };
            }
        }
    }

    /// The values (`VALUE`) or keys (`KEY`) of the groups `emit_to` names, taken out, as an
    /// array of `data_type`: null where a group has no row, or its row a null there.
    fn column<T: ArrowNativeType>(
        best: &[Best<V, K>],
        data_type: &DataType,
        which: u8,
        native: impl Fn(&Best<V, K>) -> T,
    ) -> Result<ArrayRef> {
        let valid = best
            .iter()
            .map(|b| b.flags & SET != 0 && b.flags & which != 0)
            .collect();
        array_of(data_type, best.iter().map(native).collect(), valid)
    }
}

impl<V: ArrowNativeType, K: ArrowNativeType + Ord> GroupsAccumulator for Typed<V, K> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [value, key] = values else {
            return internal_err!("{} takes a value and one key", self.args.value_type);
        };
        self.best.resize(total_num_groups, Best::default());
        match opt_filter {
            // A FILTER clause passes a row only when it is true (not null).
            Some(f) => self.offer(value, key, group_indices, |i| f.is_valid(i) && f.value(i)),
            None => self.offer(value, key, group_indices, |_| true),
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let best = emit_to.take_needed(&mut self.best);
        Self::column(&best, &self.args.value_type, VALUE, |b| b.value)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let best = emit_to.take_needed(&mut self.best);
        let set: BooleanArray = best.iter().map(|b| Some(b.flags & SET != 0)).collect();
        Ok(vec![
            Self::column(&best, &self.args.value_type, VALUE, |b| b.value)?,
            Self::column(&best, &self.args.key_type, KEY, |b| b.key)?,
            Arc::new(set),
        ])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let [value, key, is_set] = values else {
            return internal_err!(
                "{}'s state is a value, a key and a flag",
                self.args.value_type
            );
        };
        self.best.resize(total_num_groups, Best::default());
        let is_set = is_set.as_boolean();
        self.offer(value, key, group_indices, |i| {
            is_set.is_valid(i) && is_set.value(i)
        });
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row as its own group's state, as DataFusion's accumulator does it.
        let mut state = values.to_vec();
        let set = match opt_filter {
            Some(f) => f.clone(),
            None => BooleanArray::from(vec![true; values[0].len()]),
        };
        state.push(Arc::new(set));
        Ok(state)
    }

    fn size(&self) -> usize {
        self.best.capacity() * size_of::<Best<V, K>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Float64Type, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::lake::sql_testing::sorted_rows;

    /// `t`: 300 groups of up to 40 rows in three partitions of batches of 97 rows, scrambled.
    /// `k` (Int64) and `d` (Date32) are unique within a group, so no two rows tie; one row in
    /// 13 has no key (at most one a group: null keys tie with each other), one in 7 no value.
    /// `f` is a FILTER with nulls.
    fn register(ctx: &SessionContext) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("k", DataType::Int64, true),
            Field::new("d", DataType::Date32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("v", DataType::Float64, true),
            Field::new("i", DataType::Int32, true),
            Field::new("f", DataType::Boolean, true),
        ]));
        let n = 12_000_i64;
        let rows: Vec<i64> = (0..n).map(|i| (i * 7_919) % n).collect();
        let mut parts = vec![Vec::new(), Vec::new(), Vec::new()];
        for (p, chunk) in rows.chunks(97).enumerate() {
            let group = |r: i64| r % 300;
            let rank = |r: i64| r / 300;
            // The group's one keyless row is its rank-5 row, in the groups divisible by 13.
            let keyless = |r: i64| group(r) % 13 == 0 && rank(r) == 5;
            let k: Int64Array = chunk
                .iter()
                .map(|&r| (!keyless(r)).then_some((rank(r) * 37) % 40 - 20))
                .collect();
            let d: arrow::array::Date32Array = chunk
                .iter()
                .map(|&r| (!keyless(r)).then_some(((rank(r) * 37) % 40) as i32))
                .collect();
            let ts: arrow::array::TimestampMicrosecondArray =
                chunk.iter().map(|&r| Some(rank(r) * 1_000_000)).collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|&r| format!("g{}", group(r))),
                    )),
                    Arc::new(k),
                    Arc::new(d),
                    Arc::new(ts.with_timezone("UTC")),
                    Arc::new(Float64Array::from_iter(
                        chunk.iter().map(|&r| (r % 7 != 0).then_some(r as f64)),
                    )),
                    Arc::new(Int32Array::from_iter(
                        chunk.iter().map(|&r| (r % 5 != 0).then_some(r as i32)),
                    )),
                    Arc::new(BooleanArray::from_iter(
                        chunk.iter().map(|&r| (r % 11 != 0).then_some(r % 3 != 0)),
                    )),
                ],
            )
            .unwrap();
            parts[p % 3].push(batch);
        }
        let table = MemTable::try_new(schema, parts).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
    }

    /// The lake's session, or DataFusion's own (the reference); three partitions each, so
    /// partial states are merged after a repartition.
    fn context(lake: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(3);
        let ctx = if lake {
            let ctx = crate::lake::query::new_context();
            SessionContext::new_with_state(
                datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
                    .with_config(config)
                    .build(),
            )
        } else {
            SessionContext::new_with_config(config)
        };
        register(&ctx);
        ctx
    }

    #[tokio::test]
    async fn answers_are_datafusions_for_every_direction_null_placement_and_clause() {
        let (lake, reference) = (context(true), context(false));
        let mut checked = 0;
        for f in ["first_value", "last_value"] {
            for value in ["v", "i", "ts"] {
                for order in [
                    "k",
                    "k DESC",
                    "k NULLS FIRST",
                    "k DESC NULLS LAST",
                    "d",
                    "d DESC NULLS FIRST",
                    "ts DESC",
                ] {
                    for clause in ["", " IGNORE NULLS", " FILTER (WHERE f)"] {
                        let (nulls, filter) = match clause {
                            " FILTER (WHERE f)" => ("", clause),
                            c => (c, ""),
                        };
                        let sql = format!(
                            "SELECT g, {f}({value} ORDER BY {order}){nulls}{filter} AS x, \
                             count(*) AS n FROM t GROUP BY g"
                        );
                        let got = sorted_rows(&lake, &sql).await;
                        assert_eq!(got, sorted_rows(&reference, &sql).await, "{sql}");
                        assert!(got.len() >= 300, "{sql}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 3 * 7 * 3);
        // And with no GROUP BY, and a group key that is a number.
        for sql in [
            "SELECT last_value(v ORDER BY k) AS x FROM t",
            "SELECT k % 3 AS m, first_value(i ORDER BY ts DESC) AS x FROM t GROUP BY 1",
        ] {
            assert_eq!(
                sorted_rows(&lake, sql).await,
                sorted_rows(&reference, sql).await,
                "{sql}"
            );
        }
    }

    fn args<'a>(
        schema: &'a Schema,
        value: &str,
        order_bys: &'a [PhysicalSortExpr],
    ) -> AccumulatorArgs<'a> {
        let field = schema.field_with_name(value).unwrap();
        AccumulatorArgs {
            return_field: Arc::new(field.clone()),
            schema,
            ignore_nulls: false,
            order_bys,
            is_reversed: false,
            name: "x",
            is_distinct: false,
            exprs: &[],
            expr_fields: &[],
        }
    }

    #[test]
    fn the_typed_accumulator_takes_one_integer_key_and_a_4_or_8_byte_value() {
        let schema = Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("v", DataType::Float64, false),
            Field::new("i", DataType::Int32, false),
            Field::new("s", DataType::Utf8, false),
            Field::new("x", DataType::Float64, false),
        ]);
        let by = |c: &str| PhysicalSortExpr::new_default(col(c, &schema).unwrap());
        let one = [by("ts")];
        let two = [by("ts"), by("v")];
        let float = [by("x")];
        let typed = |value: &str, order: &[PhysicalSortExpr], first: bool| {
            TypedArgs::of(&args(&schema, value, order), first)
                .unwrap()
                .is_some()
        };
        assert!(typed("v", &one, true));
        assert!(typed("i", &one, false));
        // A string value, two keys, a float key: DataFusion's accumulator.
        assert!(!typed("s", &one, true));
        assert!(!typed("v", &two, true));
        assert!(!typed("v", &float, true));
    }

    #[test]
    fn emitting_the_first_groups_keeps_the_rest() {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Float64, false),
        ]);
        let order = [PhysicalSortExpr::new_default(col("k", &schema).unwrap())];
        let mut acc = TypedArgs::of(&args(&schema, "v", &order), false)
            .unwrap()
            .unwrap()
            .accumulator();
        let v: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        let k: ArrayRef = Arc::new(Int64Array::from(vec![10, 5, 7, 9, 1]));
        // Groups 0, 1, 0, 2, 1: the last by key is row 0 (k 10), row 1 (k 5) and row 3.
        acc.update_batch(&[v, k], &[0, 1, 0, 2, 1], None, 3)
            .unwrap();
        let first = acc.state(EmitTo::First(2)).unwrap();
        assert_eq!(first[0].as_primitive::<Float64Type>().values(), &[1.0, 2.0]);
        assert_eq!(
            first[1]
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values(),
            &[10, 5]
        );
        assert_eq!(first[2].as_boolean().true_count(), 2);
        let rest = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(rest.as_primitive::<Float64Type>().values(), &[4.0]);
    }
}
