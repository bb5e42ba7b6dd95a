"""What a user's terminal shows when the input is bad: one ``fwpolicy: error:`` line, no Java
stack trace from Spark's schedulers (``fwpolicy/io/log4j2.properties``), exit code 2.

In-process tests see Python's stderr only; the JVM writes to the process's own, so this runs the
command as a user does."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from helpers import event, events_df

pytestmark = pytest.mark.slow


def test_a_corrupt_file_is_one_line_on_the_terminal(spark, tmp_path):
    src = tmp_path / "src"
    for day in (1, 2):
        events_df(spark, [event(Timestamp=dt.datetime(2026, 8, day, 12))]).write.parquet(
            str(src / f"EventDate=2026-08-0{day}")
        )
    victim = sorted((src / "EventDate=2026-08-02").glob("*.parquet"))[-1]
    victim.write_bytes(victim.read_bytes()[:40] + b"PAR1")
    for crc in (src / "EventDate=2026-08-02").glob(".*.crc"):
        crc.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    args = ["--source", str(src), "--source-format", "parquet", "--output", str(tmp_path / "out")]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fwpolicy",
            "-q",
            "run",
            *args,
            "--start",
            "2026-08-01",
            "--end",
            "2026-08-03",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fwpolicy: error: source")
    assert victim.name in errors[0]
    assert "\tat " not in done.stderr and "Exception" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
