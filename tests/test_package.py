"""``make package`` builds a wheel that spark-submit can run the job from.

The wheel is built into ``tmp_path`` from a copy of the project (the repository is not written),
its contents are checked, then ``jobs/firewall_policy.py`` runs under ``spark-submit
--py-files <wheel>`` with a Python interpreter that has the dependencies (pyspark, delta-spark,
PyYAML) but not fwpolicy, from a working directory outside the repository and with no
``PYTHONPATH``: the job can only import fwpolicy from the wheel, as on a cluster. Its output
must equal what ``seed.firewall_policy`` gives in-process.

The helpers below are shared with ``test_standalone_cluster.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fwpolicy.config import PolicyConfig
from fwpolicy.io.session import local_delta_jars
from fwpolicy.io.source import window_filter
from fwpolicy.query.seed import firewall_policy
from fwpolicy.tasks.run import POLICY_TABLE

from helpers import DAY, NEXT_DAY, NOON, event, events_df

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "firewall_policy.py"
VERSION = "0.1.0"
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


# ---------------------------------------------------------------- helpers (shared) --


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def delta_jars() -> list[str]:
    jars = local_delta_jars()
    if len(jars) < 2:
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


def expected_policy(spark) -> tuple[list[str], list[dict[str, Any]]]:
    events = window_filter(events_df(spark, TINY_ROWS), START, END)  # as read_window does
    df = firewall_policy(events, PolicyConfig(), START, END)
    return df.columns, canonical(df.collect())


# ------------------------------------------------------------------------- tests --


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``python -m build --wheel`` (what ``make package`` runs) on a copy of the project."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "lib",
        src / "lib",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"),
    )
    dist = tmp / "dist"
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(f"build: exit {proc.returncode} in {time.monotonic() - began:.1f}s")
    assert proc.returncode == 0, f"build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"fwpolicy-{VERSION}-py3-none-any.whl"]
    return wheels[0]


def test_wheel_holds_the_package_and_its_dependencies(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "lib" / "fwpolicy"
    modules = {f"fwpolicy/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    assert "fwpolicy/query/seed.py" in modules  # the subpackages are counted too
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    assert "fwpolicy/py.typed" in names
    # pure Python, importable from the zip as it is: nothing outside the package but metadata
    assert all(n.startswith(("fwpolicy/", f"fwpolicy-{VERSION}.dist-info/")) for n in names), names
    assert not any(n.endswith((".so", ".pyd")) for n in names)
    meta = zipfile.ZipFile(wheel).read(f"fwpolicy-{VERSION}.dist-info/METADATA").decode()
    for requirement in ("pyspark==3.5.7", "delta-spark==3.3.2", "PyYAML"):
        assert f"Requires-Dist: {requirement}" in meta


@pytest.fixture(scope="module")
def python_without_fwpolicy(tmp_path_factory) -> str:
    """An interpreter that sees this venv's packages but not fwpolicy (its editable install is a
    .pth file, and a path added by a .pth file is not scanned for further .pth files)."""
    root = tmp_path_factory.mktemp("thin-venv")
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(root)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    deps = [p for p in sysconfig.get_paths().values() if p.endswith("site-packages")]
    (purelib / "fwpolicy-deps.pth").write_text("\n".join(sorted(set(deps))) + "\n", encoding="utf-8")
    python = str(root / "bin" / "python")
    probe = "import pyspark, delta, yaml\ntry:\n import fwpolicy\nexcept ImportError: print('ok')"
    out = subprocess.run(
        [python, "-c", probe], cwd=root, env={"PATH": os.environ.get("PATH", "")}, capture_output=True
    )
    assert out.stdout.strip() == b"ok", (out.stdout, out.stderr)
    return python


@pytest.mark.slow  # builds a wheel and starts a second JVM: minutes of wall time on a busy machine
def test_spark_submit_runs_the_job_from_the_wheel(spark, tmp_path, wheel, python_without_fwpolicy):
    work = tmp_path / "submit"  # the working directory: outside the repository
    work.mkdir()
    assert REPO not in work.parents
    source, output = tmp_path / "events", tmp_path / "out"
    write_tiny_source(spark, source)

    proc = spark_submit(work, "local[2]", python_without_fwpolicy, source, output, py_files=(wheel,))

    assert "firewall_policy, window [2026-08-01, 2026-08-02)" in proc.stdout
    # get_spark() used the session spark-submit configured instead of building a local one
    # (which would have replaced the master with local[*] and dropped the --conf values).
    props = submitted_properties(work)
    assert props["spark.master"] == "local[2]"
    assert props["spark.sql.shuffle.partitions"] == "2"
    assert props["spark.submit.pyFiles"].endswith(wheel.name)

    columns, expected = expected_policy(spark)
    assert expected, "the tiny input must produce policy rows"
    assert policy_table(spark, output, columns) == expected
