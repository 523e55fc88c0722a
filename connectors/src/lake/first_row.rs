//! A logical optimizer rule for "the latest row per node" written with `row_number() … = 1`:
//! the window over every row becomes one aggregate per partition, as DuckDB plans it.
//!
//! ```sql
//! SELECT node_id, koa_metric FROM (
//!     SELECT node_id, koa_metric,
//!            row_number() OVER (PARTITION BY node_id ORDER BY timestamp DESC) AS r
//!     FROM states) WHERE r = 1
//! ```
//!
//! keeps, of each node, the row that sorts first by `timestamp DESC`: the same row that
//! `first_value(c ORDER BY timestamp DESC)` picks for every column `c`, grouped by `node_id`.
//! DataFusion 55.2 plans the window as a sort of the whole table (12× DuckDB's time on a day
//! of 2 000 nodes), and its per-partition top-K operator, which [`super::topk`] wires in for the
//! general case, is no faster when every row improves on the last (a lake's rows are in time
//! order, the query asks for the newest). An aggregate reads each row once and keeps one
//! value per group and column. The rule is DuckDB's "top-N window elimination" for N = 1
//! (and apache/datafusion#23824's proposal).
//!
//! [`FirstRowPerPartition`] replaces the `Window` under `Filter(r = 1)` (directly, or through a
//! projection that passes `r` on) with `Projection(group columns, first values, 1 AS r) →
//! Aggregate(GROUP BY the partition columns, first_value(c ORDER BY …) for each other column)`.
//! The filter stays and is true for every row; DataFusion's own rules then drop it, and the
//! first values no one reads.
//!
//! Ties in the ORDER BY leave `row_number()` free to pick any of the tied rows, and the
//! aggregate picks one of them too; a column's value then still comes from one of the tied
//! rows, but not necessarily all columns from the same one. Queries that need a single row
//! among ties order by a unique key (the lake's rows are unique per node and time).

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_window::row_number::RowNumber;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    lit, Aggregate, BinaryExpr, Expr, ExprFunctionExt, Filter, LogicalPlan, Operator, Projection,
    Window, WindowFunctionDefinition,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// Rewrites `Filter(r = 1)` over `row_number() OVER (PARTITION BY columns ORDER BY …) AS r`
/// into an aggregate of first values; see the module's description.
#[derive(Debug, Default, Clone, Copy)]
pub struct FirstRowPerPartition;

impl OptimizerRule for FirstRowPerPartition {
    fn name(&self) -> &str {
        "FirstRowPerPartition"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(column) = first_only(&filter.predicate) else {
            return Ok(Transformed::no(plan));
        };
        let Some(input) = without_window(&filter.input, column)? else {
            return Ok(Transformed::no(plan));
        };
        let filter = Filter::try_new(filter.predicate.clone(), Arc::new(input))?;
        Ok(Transformed::yes(LogicalPlan::Filter(filter)))
    }
}

/// The column of a predicate that keeps only rows where it is 1, given that it is a row
/// number (never below 1): `c = 1`, `c <= 1`, `c < 2` and their mirror images.
fn first_only(predicate: &Expr) -> Option<&Column> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let (column, op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
        (Expr::Literal(v, _), Expr::Column(c)) => (c, op.swap()?, v),
        _ => return None,
    };
    let n = match value {
        ScalarValue::UInt64(Some(n)) => *n,
        other => u64::try_from(other.cast_to(&arrow::datatypes::DataType::Int64).ok()?).ok()?,
    };
    match (op, n) {
        (Operator::Eq | Operator::LtEq, 1) | (Operator::Lt, 2) => Some(column),
        _ => None,
    }
}

