//! A physical optimizer rule for "the latest K rows per node": a filter on `row_number()` or
//! `rank()` over `PARTITION BY … ORDER BY …` becomes a per-partition top-K heap, not a sort of
//! the whole table.
//!
//! The commonest query over the lake is the latest state per node:
//!
//! ```sql
//! SELECT node_id, koa_metric FROM (
//!     SELECT node_id, koa_metric,
//!            row_number() OVER (PARTITION BY node_id ORDER BY timestamp DESC) AS r
//!     FROM states) WHERE r = 1
//! ```
//!
//! DataFusion plans it as `Filter(r = 1) → Projection → Window → Sort(node_id, timestamp) →
//! Repartition → scan`, and the sort of every row is nearly all of its time (12× DuckDB's on a
//! 2.88 M-row day). DataFusion 55.2 has the operator that avoids it, `PartitionedTopKExec`, and
//! a rule that inserts it (`WindowTopN`, off by default), but that rule misses this query
//! twice: it takes only `<`/`<=` (not `= 1`, how the latest row is usually asked for), and it
//! compares the filtered column's index with the window's *input* without following it through
//! the projection the SQL planner puts between them, so it never matches a subquery that
//! selects fewer columns than it scans. [`PartitionTopK`] is that rule with both mended; it
//! takes `WindowTopN`'s place in the session's rule list (see [`physical_rules`]).
//!
//! The rewrite is exact: the window is still computed, over the top K rows of each partition
//! instead of all of them, so every kept row gets the same number (or rank) it had, and the
//! filter that kept exactly those rows is dropped.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::window::{StandardWindowExpr, WindowExpr};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::partitioned_topk::{PartitionedTopKExec, WindowFnKind};
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::ExecutionPlan;

/// The name of DataFusion's own rule that [`PartitionTopK`] replaces.
const UPSTREAM_RULE: &str = "WindowTopN";

/// DataFusion's default physical optimizer rules with [`PartitionTopK`] in the place of
/// `WindowTopN` (before the rules that add sorts and repartitions, which is where it must run).
pub fn physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    match rules.iter().position(|r| r.name() == UPSTREAM_RULE) {
        Some(i) => rules[i] = Arc::new(PartitionTopK),
        // A DataFusion without the rule still has the operator's requirements enforced by
        // later rules; before all of them is the earliest safe place.
        None => rules.insert(0, Arc::new(PartitionTopK)),
    }
    rules
}

/// Rewrites `Filter(rn <op> K) → [Projection | Repartition]* → Window(row_number() or rank()
/// PARTITION BY p ORDER BY o)` into `[Projection | Repartition]* → Window →
/// PartitionedTopK(p, o, K)`, for `rn = 1`, `rn <= K`, `rn < K` and their mirror images.
#[derive(Debug, Default, Clone, Copy)]
pub struct PartitionTopK;

