#!/usr/bin/env python3
"""Reads a KaiABC Stream lake with real third-party readers (pyarrow and DuckDB) and checks it
against the datasets' manifest.

Checks, per table (readings, states, rhythms, dead_letters):
  * pyarrow.dataset (Hive partitioning) and DuckDB read_parquet(hive_partitioning=true) both
    read every file, and agree on the row count;
  * timestamps are timestamp[us, tz=UTC] (DuckDB: TIMESTAMP WITH TIME ZONE), no unsigned ints;
  * the documented columns are present;
and against datasets/manifest.json for the replayed files:
  * readings per node equal the manifest's valid, unique readings;
  * dead letters per reason equal the manifest's malformed lines, at the manifest's line numbers;
  * each of the manifest's duplicate lines (an exact copy of an earlier line) has a DUPLICATE
    dead letter with its node and seq, read from the replayed file itself;
  * every node has one state per applied reading.

Usage: python scripts/check_lake.py --lake DIR --manifest datasets/manifest.json FILE...
Exit status 0 when everything matches; otherwise prints what differs and exits 1.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

COLUMNS = {
    "readings": "node_id seq timestamp temperature_kelvin humidity_percent pressure_pa light_lux "
                "sensor_type quality filtered_temperature_kelvin kalman_variance late",
    "states": "node_id timestamp circadian_time phase period_hours C_U C_S C_T C_ST A_free "
              "CABC_complex koa_metric output_pwm temperature_kelvin",
    "rhythms": "node_id window_end metric period_hours power false_alarm_probability mesor "
               "amplitude acrophase_rad p_value",
    "dead_letters": "received_at source reason message payload",
}

failures: list[str] = []


def check(cond: bool, what: str) -> None:
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("files", nargs="+", help="the replayed files, as named in the manifest")
    a = ap.parse_args()

    manifest = json.load(open(a.manifest))
    entries = {os.path.basename(f["path"]): f for f in manifest["files"]}
    replayed = [entries[os.path.basename(f)] for f in a.files]

    con = duckdb.connect()
    tables = {}
    for name, cols in COLUMNS.items():
        root = os.path.join(a.lake, name)
        dataset = ds.dataset(root, format="parquet", partitioning="hive")
        table = dataset.to_table()
        tables[name] = table
        glob = os.path.join(root, "**", "*.parquet")
        n_duck = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)").fetchone()[0]
        check(n_duck == table.num_rows, f"{name}: pyarrow {table.num_rows} rows, duckdb {n_duck}")
        for c in cols.split():
            check(c in table.schema.names, f"{name}: column {c} present")
        for field in table.schema:
            if pa.types.is_unsigned_integer(field.type):
                check(False, f"{name}.{field.name} is unsigned ({field.type})")
            if pa.types.is_timestamp(field.type):
                check(field.type.unit == "us" and field.type.tz == "UTC",
                      f"{name}.{field.name} is {field.type}")
        if table.num_rows:
            tcol = {"readings": "timestamp", "states": "timestamp", "rhythms": "window_end",
                    "dead_letters": "received_at"}[name]
            ty = con.execute(
                f"SELECT typeof({tcol}) FROM read_parquet('{glob}', hive_partitioning=true) LIMIT 1"
            ).fetchone()[0]
            check(ty == "TIMESTAMP WITH TIME ZONE", f"{name}.{tcol} in DuckDB is {ty}")
            check("date" in table.schema.names, f"{name}: hive partition column date")

    # Readings per node.
    want_nodes: dict[str, int] = collections.Counter()
    for e in replayed:
        want_nodes.update(e["nodes"])
    readings = tables["readings"]
    have_nodes = collections.Counter(readings.column("node_id").to_pylist())
    check(dict(have_nodes) == dict(want_nodes),
          f"readings per node {dict(sorted(have_nodes.items()))} == manifest {dict(sorted(want_nodes.items()))}")
    late = sum(1 for x in readings.column("late").to_pylist() if x)
    states = tables["states"]
    check(states.num_rows == readings.num_rows - late,
          f"states {states.num_rows} == applied readings {readings.num_rows - late}")

    # Dead letters: the malformed lines, each at its line, with its reason; the duplicates, each
    # with its node and seq as the file has them.
    want_dead = sorted((os.path.basename(e["path"]), m["line"], m["reason"])
                       for e in replayed for m in e["malformed"])
    want_dups = collections.Counter()
    for f, e in zip(a.files, replayed):
        if not e["duplicates"]:
            continue
        with open(f, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        header = lines[0].split(",") if e.get("header") else None
        for d in e["duplicates"]:
            line = lines[d["line"] - 1]
            if header:
                row = dict(zip(header, line.split(",")))
            else:
                row = json.loads(line)
            want_dups[(row["node_id"], int(row["seq"]))] += 1
    dead = tables["dead_letters"]
    have_dead = []
    have_dups = collections.Counter()
    for src, reason, payload in zip(dead.column("source").to_pylist(),
                                    dead.column("reason").to_pylist(),
                                    dead.column("payload").to_pylist()):
        if reason == "DUPLICATE":
            check(src.startswith("node:"), f"duplicate dead letter source {src} names its node")
            r = json.loads(payload)
            have_dups[(r["node_id"], r["seq"])] += 1
            continue
        kind, file, line = src.split(":", 2)
        check(kind == "file", f"dead letter source {src} names its file")
        have_dead.append((file, int(line), reason))
    have_dead.sort()
    missing = sorted(set(want_dead) - set(have_dead))
    extra = sorted(set(have_dead) - set(want_dead))
    check(not missing and not extra and len(have_dead) == len(want_dead),
          f"dead letters: {len(have_dead)} with reasons, manifest {len(want_dead)}"
          + (f"; missing {missing[:5]}" if missing else "") + (f"; extra {extra[:5]}" if extra else ""))
    check(have_dups == want_dups,
          f"duplicate dead letters {sum(have_dups.values())} == manifest duplicates "
          f"{sum(want_dups.values())}"
          + (f"; differ at {sorted((have_dups - want_dups) + (want_dups - have_dups))[:5]}"
             if have_dups != want_dups else ""))

    if failures:
        print(f"\n{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("\nall lake checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
