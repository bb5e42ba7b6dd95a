"""Crash safety, concurrent runs and determinism, with the job run as a user runs it.

* A ``python -m fwpolicy run`` is killed with SIGKILL (its whole process group: the Python
  driver and its JVM) as soon as the first data file of its write appears under
  ``firewall_policy``, over an output root that holds a completed run of the same window. The
  table then reads exactly as before (same latest version, same rows), the stray files are not
  part of it, ``run_audit`` has no row for the killed run, and a rerun completes the window with
  the rows of a clean run.
* Two runs on different windows, started at the same time into one new output root, both land
  (both create the tables: one creates, the other retries its commit), each with its audit row.
* Commit conflicts are retried a bounded number of times, and two runs creating the same new
  table at the same moment both go on with the one table (in-process, with threads).
* The same input gives the same rows: the killed-and-rerun window equals the clean run, and a
  window computed in another process (another JVM) equals the same window computed here.
* The output of those subprocess runs (their logs and the JVM's, with
  ``--include-inbound-remote-ips``) holds none of the inbound remote IPs the table holds.

The machine may be slow and loaded: every wait is bounded, and the kill is retried (a bounded
number of times) only if the run committed before the kill could land.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from fwpolicy.config import PolicyConfig, RunSpec
from fwpolicy.io.sink import OWNER, OWNER_PROPERTY, prepare_table, table_properties, with_commit_retries
from fwpolicy.tasks.audit import AUDIT_TABLE
from fwpolicy.tasks.generate import generate_events, write_lake
from fwpolicy.tasks.run import POLICY_TABLE, run

pytestmark = pytest.mark.slow

START = dt.date(2026, 8, 1)
W1 = (START, START + dt.timedelta(days=1))
W2 = (START + dt.timedelta(days=1), START + dt.timedelta(days=2))
RUN_TIMEOUT = 1200.0  # seconds for one subprocess run on a loaded machine
KILL_ATTEMPTS = 3
POLL = 0.002


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    env.update(
        FWPOLICY_DRIVER_MEMORY="1g",
        PYSPARK_SUBMIT_ARGS="--driver-java-options '-XX:TieredStopAtLevel=1 -XX:+UseSerialGC' pyspark-shell",
        SPARK_LOCAL_IP="127.0.0.1",
    )
    return env


def start_job(
    lake: Path, out: Path, window: tuple[dt.date, dt.date], log: Path, *extra: str
) -> subprocess.Popen:
    """``python -m fwpolicy run`` in its own process group (so a kill reaches the JVM too)."""
    argv = [sys.executable, "-m", "fwpolicy", "run", "--source", str(lake), "--source-format", "parquet"]
    argv += ["--output", str(out), "--start", window[0].isoformat(), "--end", window[1].isoformat(), *extra]
    handle = log.open("w")
    try:
        return subprocess.Popen(
            # cwd: the log's temporary folder, so the job's spark-warehouse/ is not made in the repo
            argv,
            cwd=log.parent,
            env=job_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        handle.close()


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def data_files(table: Path) -> set[str]:
    if not table.exists():
        return set()
    found = set()
    for root, dirs, files in os.walk(table):
        dirs[:] = [d for d in dirs if d != "_delta_log"]
        found.update(os.path.join(root, f) for f in files)
    return found


def latest_version(table: Path) -> int:
    return max(int(p.stem) for p in (table / "_delta_log").glob("*.json"))


def rows(spark, table: Path, window_end: dt.date | None = None) -> list[str]:
    """All columns of a table (or of one window) as sorted JSON lines."""
    df = spark.read.format("delta").load(str(table))
    if window_end is not None:
        df = df.where(F.col("window_end") == F.lit(window_end))
    return sorted(json.dumps(r.asDict(recursive=True), sort_keys=True, default=str) for r in df.collect())


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "lake"
    write_lake(
        generate_events(spark, 6, 2, seed=5, start=START, events_per_device_day=30), str(path), "parquet"
    )
    return path


@pytest.fixture(scope="module")
def clean_w1(spark, lake, tmp_path_factory) -> tuple[Path, list[str]]:
    """An output root holding a completed run of W1 (in this process), and its rows."""
    out = tmp_path_factory.mktemp("crash") / "out"
    run(RunSpec(str(lake), "parquet", str(out), *W1, PolicyConfig()), spark)
    return out, rows(spark, out / POLICY_TABLE)


def test_sigkill_while_writing_leaves_the_table_as_it_was(spark, lake, clean_w1, tmp_path):
    out, clean_rows = clean_w1
    table = out / POLICY_TABLE
    for attempt in range(1, KILL_ATTEMPTS + 1):
        version = latest_version(table)
        before_files = data_files(table)
        audit_rows = len(rows(spark, out / AUDIT_TABLE))
        log = tmp_path / f"killed-{attempt}.log"
        proc = start_job(lake, out, W1, log)
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while not (data_files(table) - before_files):
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (code {proc.returncode}) before writing:\n{tail(log)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no data file after {RUN_TIMEOUT:.0f}s:\n{tail(log)}")
                time.sleep(POLL)
        finally:
            kill_group(proc)
        if latest_version(table) == version:
            break  # killed while writing, before its commit
        # The commit beat the kill (possible on an idle machine): the table is a completed
        # run of the same window again; try once more.
    else:
        pytest.fail(f"the run committed before the kill in {KILL_ATTEMPTS} attempts")

    assert proc.returncode == -signal.SIGKILL
    stray = data_files(table) - before_files
    assert stray, "the kill came before any file was written"
    assert latest_version(table) == version
    assert rows(spark, table) == clean_rows
    assert len(rows(spark, out / AUDIT_TABLE)) == audit_rows  # no row for the killed run

    result = run(RunSpec(str(lake), "parquet", str(out), *W1, PolicyConfig()), spark)
    assert latest_version(table) == version + 1
    assert rows(spark, table) == clean_rows  # the same input gives the same rows
    assert result.rows_written == len(clean_rows)
    assert len(rows(spark, out / AUDIT_TABLE)) == audit_rows + 1


def test_concurrent_runs_on_different_windows_both_land(spark, lake, clean_w1, tmp_path):
    out = tmp_path / "out"
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [
        start_job(lake, out, W1, logs[0]),
        start_job(lake, out, W2, logs[1], "--include-inbound-remote-ips"),
    ]
    try:
        for proc, log in zip(procs, logs, strict=True):
            try:
                proc.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"run did not finish in {RUN_TIMEOUT:.0f}s:\n{tail(log)}")
            assert proc.returncode == 0, tail(log)
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc)

    table = out / POLICY_TABLE
    ends = {
        r["window_end"]
        for r in spark.read.format("delta").load(str(table)).select("window_end").distinct().collect()
    }
    assert ends == {W1[1], W2[1]}
    audit = spark.read.format("delta").load(str(out / AUDIT_TABLE)).collect()
    assert sorted((r["window_end"], r["status"]) for r in audit) == [
        (W1[1], "succeeded"),
        (W2[1], "succeeded"),
    ]
    for r in audit:
        assert (
            r["rows_written"]
            == spark.read.format("delta")
            .load(str(table))
            .where(F.col("window_end") == r["window_end"])
            .count()
        )

    # Determinism across processes: W1 from another JVM equals W1 computed in this one.
    assert rows(spark, table, W1[1]) == clean_w1[1]

    inbound_ips = {
        ip
        for (ip,) in spark.read.format("delta")
        .load(str(table))
        .where((F.col("window_end") == W2[1]) & (F.col("Directionality") == "Inbound"))
        .select(F.explode("RemoteIPs"))
        .collect()
        if ip
    }
    assert inbound_ips, "the generated window has no inbound remote IP to look for"
    for log in logs:
        text = log.read_text(errors="replace")
        leaked = sorted(ip for ip in inbound_ips if re.search(rf"(?<![\w.:]){re.escape(ip)}(?![\w.:])", text))
        assert not leaked, f"{log.name} holds inbound remote IPs {leaked[:5]}"


class FakeConflict(Exception):
    pass


def test_commit_conflicts_are_retried_a_bounded_number_of_times(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    calls = []

    def conflicting_once():
        calls.append(1)
        if len(calls) == 1:
            raise FakeConflict("io.delta.exceptions.ConcurrentAppendException: [DELTA_CONCURRENT_APPEND] ...")
        return "committed"

    assert with_commit_retries(conflicting_once, "t") == "committed" and len(calls) == 2

    def always_conflicting():
        calls.append(1)
        raise FakeConflict("[DELTA_METADATA_CHANGED] The metadata of the Delta table has been changed")

    calls.clear()
    with pytest.raises(FakeConflict):
        with_commit_retries(always_conflicting, "t", attempts=3)
    assert len(calls) == 3

    def failing():
        calls.append(1)
        raise ValueError("not a conflict")

    calls.clear()
    with pytest.raises(ValueError):
        with_commit_retries(failing, "t")
    assert len(calls) == 1  # other errors are not retried


def test_racing_creations_of_one_table_both_go_on(spark, tmp_path):
    import threading

    path = str(tmp_path / "t")
    schema = spark.range(1).withColumn("window_end", F.current_date()).schema
    barrier, errors = threading.Barrier(2), []

    def create():
        barrier.wait()
        try:
            prepare_table(spark, path, schema, ("window_end",))
        except Exception as e:  # collected: an assert in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert latest_version(tmp_path / "t") == 0  # one creation commit
    assert table_properties(spark, path)[OWNER_PROPERTY] == OWNER


def test_racing_first_writes_of_one_table_both_land(spark, tmp_path):
    """Two windows written at once to a table that does not exist yet: each tries to create it
    with its rows (CREATE TABLE AS SELECT); the one whose creation loses writes into the table
    the other made."""
    import threading

    from fwpolicy.io.sink import replace_partition

    path = str(tmp_path / "t")
    ends = (W1[1], W2[1])
    barrier, errors = threading.Barrier(2), []

    def write(end: dt.date) -> None:
        df = spark.range(3).withColumn("window_end", F.lit(end))
        barrier.wait()
        try:
            replace_partition(df, path, end, exists=False)  # as check_outputs found it
        except Exception as e:  # collected: an assert in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=write, args=(end,)) for end in ends]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    counts = spark.read.format("delta").load(path).groupBy("window_end").count().collect()
    assert sorted((r[0], r[1]) for r in counts) == [(ends[0], 3), (ends[1], 3)]
    assert table_properties(spark, path)[OWNER_PROPERTY] == OWNER


def test_a_table_created_by_another_process_is_seen(spark, tmp_path):
    """The session's cached Delta log of a path must not hide a table another process created
    after this session looked (the copy below stands for that other process's commit)."""
    import shutil

    from delta.tables import DeltaTable

    from fwpolicy.io.sink import ensure_owned

    made, later = tmp_path / "made", tmp_path / "later"
    prepare_table(spark, str(made), spark.range(1).schema)
    (later / "_delta_log").mkdir(parents=True)  # as a creation in progress leaves it
    assert ensure_owned(spark, str(later)) is False
    assert not DeltaTable.isDeltaTable(spark, str(later))  # the session caches an empty log
    for commit in (made / "_delta_log").glob("*.json"):
        shutil.copy(commit, later / "_delta_log" / commit.name)
    assert ensure_owned(spark, str(later)) is True
