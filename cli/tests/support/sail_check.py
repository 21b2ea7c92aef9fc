"""Answers SQL questions over hexroad's Delta tables in a bucket with Sail
(a Spark Connect server on DataFusion, PyPI `pysail`) through the PySpark
client, as an analyst's Spark would: no hexroad code involved.

usage: sail_check.py LAKE_URL QUERIES.json  (the S3 settings in AWS_*)
Each query names its tables as `{uploads}`, `{gnss}`, …; prints a JSON
list with one list of row objects per query.
"""

import json
import os
import sys

from pysail.spark import SparkConnectServer
from pyspark.sql import SparkSession

TABLES = ["uploads", "gnss", "telemetry", "frames", "processing", "rewards"]


def main() -> None:
    lake, queries = sys.argv[1], json.load(open(sys.argv[2]))
    server = SparkConnectServer()
    server.start(background=True)
    host, port = server.listening_address
    spark = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
    names = {t: f"delta.`{lake}/tables/{t}`" for t in TABLES}
    answers = []
    for query in queries:
        rows = spark.sql(query.format(**names)).collect()
        answers.append([row.asDict() for row in rows])
    print(json.dumps(answers, default=str), flush=True)
    # The server's runtime threads can abort a normal interpreter exit.
    os._exit(0)


if __name__ == "__main__":
    main()
