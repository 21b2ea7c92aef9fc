# DuckDB's side of `hexroad bench sql`: reads {"files", "queries", "checks",
# "runs", "threads"} as JSON on stdin, names the Parquet files `frames` (a
# view over them, the paths passed as values, never spliced into SQL), runs each query `runs` times into an Arrow
# table (as an analyst's client would fetch it), and prints the seconds of
# each run and (rows, sum of the check column) per query as JSON.
import json
import sys
import time

import duckdb
import pyarrow.compute as pc

spec = json.load(sys.stdin)
con = duckdb.connect()
con.execute(f"SET threads = {int(spec['threads'])}")
con.execute("SET TimeZone = 'UTC'")
con.read_parquet(spec["files"]).create_view("frames")
seconds, checks = [], []
for query, column in zip(spec["queries"], spec["checks"]):
    runs = []
    for _ in range(spec["runs"]):
        t = time.perf_counter()
        table = con.execute(query).fetch_arrow_table()
        runs.append(time.perf_counter() - t)
    seconds.append(runs)
    total = pc.sum(table.column(column)).as_py() or 0
    checks.append([table.num_rows, int(total)])
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print(json.dumps({"version": duckdb.__version__, "threads": int(threads), "seconds": seconds, "checks": checks}))
