#!/usr/bin/env python3
"""Reads Footprint's Parquet history with pyarrow and with DuckDB, as a data team would.

    check_parquet.py DIR

Prints one JSON object: for each table (readings, site_hours, job_hours), its schema (column
name → Arrow type, partition columns `site` and `date` included), row count, and the sum of every
integer column, as pyarrow reads them; and whether DuckDB reads the same rows and sums. Exit 1
when the two readers disagree.
"""

import json
import pathlib
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds


def with_pyarrow(path):
    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    table = dataset.to_table()
    sums = {}
    for name in table.column_names:
        column = table.column(name)
        if str(column.type) in ("int64", "int32"):
            total = pc.sum(column).as_py()
            sums[name] = int(total) if total is not None else 0
    return {
        "schema": {field.name: str(field.type) for field in dataset.schema},
        "rows": table.num_rows,
        "sums": sums,
    }


def with_duckdb(path, columns):
    glob = str(path / "**" / "*.parquet")
    connection = duckdb.connect()
    rows = connection.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [glob]
    ).fetchone()[0]
    sums = {}
    for name in columns:
        total = connection.execute(
            f'SELECT sum("{name}") FROM read_parquet(?, hive_partitioning = true)', [glob]
        ).fetchone()[0]
        sums[name] = int(total) if total is not None else 0
    return {"rows": rows, "sums": sums}


def main():
    root = pathlib.Path(sys.argv[1])
    answer = {}
    agree = True
    for table in ("readings", "site_hours", "job_hours"):
        path = root / table
        if not path.exists():
            continue
        seen = with_pyarrow(path)
        duck = with_duckdb(path, list(seen["sums"]))
        seen["duckdb_agrees"] = duck["rows"] == seen["rows"] and duck["sums"] == seen["sums"]
        agree &= seen["duckdb_agrees"]
        if not seen["duckdb_agrees"]:
            seen["duckdb"] = duck
        answer[table] = seen
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
