#!/usr/bin/env python3
"""DuckDB's side of the lake SQL benchmark (pipeline/benches/lake_sql.rs): runs each query on
the lake's Parquet files in this process and prints, as JSON, each run's milliseconds and the
query's check (row count and a column's sum), so the two engines' answers can be compared.

Usage: bench_sql_duckdb.py LAKE REPS THREADS < queries.json
queries.json: [{"name": ..., "duckdb": SQL, "check": COLUMN}, ...]
"""
import json
import sys
import time

import duckdb

lake, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
queries = json.load(sys.stdin)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
for table in ("readings", "states", "rhythms", "dead_letters"):
    con.execute(
        f"CREATE VIEW {table} AS SELECT * FROM read_parquet("
        f"'{lake}/{table}/*/*.parquet', hive_partitioning = true, union_by_name = false)"
    )


out = []
for q in queries:
    sql = q["duckdb"]
    # One run before timing: the files' pages into the OS cache, as for DataFusion.
    con.execute(sql).fetchall()
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        rows = con.sql(sql).to_arrow_table()
        runs.append((time.perf_counter() - t0) * 1e3)
    n, total = con.execute(
        f'SELECT count(*), sum("{q["check"]}") FROM ({sql})'
    ).fetchone()
    out.append({"name": q["name"], "ms": runs, "rows": n, "sum": total, "arrow_rows": rows.num_rows})
json.dump(out, sys.stdout)
