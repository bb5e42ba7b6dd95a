"""Spark Connect (``--remote``): ``run``, ``nightly``, ``export`` and ``report`` through a Spark Connect server
write what a classic session writes; commands that need a JVM of their own say so in a line.

The server is the one pyspark starts for ``--remote local[2]``: a JVM in the command's process,
given Delta like the embedded session, that the command then reaches only through gRPC, as it
would reach a cluster (``sc://host:15002``) or Databricks Connect. Each command is a process of
its own, as a user runs it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from fwpolicy.cli import main
from fwpolicy.config import PolicyConfig, RunSpec
from fwpolicy.review.changes import CHANGES_TABLE
from fwpolicy.review.hunting import HUNTING_TABLE
from fwpolicy.tasks.generate import generate_events, write_lake
from fwpolicy.tasks.run import EXCLUDED_TABLE, POLICY_TABLE, run

pytestmark = pytest.mark.slow

START, END = dt.date(2026, 8, 1), dt.date(2026, 8, 4)


def fwpolicy(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    return subprocess.run(
        [sys.executable, "-m", "fwpolicy", "-q", *args],
        capture_output=True,
        text=True,
        env={**clean, "FWPOLICY_DRIVER_MEMORY": "1g", **env},
        cwd=tmp_path,
        timeout=900,
    )


def rows(spark, path):
    """The table's rows in a canonical order (their reprs: nulls sort with the rest)."""
    return sorted(repr(tuple(r)) for r in spark.read.format("delta").load(str(path)).collect())


def test_run_nightly_export_and_report_through_spark_connect(spark, tmp_path, capsys):
    lake = tmp_path / "lake"
    write_lake(generate_events(spark, 12, 3, seed=5, start=START), str(lake), "parquet")
    classic = tmp_path / "classic"
    run(RunSpec(str(lake), "parquet", str(classic), START, END, PolicyConfig()), spark)

    remote = tmp_path / "remote"
    window = ["--start", str(START), "--end", str(END)]
    done = fwpolicy(
        tmp_path, "--remote", "local[2]", "run", "--source", str(lake), "--source-format", "parquet",
        "--output", str(remote), *window,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for table in (POLICY_TABLE, HUNTING_TABLE, EXCLUDED_TABLE, CHANGES_TABLE):
        assert rows(spark, remote / table) == rows(spark, classic / table), table
    audit = spark.read.format("delta").load(str(remote / "run_audit")).first()
    assert audit["status"] == "succeeded" and audit["rows_read"] > 0

    # The rule export of the remote tables, made over Connect, is the classic one's.
    exported = tmp_path / "remote.csv"
    export = ["export", "--output", str(remote), "--window-end", str(END), "--format", "csv"]
    done = fwpolicy(tmp_path, *export, "--to", str(exported), SPARK_REMOTE="local[2]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["-q", "export", "--output", str(classic), "--window-end", str(END), "--format", "csv"]) == 0
    assert exported.read_text(encoding="utf-8") == capsys.readouterr().out

    # A night over Connect (blocks stored and rolled up on the server) equals a classic night.
    night = ["--source", str(lake), "--source-format", "parquet", "--date", str(END - dt.timedelta(days=1))]
    night += ["--window-days", "3"]
    done = fwpolicy(tmp_path, "--remote", "local[2]", "nightly", *night, "--output", str(tmp_path / "rn"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["-q", "nightly", *night, "--output", str(tmp_path / "cn")]) == 0
    for table in (POLICY_TABLE, HUNTING_TABLE, "connection_blocks"):
        assert rows(spark, tmp_path / "rn" / table) == rows(spark, tmp_path / "cn" / table), table

    page = tmp_path / "report.html"
    report = ["report", "--output", str(remote), "--window-end", str(END), "--to", str(page)]
    done = fwpolicy(tmp_path, "--remote", "local[2]", *report)
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size > 1_000_000 and str(END) in text and "Plotly.newPlot" in text


def test_commands_that_need_a_local_jvm_say_so_in_one_line(tmp_path):
    done = fwpolicy(
        tmp_path, "ingest", "--source", "/x", "--output", "/y", SPARK_REMOTE="sc://localhost:15002"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fwpolicy: error: ingest does not run over Spark Connect (--remote sc://localhost:15002); it runs "
        "on a local session or under spark-submit. Over Spark Connect: run, nightly, export, diff, report"
    ]
    done = fwpolicy(tmp_path, "--remote", "sc://localhost:15002", "run", "--source", "lake", "--source-format",
                    "parquet", "--output", "/out", "--start", str(START), "--end", str(END))  # fmt: skip
    assert done.returncode == 2 and "--source lake: over Spark Connect paths are the server's" in done.stderr
