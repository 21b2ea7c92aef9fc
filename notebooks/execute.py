"""Runs every notebook in this folder headless against a running
`hexroad serve`, as CI does, and writes the executed copies (with their
tables and plots) to OUTDIR.

    .venv/bin/python notebooks/execute.py OUTDIR

HEXROAD_FLIGHT_URI and HEXROAD_SQL_TOKEN reach the notebooks unchanged.
Exits non-zero naming the notebook and cell if any cell raises. Prints one
JSON line: for each notebook, its cells, plots and error-free state.
"""

import json
import pathlib
import sys

import nbclient
import nbformat


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    here = pathlib.Path(__file__).resolve().parent
    report = {}
    for path in sorted(here.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=300,
            resources={"metadata": {"path": str(here)}},
        )
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as e:
            nbformat.write(notebook, out / path.name)
            print(f"{path.name}: {e}", file=sys.stderr)
            sys.exit(1)
        nbformat.write(notebook, out / path.name)
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
        report[path.name] = {
            "cells": len(notebook.cells),
            "plots": sum(1 for o in outputs if "image/png" in o.get("data", {})),
            "tables": sum(1 for o in outputs if "text/html" in o.get("data", {})),
            "texts": [o.get("text", "") for o in outputs if o.get("output_type") == "stream"],
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