impl PhysicalOptimizerRule for PartitionTopK {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            Ok(match rewrite(&node) {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "PartitionTopK"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The rewritten plan if `plan` is a top-K filter over a ranking window, else `None`.
fn rewrite(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let filter = plan.downcast_ref::<FilterExec>()?;
    // A projection folded into the filter would be lost with it; this rule runs before the
    // pass that folds them, so such a filter is left alone rather than handled.
    if filter.projection().is_some() {
        return None;
    }
    let (column, fetch) = limit_of(filter.predicate())?;
    let (window, above, column) = window_below(filter.input(), column)?;
    let bounded = window.downcast_ref::<BoundedWindowAggExec>()?;
    let first_window_column = bounded.input().schema().fields().len();
    let expr = bounded
        .window_expr()
        .get(column.checked_sub(first_window_column)?)?;
    let kind = ranking_kind(expr)?;
    let partition_by = expr.partition_by();
    let order_by = expr.order_by();
    // No PARTITION BY is a global top-K, which a sort with a fetch already does. With no
    // ORDER BY there is nothing to rank by: a RANK ties every row at 1, and the operator
    // panics when asked to order by nothing (upstream's rule lets ROW_NUMBER through to it).
    if partition_by.is_empty() || order_by.is_empty() {
        return None;
    }
    let ordering = LexOrdering::new(
        partition_by
            .iter()
            .map(|e| PhysicalSortExpr::new_default(Arc::clone(e)))
            .chain(order_by.iter().cloned()),
    )?;
    let topk = PartitionedTopKExec::try_new(
        Arc::clone(bounded.input()),
        ordering,
        partition_by.len(),
        fetch,
        kind,
    )
    .ok()?;
    let mut out = replace_children_if_necessary(window, vec![Arc::new(topk)]).ok()?;
    for node in above.into_iter().rev() {
        out = replace_children_if_necessary(node, vec![out]).ok()?;
    }
    Some(out)
}

/// `(column, K)` when `predicate` keeps exactly the rows whose ranking column is at most K.
/// `= 1` counts because a row number or rank is never below 1.
fn limit_of(predicate: &Arc<dyn PhysicalExpr>) -> Option<(usize, usize)> {
    let b = predicate.downcast_ref::<BinaryExpr>()?;
    let (l, r) = (b.left(), b.right());
    // `K >= rn` is read as `rn <= K`.
    let (c, op, k) = match (l.downcast_ref::<Column>(), r.downcast_ref::<Literal>()) {
        (Some(c), Some(k)) => (c, *b.op(), k),
        _ => (
            r.downcast_ref::<Column>()?,
            b.op().swap()?,
            l.downcast_ref::<Literal>()?,
        ),
    };
    let k = positive(k.value())?;
    match op {
        Operator::LtEq => Some((c.index(), k)),
        Operator::Lt if k > 1 => Some((c.index(), k - 1)),
        Operator::Eq if k == 1 => Some((c.index(), 1)),
        _ => None,
    }
}

/// A positive integer literal's value.
fn positive(v: &ScalarValue) -> Option<usize> {
    if !v.data_type().is_integer() {
        return None;
    }
    match v.cast_to(&DataType::UInt64).ok()? {
        ScalarValue::UInt64(Some(n)) if n > 0 => usize::try_from(n).ok(),
        _ => None,
    }
}

/// The window under `plan` through projections and repartitions, the nodes passed on the way
/// (top first), and `column` renumbered into the window's output. A projection that computes
/// the column rather than passing it through ends the search.
type WindowPath = (Arc<dyn ExecutionPlan>, Vec<Arc<dyn ExecutionPlan>>, usize);

fn window_below(plan: &Arc<dyn ExecutionPlan>, mut column: usize) -> Option<WindowPath> {
    let mut at = Arc::clone(plan);
    let mut above = Vec::new();
    loop {
        if at.downcast_ref::<BoundedWindowAggExec>().is_some() {
            return Some((at, above, column));
        }
        if let Some(p) = at.downcast_ref::<ProjectionExec>() {
            let passed = p.expr().get(column)?;
            column = passed.expr.downcast_ref::<Column>()?.index();
        } else if at.downcast_ref::<RepartitionExec>().is_none() {
            return None;
        }
        let next = Arc::clone(at.children().first()?);
        above.push(at);
        at = next;
    }
}

/// `row_number()` or `rank()`; other window functions are not cut this way.
fn ranking_kind(expr: &Arc<dyn WindowExpr>) -> Option<WindowFnKind> {
    let standard = expr.as_any().downcast_ref::<StandardWindowExpr>()?;
    let udf = standard
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()?;
    match udf.fun().name() {
        "row_number" => Some(WindowFnKind::RowNumber),
        "rank" => Some(WindowFnKind::Rank),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::sql_testing::{
        assert_left_alone, explain, ranked, register_states, sorted_rows,
    };
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// DataFusion's own rules (`false`: a sort of every row for a window, the reference), or
    /// those with this rule in `WindowTopN`'s place and nothing else of the lake's.
    fn context(with_rule: bool) -> SessionContext {
        let ctx = if with_rule {
            let state = SessionStateBuilder::new()
                .with_default_features()
                .with_physical_optimizer_rules(physical_rules())
                .build();
            SessionContext::new_with_state(state)
        } else {
            SessionContext::new()
        };
        register_states(&ctx);
        ctx
    }

    const BY_NODE: &str = "PARTITION BY node_id ORDER BY timestamp DESC";
    const BY_NODE_TIED: &str = "PARTITION BY node_id ORDER BY minute DESC";

    #[tokio::test]
    async fn latest_per_partition_uses_a_heap_and_answers_as_the_full_sort_does() {
        let (with, without) = (context(true), context(false));
        for (function, window, predicate, expected) in [
            ("row_number", BY_NODE, "r = 1", 40),
            ("row_number", BY_NODE, "1 = r", 40),
            ("row_number", BY_NODE, "r <= 3", 120),
            ("row_number", BY_NODE, "r < 3", 80),
            ("row_number", BY_NODE, "4 >= r", 160),
            ("row_number", BY_NODE, "5 > r", 160),
            ("rank", BY_NODE_TIED, "r = 1", 80),
            ("rank", BY_NODE_TIED, "r <= 3", 160),
        ] {
            let sql = ranked(function, window, predicate);
            let p = explain(&with, &sql).await;
            assert!(p.contains("PartitionedTopKExec"), "{sql}\n{p}");
            assert!(!p.contains("SortExec"), "{sql}\n{p}");
            let got = sorted_rows(&with, &sql).await;
            assert_eq!(got, sorted_rows(&without, &sql).await, "{sql}");
            // Not vacuous: K rows of every node, and rank's ties beyond K (plus the table's
            // four lines of frame and header).
            assert_eq!(got.len(), expected + 4, "{sql}");
        }
        let p = explain(&without, &ranked("row_number", BY_NODE, "r = 1")).await;
        assert!(!p.contains("PartitionedTopKExec"), "{p}");
    }

    #[tokio::test]
    async fn other_filters_and_windows_are_left_alone() {
        let (with, without) = (context(true), context(false));
        // (query, whether its answer is unique: with no order among a partition's rows, which
        // of them are numbered first is up to the engine, and only the plan is compared)
        for (sql, unique) in [
            // Not a prefix of the ranking: the full window is needed.
            (ranked("row_number", BY_NODE, "r = 2"), true),
            (ranked("row_number", BY_NODE, "r >= 2"), true),
            (ranked("row_number", BY_NODE, "r < 1"), true),
            // dense_rank keeps every tie of K distinct values: no fixed bound per partition.
            (ranked("dense_rank", BY_NODE_TIED, "r = 1"), true),
            // No PARTITION BY: a global top-K, which a sort with a fetch already does.
            (
                ranked("row_number", "ORDER BY koa_metric DESC", "r = 1"),
                true,
            ),
            // No ORDER BY: nothing to keep the top of.
            (
                ranked("row_number", "PARTITION BY node_id", "r <= 2"),
                false,
            ),
            // The filter is on a column that is not the window's.
            (
                "SELECT node_id, koa_metric FROM (SELECT node_id, koa_metric, row_number() \
                 OVER (PARTITION BY node_id ORDER BY timestamp) AS r FROM states) \
                 WHERE koa_metric <= 1"
                    .to_string(),
                true,
            ),
        ] {
            assert_left_alone(&with, &without, &sql, "PartitionedTopKExec", unique).await;
        }
    }

    #[test]
    fn the_rule_takes_the_place_of_upstreams() {
        let names: Vec<String> = physical_rules()
            .iter()
            .map(|r| r.name().to_owned())
            .collect();
        let upstream: Vec<String> = PhysicalOptimizer::new()
            .rules
            .iter()
            .map(|r| r.name().to_owned())
            .collect();
        let at = upstream.iter().position(|n| n == UPSTREAM_RULE).unwrap();
        assert_eq!(names[at], "PartitionTopK");
        assert_eq!(names.len(), upstream.len());
        assert!(!names.iter().any(|n| n == UPSTREAM_RULE));
    }
}