/// `plan` with the row-number window that produces `column` replaced by an aggregate, when
/// `plan` is that window or a projection passing its column on.
fn without_window(plan: &LogicalPlan, column: &Column) -> Result<Option<LogicalPlan>> {
    match plan {
        LogicalPlan::Window(w) => first_values(w, column),
        LogicalPlan::Projection(p) => {
            let LogicalPlan::Window(w) = p.input.as_ref() else {
                return Ok(None);
            };
            let Ok(i) = p.schema.index_of_column(column) else {
                return Ok(None);
            };
            let Expr::Column(passed) = &p.expr[i] else {
                return Ok(None);
            };
            let Some(input) = first_values(w, passed)? else {
                return Ok(None);
            };
            let p = Projection::try_new(p.expr.clone(), Arc::new(input))?;
            Ok(Some(LogicalPlan::Projection(p)))
        }
        _ => Ok(None),
    }
}

/// The aggregate that stands for `w` when `column` is its only window expression, a
/// `row_number()` partitioned by columns and ordered; the same schema as `w`'s output.
fn first_values(w: &Window, column: &Column) -> Result<Option<LogicalPlan>> {
    let [expr] = w.window_expr.as_slice() else {
        return Ok(None);
    };
    let inputs = w.input.schema().fields().len();
    let (rn_qualifier, rn_field) = w.schema.qualified_field(inputs);
    if Column::from((rn_qualifier, rn_field)) != *column {
        return Ok(None);
    }
    let Expr::WindowFunction(f) = expr.clone().unalias() else {
        return Ok(None);
    };
    let WindowFunction { fun, params } = *f;
    let is_row_number = match &fun {
        WindowFunctionDefinition::WindowUDF(u) => u.inner().is::<RowNumber>(),
        WindowFunctionDefinition::AggregateUDF(_) => false,
    };
    let by_columns = params
        .partition_by
        .iter()
        .all(|e| matches!(e, Expr::Column(_)));
    if !is_row_number
        || params.partition_by.is_empty()
        || !by_columns
        || params.order_by.is_empty()
        || params.filter.is_some()
    {
        return Ok(None);
    }
    let mut firsts = Vec::new();
    let mut outputs = Vec::new();
    for (i, (qualifier, field)) in w.input.schema().iter().enumerate() {
        let c = Column::from((qualifier, field.as_ref()));
        if params.partition_by.contains(&Expr::Column(c.clone())) {
            outputs.push(Expr::Column(c));
        } else {
            let name = format!("__first_row_{i}");
            let first = super::first_last::first_value_udaf()
                .call(vec![Expr::Column(c)])
                .order_by(params.order_by.clone())
                .build()?;
            firsts.push(first.alias(&name));
            let mut value = Expr::Column(Column::new_unqualified(name));
            if !field.is_nullable() {
                // `first_value` is typed nullable, but of a column that is not it is never null
                // (a group has at least one row). The plan above was typed with the column not
                // null, and DataFusion refuses a plan whose nullability changed under it; the
                // fallback keeps the type and is never taken.
                let Ok(never) = ScalarValue::new_default(field.data_type()) else {
                    return Ok(None);
                };
                value = coalesce(vec![value, lit(never)]);
            }
            outputs.push(value.alias_qualified(qualifier.cloned(), field.name()));
        }
    }
    outputs.push(
        lit(ScalarValue::UInt64(Some(1))).alias_qualified(rn_qualifier.cloned(), rn_field.name()),
    );
    let aggregate = Aggregate::try_new(Arc::clone(&w.input), params.partition_by, firsts)?;
    let p = Projection::try_new(outputs, Arc::new(LogicalPlan::Aggregate(aggregate)))?;
    Ok(Some(LogicalPlan::Projection(p)))
}

#[cfg(test)]
mod tests {
    use crate::lake::sql_testing::{
        assert_left_alone, explain, ranked, register_states, sorted_rows,
    };
    use datafusion::prelude::SessionContext;

    /// The lake's session (`true`) or DataFusion's own (the reference: the window over every
    /// row, then the filter).
    fn context(lake: bool) -> SessionContext {
        let ctx = if lake {
            crate::lake::query::new_context()
        } else {
            SessionContext::new()
        };
        register_states(&ctx);
        ctx
    }

    const BY_NODE: &str = "PARTITION BY node_id ORDER BY timestamp DESC";

