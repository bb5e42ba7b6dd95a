"""The job on a real (if small) Spark standalone cluster gives what local mode gives.

A master and one worker are started from the venv's pyspark distribution (the pip wheel ships
``spark-class`` but not ``sbin/start-master.sh``), bound to 127.0.0.1 only, with their logs and
work directories under the test's temporary directory. ``jobs/firewall_policy.py`` is submitted
to them in client mode; the driver must use the session spark-submit configured (the cluster),
and the ``firewall_policy`` table it writes must equal the one ``pipeline.run`` writes from the
same input with the suite's local session. Every wait is bounded and the daemons' process groups
are always killed. ``make slow-test`` runs this file with the rest of the slow tier.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fwpolicy.config import PolicyConfig, RunSpec
from fwpolicy.tasks.run import POLICY_TABLE, run

from submit import (
    END,
    FAST_JVM,
    START,
    launcher_env,
    policy_table,
    spark_home,
    spark_submit,
    submitted_properties,
    write_tiny_source,
)

pytestmark = pytest.mark.slow

WAIT = 60.0  # seconds, for each daemon to come up and for the app to be reported finished
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Kill the daemon's process group (the JVM and, for the worker, its executors)."""
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        # executors may outlive a worker that exited on SIGTERM: sweep the group once more
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_daemon(name: str, args: list[str], env: dict[str, str], logs: Path) -> Daemon:
    log = logs / f"{name}.out"
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=logs,
            start_new_session=True,  # its own process group, killed as a whole
        )
    return Daemon(name, proc, log)


def master_state(webui_port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{webui_port}/json/", timeout=2) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def wait_for(what: str, check: Callable[[], Any], daemons: list[Daemon], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in daemons:
            if d.proc.poll() is not None:
                pytest.fail(f"{d.name} exited ({d.proc.returncode}) waiting for {what}\n{d.tail()}")
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(d.tail() for d in daemons))


@dataclass
class Cluster:
    url: str
    webui_port: int
    work_dir: Path
    daemons: list[Daemon]

    def state(self) -> dict[str, Any] | None:
        return master_state(self.webui_port)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("standalone")
    logs = tmp / "spark-logs"
    logs.mkdir()
    env = launcher_env(
        tmp,
        SPARK_WORKER_DIR=str(tmp / "work"),
        SPARK_DAEMON_MEMORY="512m",
        SPARK_DAEMON_JAVA_OPTS=FAST_JVM,
    )
    port, ui, worker_port, worker_ui = free_port(), free_port(), free_port(), free_port()
    url = f"spark://{LOOPBACK}:{port}"
    daemons: list[Daemon] = []
    try:
        began = time.monotonic()
        master = start_daemon(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            env,
            logs,
        )
        daemons.append(master)
        wait_for("the master's web UI", lambda: master_state(ui), daemons)
        worker = start_daemon(
            "worker",
            [
                "org.apache.spark.deploy.worker.Worker",
                url,
                "--cores",
                "1",
                "--memory",
                "1g",
                "--host",
                LOOPBACK,
                "--port",
                str(worker_port),
                "--webui-port",
                str(worker_ui),
            ],
            env,
            logs,
        )
        daemons.append(worker)

        def worker_alive() -> bool:
            state = master_state(ui) or {}
            return any(w.get("state") == "ALIVE" for w in state.get("workers", []))

        wait_for("the worker to register", worker_alive, daemons)
        print(f"standalone cluster {url} up in {time.monotonic() - began:.1f}s")
        yield Cluster(url, ui, tmp / "work", daemons)
    finally:
        for d in reversed(daemons):
            d.stop()


def test_cluster_listens_on_loopback_only(standalone_cluster):
    state = standalone_cluster.state()
    assert state is not None
    assert state["url"] == standalone_cluster.url
    assert [w["host"] for w in state["workers"]] == [LOOPBACK]


def test_job_on_standalone_cluster_equals_local_mode(spark, tmp_path, standalone_cluster):
    source = tmp_path / "events"
    write_tiny_source(spark, source)

    local_out = tmp_path / "local-out"
    run(RunSpec(str(source), "parquet", str(local_out), START, END, PolicyConfig()), spark)

    work = tmp_path / "submit"
    work.mkdir()
    cluster_out = tmp_path / "cluster-out"
    proc = spark_submit(
        work,
        standalone_cluster.url,
        sys.executable,  # the venv's interpreter, with PYTHONPATH cleared
        source,
        cluster_out,
        conf={"spark.executor.memory": "512m", "spark.cores.max": "1"},
    )
    assert "firewall_policy, window [2026-08-01, 2026-08-02)" in proc.stdout

    # The driver used spark-submit's session: the cluster, not an embedded local[*] one ...
    assert submitted_properties(work)["spark.master"] == standalone_cluster.url

    # ... and the master ran the application to completion on its worker.
    def finished_apps() -> list[dict[str, Any]]:
        state = standalone_cluster.state() or {}
        return [a for a in state.get("completedapps", []) if a.get("state") == "FINISHED"]

    apps = wait_for("the application to be reported finished", finished_apps, standalone_cluster.daemons)
    assert len(apps) == 1 and apps[0]["cores"] >= 1, apps
    executor_logs = list(standalone_cluster.work_dir.glob(f"{apps[0]['id']}/*/stderr"))
    assert executor_logs, "no executor of the application ran on the worker"

    columns = spark.read.format("delta").load(str(local_out / POLICY_TABLE)).columns
    expected = policy_table(spark, local_out, columns)
    assert expected, "the tiny input must produce policy rows"
    assert policy_table(spark, cluster_out, columns) == expected
