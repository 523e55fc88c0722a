#!/usr/bin/env python3
"""What a replay's input and output cost DuckDB alone: a floor for `kaiabc replay` on the same
machine, since DuckDB does no science and is a well-tuned C++ engine.

For a sensor log and the lake a replay made of it, times in this process (medians of REPS,
after one untimed run, with 1 and with 2 threads):

- `csv->parquet`: the log copied to one zstd Parquet file (reading and writing the log only);
- `lake tables`: the lake's `readings` and `states` tables, already in memory, each written
  to zstd Parquet (what the replay must write, nothing read or computed);
- the two together, the least a replay that reads the log and writes those two tables costs.

Each is printed as wall time, readings a second, and CPU microseconds a reading (the
process's user + system time over the log's readings).

Usage: bench_lake_floor.py LOG.csv LAKE [REPS]
"""
import os
import statistics
import sys
import tempfile
import time

import duckdb


def timed(con, sql, reps):
    """Median wall seconds and CPU seconds of `sql` over `reps` runs after one untimed one."""
    con.execute(sql)
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        con.execute(sql)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main():
    log, lake = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    out = tempfile.mkdtemp(prefix="kaiabc-floor-")
    try:
        con = duckdb.connect()
        n = con.execute(f"SELECT count(*) FROM read_csv('{log}')").fetchone()[0]
        for table in ("readings", "states"):
            con.execute(
                f"CREATE TABLE {table} AS SELECT * FROM read_parquet("
                f"'{lake}/{table}/*/*.parquet', hive_partitioning = false)"
            )
        zstd = "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 131072)"
        work = {
            "csv->parquet": [f"COPY (SELECT * FROM read_csv('{log}')) TO '{out}/log.parquet' {zstd}"],
            "lake tables": [
                f"COPY {t} TO '{out}/{t}.parquet' {zstd}" for t in ("readings", "states")
            ],
        }
        print(f"# {n:,} readings; DuckDB {duckdb.__version__}; medians of {reps}")
        print("| threads | work | wall s | readings/s | CPU µs a reading |")
        print("|---|---|---|---|---|")
        for threads in (1, 2):
            con.execute(f"SET threads = {threads}")
            total_wall = total_cpu = 0.0
            for name, sqls in work.items():
                wall = cpu = 0.0
                for sql in sqls:
                    w, c = timed(con, sql, reps)
                    wall, cpu = wall + w, cpu + c
                total_wall, total_cpu = total_wall + wall, total_cpu + cpu
                print(f"| {threads} | {name} | {wall:.2f} | {n / wall:,.0f} | {cpu / n * 1e6:.2f} |")
            print(
                f"| {threads} | both | {total_wall:.2f} | {n / total_wall:,.0f} | "
                f"{total_cpu / n * 1e6:.2f} |"
            )
    finally:
        for f in os.listdir(out):
            os.remove(os.path.join(out, f))
        os.rmdir(out)


if __name__ == "__main__":
    main()
