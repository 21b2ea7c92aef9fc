# DuckDB's side of `hexroad bench sql`: reads {"queries", "checks", "runs",
# "threads"} as JSON on stdin, runs each query `runs` times into an Arrow
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