    #[tokio::test]
    async fn the_first_row_per_partition_is_an_aggregate_with_the_windows_answer() {
        let (lake, reference) = (context(true), context(false));
        let queries = [
            ranked("row_number", BY_NODE, "r = 1"),
            ranked("row_number", BY_NODE, "1 = r"),
            ranked("row_number", BY_NODE, "r <= 1"),
            ranked("row_number", BY_NODE, "r < 2"),
            ranked(
                "row_number",
                "PARTITION BY node_id ORDER BY koa_metric",
                "r = 1",
            ),
            // Every column of the window's input, the ranking column not selected, and a
            // partition of two columns.
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY node_id, flag \
             ORDER BY timestamp) AS r FROM states) WHERE r = 1"
                .to_string(),
            "SELECT koa_metric, flag FROM (SELECT *, row_number() OVER (PARTITION BY node_id \
             ORDER BY timestamp DESC) AS r FROM states) WHERE r = 1"
                .to_string(),
            // The filter reaches the window only once DataFusion has pushed it through a
            // union, whose schema (every column not null) was worked out before the rewrite.
            "WITH last AS (SELECT node_id, koa_metric, timestamp, row_number() OVER \
             (PARTITION BY node_id ORDER BY timestamp DESC) AS rn FROM states) \
             SELECT g, count(*) AS n, avg(koa_metric) AS k, max(timestamp) AS t FROM \
             (SELECT *, 'all' AS g FROM last UNION ALL SELECT *, node_id AS g FROM last) \
             WHERE rn = 1 GROUP BY g"
                .to_string(),
        ];
        for sql in queries {
            let p = explain(&lake, &sql).await;
            assert!(p.contains("first_value"), "{sql}\n{p}");
            assert!(!p.contains("WindowAggExec"), "{sql}\n{p}");
            let got = sorted_rows(&lake, &sql).await;
            assert_eq!(got, sorted_rows(&reference, &sql).await, "{sql}");
            assert!(got.len() >= 40 + 4, "{sql}: {} lines", got.len());
        }
    }

    #[tokio::test]
    async fn among_tied_rows_every_column_comes_from_the_same_row() {
        // `minute` ties in pairs, so either row of a node's last minute may be kept; each kept
        // row must be one of the table's rows, whole.
        let lake = context(true);
        let kept = "SELECT node_id, koa_metric, minute, flag FROM (SELECT *, row_number() \
                    OVER (PARTITION BY node_id ORDER BY minute DESC) AS r FROM states) \
                    WHERE r = 1";
        assert!(explain(&lake, kept).await.contains("first_value"));
        let whole = format!(
            "SELECT count(*) AS n, count(DISTINCT k.node_id) AS nodes FROM ({kept}) k \
             JOIN states s ON k.node_id = s.node_id AND k.koa_metric = s.koa_metric \
             AND k.minute = s.minute AND k.flag = s.flag"
        );
        let lines = sorted_rows(&lake, &whole).await;
        assert!(lines.iter().any(|l| l == "| 40 | 40    |"), "{lines:?}");
    }

    #[tokio::test]
    async fn other_windows_and_filters_keep_the_window() {
        let (lake, reference) = (context(true), context(false));
        // (query, whether its answer is unique; see `topk`'s tests)
        for (sql, unique) in [
            (ranked("row_number", BY_NODE, "r = 2"), true),
            (ranked("row_number", BY_NODE, "r <= 2"), true),
            // rank() = 1 keeps every tied row: not one row per partition.
            (
                ranked("rank", "PARTITION BY node_id ORDER BY minute DESC", "r = 1"),
                true,
            ),
            // No ORDER BY: any row is the first; no PARTITION BY: one row in all.
            (ranked("row_number", "PARTITION BY node_id", "r = 1"), false),
            (ranked("row_number", "ORDER BY koa_metric", "r = 1"), true),
            // A partition by an expression, not a column.
            (
                ranked(
                    "row_number",
                    "PARTITION BY upper(node_id) ORDER BY timestamp",
                    "r = 1",
                ),
                true,
            ),
        ] {
            assert_left_alone(&lake, &reference, &sql, "first_value", unique).await;
        }
    }
}
