//! A small `states`-like table and helpers for the tests of the lake's SQL rules.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

/// Registers `states`: 40 nodes × 50 rows in a scrambled order, across two partitions of input
/// as the lake's two workers write them. `koa_metric` is unique in the table; `timestamp` is
/// unique within a node, so `row_number()` over it has one answer; `minute` ties in pairs, so
/// `rank()` keeps more than K and `row_number()` has a choice; `flag` is a Boolean, a type
/// DataFusion aggregates by another code path than numbers.
pub(crate) fn register_states(ctx: &SessionContext) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("node_id", DataType::Utf8, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("koa_metric", DataType::Float64, false),
        Field::new("minute", DataType::Int64, false),
        Field::new("flag", DataType::Boolean, false),
    ]));
    let mut parts = vec![Vec::new(), Vec::new()];
    for i in 0..2000_i64 {
        let scrambled = (i * 7919) % 2000;
        let node = format!("node-{:02}", scrambled % 40);
        let ts = (scrambled / 40) * 30;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![node])),
                Arc::new(Int64Array::from(vec![ts])),
                Arc::new(Float64Array::from(vec![scrambled as f64])),
                Arc::new(Int64Array::from(vec![ts / 60])),
                Arc::new(BooleanArray::from(vec![scrambled % 3 == 0])),
            ],
        )
        .unwrap();
        parts[(i % 2) as usize].push(batch);
    }
    let table = MemTable::try_new(schema, parts).unwrap();
    ctx.register_table("states", Arc::new(table)).unwrap();
}

/// A query's answer as table lines, sorted (so row order does not matter).
pub(crate) async fn sorted_rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The logical and physical plans of a query, as text.
pub(crate) async fn explain(ctx: &SessionContext, sql: &str) -> String {
    sorted_rows(ctx, &format!("EXPLAIN {sql}")).await.join("\n")
}

/// `SELECT node_id, koa_metric, r` of the rows where `predicate` holds on
/// `function() OVER (window) AS r`.
pub(crate) fn ranked(function: &str, window: &str, predicate: &str) -> String {
    format!(
        "SELECT node_id, koa_metric, r FROM (SELECT node_id, koa_metric, \
         {function}() OVER ({window}) AS r FROM states) WHERE {predicate}"
    )
}

/// Asserts that a rule left `sql` alone: its plan in `with_rule` has no `marker`, and (when the
/// answer is `unique`: no ties the engine may break either way) the answer is the reference
/// session's.
pub(crate) async fn assert_left_alone(
    with_rule: &SessionContext,
    reference: &SessionContext,
    sql: &str,
    marker: &str,
    unique: bool,
) {
    let plan = explain(with_rule, sql).await;
    assert!(!plan.contains(marker), "{sql}\n{plan}");
    if unique {
        assert_eq!(
            sorted_rows(with_rule, sql).await,
            sorted_rows(reference, sql).await,
            "{sql}"
        );
    }
}
