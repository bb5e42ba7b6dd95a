"""Running the job with ``spark-submit``, shared by the tests that do it as a user would.

``slow/test_package.py`` submits it with the wheel on ``--py-files`` (``local[2]``);
``slow/test_standalone_cluster.py`` submits it to a standalone master and worker. Both run
``jobs/firewall_policy.py`` over ``TINY_ROWS`` and compare the ``firewall_policy`` table it
writes with an in-process result.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fwpolicy.io.session import local_delta_jars
from fwpolicy.tasks.run import POLICY_TABLE

from helpers import DAY, NEXT_DAY, NOON, REPO, event, events_df

JOB = REPO / "jobs" / "firewall_policy.py"
SUBMIT_TIMEOUT = 600  # seconds; the tiny job needs ~35 s of CPU, far more wall time on a busy machine

SVCHOST = r"C:\Windows\System32\svchost.exe"
TEAMS = r"C:\Users\bob\AppData\Local\Microsoft\Teams\current\Teams.exe"

# A tiny window that still exercises both legs, the server-key semi join and the filters.
TINY_ROWS = [
    event(),
    event(Timestamp=NOON + dt.timedelta(minutes=5)),  # the same connection again
    event(DeviceId="dev-2"),
    event(RemoteIP="20.1.1.2", RemotePort=80),
    event(
        DeviceId="dev-3",
        RemoteIP="52.1.1.1",
        RemotePort=3478,
        InitiatingProcessFolderPath=TEAMS,
        InitiatingProcessFileName="Teams.exe",
    ),
    event(
        ActionType="ListeningConnectionCreated",
        LocalPort=3389,
        RemoteIP="",
        RemotePort=0,
        RemoteIPType="",
        InitiatingProcessFolderPath=SVCHOST,
        InitiatingProcessFileName="svchost.exe",
    ),
    event(
        ActionType="InboundConnectionAccepted",
        LocalPort=3389,
        RemoteIP="10.0.0.9",
        RemotePort=50123,
        RemoteIPType="Private",
        InitiatingProcessFolderPath=SVCHOST,
        InitiatingProcessFileName="svchost.exe",
    ),
    # inbound leg, but no server key for (dev-1, app.exe, 445): dropped by the semi join
    event(ActionType="ConnectionSuccess", LocalPort=445, RemotePort=50999),
    event(RemoteIPType="Loopback", RemoteIP="127.0.0.1"),  # removed: loopback
    event(Timestamp=NOON + dt.timedelta(days=1), DeviceId="dev-9"),  # outside the window
]
START, END = DAY, NEXT_DAY

# Small-data settings, passed with --conf as a user would on a real cluster.
SMALL_JOB_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.databricks.delta.snapshotPartitions": "1",
    "spark.sql.session.timeZone": "UTC",
}
# Short-lived JVMs on tiny data: C1-only JIT and the serial GC halve their CPU time.
FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
TEST_JVM_CONF = {"spark.driver.extraJavaOptions": FAST_JVM, "spark.executor.extraJavaOptions": FAST_JVM}
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def delta_jars() -> list[str]:
    jars = local_delta_jars()
    if not jars:
        pytest.skip("Delta jars are not cached; run `make setup` (python -m fwpolicy.io.session)")
    return jars


def launcher_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of spark-submit and the standalone daemons: no PYTHONPATH, no gateway of
    the pytest process, loopback only, Spark's own distribution (the pip one) as SPARK_HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_SUBMIT_ARGS")
        and not k.startswith("SPARK_")
    }
    conf_dir = tmp / "spark-conf"  # empty: no spark-defaults.conf of the machine leaks in
    conf_dir.mkdir(exist_ok=True)
    env.update(
        SPARK_HOME=str(spark_home()),
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(tmp / "spark-logs"),
    )
    env.update(extra)
    return env


def spark_submit(
    tmp: Path,
    master: str,
    python: str,
    source: Path,
    output: Path,
    py_files: tuple[Path, ...] = (),
    conf: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Run the job with the venv's spark-submit from ``tmp``; fail with its log on error."""
    events = tmp / "eventlog"
    events.mkdir(exist_ok=True)
    settings = {
        **SMALL_JOB_CONF,
        **TEST_JVM_CONF,
        **DELTA_CONF,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": events.as_uri(),
        # One plain JSON-lines file, as Spark 3.5 writes it (Spark 4 compresses and rolls it).
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
        **(conf or {}),
    }
    cmd = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        master,
        "--jars",
        ",".join(delta_jars()),
        *[a for k, v in settings.items() for a in ("--conf", f"{k}={v}")],
        *extra_args,
    ]
    if py_files:
        cmd += ["--py-files", ",".join(str(p) for p in py_files)]
    cmd += [
        str(JOB),
        "--source",
        str(source),
        "--source-format",
        "parquet",
        "--output",
        str(output),
        "--start",
        START.isoformat(),
        "--end",
        END.isoformat(),
    ]
    began = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=tmp, env=launcher_env(tmp), capture_output=True, text=True, timeout=SUBMIT_TIMEOUT
    )
    print(f"spark-submit --master {master}: exit {proc.returncode} in {time.monotonic() - began:.1f}s")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-60:])
        pytest.fail(f"spark-submit failed ({proc.returncode}):\n{proc.stdout}\n--- stderr tail ---\n{tail}")
    return proc


def submitted_properties(tmp: Path) -> dict[str, str]:
    """The Spark properties the driver actually ran with, from its event log."""
    logs = sorted((tmp / "eventlog").iterdir())
    assert len(logs) == 1, f"expected one application's event log, found {logs}"
    with logs[0].open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record.get("Event") == "SparkListenerEnvironmentUpdate":
                props = record["Spark Properties"]
                return dict(props) if isinstance(props, dict) else {k: v for k, v in props}
    raise AssertionError(f"no environment update in {logs[0]}")


def write_tiny_source(spark, path: Path) -> list[dict[str, Any]]:
    events_df(spark, TINY_ROWS).coalesce(1).write.mode("overwrite").parquet(str(path))
    return TINY_ROWS


def canonical(rows) -> list[dict[str, Any]]:
    """Rows as dicts in a stable order (arrays are already sorted by the job)."""
    dicts = [r.asDict(recursive=True) for r in rows]
    return sorted(dicts, key=lambda d: json.dumps(d, sort_keys=True, default=str))


def policy_table(spark, output: Path, columns: list[str]) -> list[dict[str, Any]]:
    table = spark.read.format("delta").load(str(output / POLICY_TABLE))
    return canonical(table.select(*columns).collect())
