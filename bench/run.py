"""``make bench``: how fast is fwpolicy, against what, and does everyone get the same answer?

For each lake size it builds (or reuses) a Parquet lake with fwpolicy's generator, then runs,
each as a fresh process so every figure includes its own start-up (a JVM for Spark):

* ``fwpolicy run`` over the whole lake (the "cold" run every other figure is divided by);
* ``fwpolicy nightly``, measured on its second run (the partials were back-filled by a first
  one for the previous day; the second sees one new day: the steady state);
* the same query in DuckDB (``bench/duckdb_query.py``), the single-machine peer;
* a naive literal PySpark port (``bench/naive_port.py``): three reads, a real anti join, a UDF;
* the floor (``bench/floor.py``): Spark scanning the window's needed columns once.

It prints one table (seconds, events/s, CPU seconds, peak RSS of the process tree, ratio to the
cold run, target) and checks that fwpolicy, DuckDB and the naive port wrote the same rows.
The table is also written as JSON to ``bench/results/latest.json``.

    .venv/bin/python bench/run.py                     # one ~20M-event lake (90 days, 5k devices)
    .venv/bin/python bench/run.py --sizes 2e6,5e6,20e6
    .venv/bin/python bench/run.py --quick             # ~200k events over 14 days, a smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from fwpolicy.summarize import KQL_COLUMNS  # the columns every engine's rows are compared on

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
START = dt.date(2026, 8, 1)
SEED = 7
# The reference lake: 20M events = 5,000 devices x 90 days x ~44 events per device-day.
REF_EVENTS, REF_DEVICES, REF_DAYS = 20e6, 5000, 90
DENSITY = REF_EVENTS / (REF_DEVICES * REF_DAYS)
QUICK_EVENTS, QUICK_DAYS = 2e5, 14
GENERATOR_KEY = "generator_sha256"
STEPS = ("cold", "nightly", "duckdb", "naive", "floor")
LABELS = {
    "cold": "fwpolicy run (cold)",
    "nightly": "fwpolicy nightly (+1 day)",
    "duckdb": "DuckDB, same query",
    "naive": "naive PySpark port",
    "floor": "floor: Spark scan",
}
# Target on (step seconds / cold seconds): (operator, bound, the goal as people say it).
TARGETS = {
    "nightly": ("<=", 0.2, "nightly <= 1/5 of cold"),
    "duckdb": (">=", 0.5, "cold <= 2x DuckDB"),
    "naive": (">=", 3.0, "cold >= 3x faster than naive"),
    "floor": (">=", 0.5, "cold <= 2x floor"),
}
_began = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _began:7.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Lakes
# ----------------------------------------------------------------------------------------------


def human(n: float) -> str:
    """20000000 -> '20M', 200000 -> '200k', 2500000 -> '2.5M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class LakeSpec:
    """Generator arguments for a target size; days stay fixed, devices scale with the target."""

    target: float
    days: int
    devices: int
    events_per_device_day: int
    seed: int = SEED
    start: dt.date = START

    @classmethod
    def for_target(cls, target: float, days: int = REF_DAYS) -> LakeSpec:
        devices = max(10, round(target / (days * DENSITY)))
        per_day = max(1, round(target / (devices * days)))
        return cls(target, days, devices, per_day)

    @property
    def name(self) -> str:
        return human(self.target) + ("" if self.days == REF_DAYS else f"-{self.days}d")

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days)

    @property
    def last_day(self) -> dt.date:
        return self.end - dt.timedelta(days=1)

    def params(self) -> dict:
        """What the lake's content depends on, recorded beside it to decide on reuse."""
        generator = (ROOT / "lib" / "fwpolicy" / "generate.py").read_bytes()
        return {
            "devices": self.devices,
            "days": self.days,
            "events_per_device_day": self.events_per_device_day,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "format": "parquet",
            GENERATOR_KEY: hashlib.sha256(generator).hexdigest()[:16],
        }


MARKER = "_bench_lake.json"  # a leading '_' keeps it out of Spark's, pyarrow's and DuckDB's reads


def count_events(lake: Path) -> int:
    """Exact row count of a Parquet lake, from the files' footers."""
    import pyarrow.dataset as ds

    return ds.dataset(str(lake), format="parquet", partitioning="hive").count_rows()


def ensure_lake(spec: LakeSpec, env: dict[str, str], regenerate: bool = False) -> Path:
    """The lake of ``spec`` under bench/, generated unless one with the same parameters exists.

    A lake written by another version of ``generate.py`` is reused with a warning (writing 20M
    events takes a while); ``regenerate`` rewrites it.
    """
    lake = BENCH / f"lake-{spec.name}"
    marker = lake / MARKER
    params = spec.params()
    found = json.loads(marker.read_text()) if marker.is_file() else None

    def core(p: dict) -> dict:
        return {k: v for k, v in p.items() if k != GENERATOR_KEY}

    same = found is not None and core(found) == core(params)
    if same and not regenerate:
        progress(f"lake-{spec.name}: reusing {lake.relative_to(ROOT)}")
        if found.get(GENERATOR_KEY) != params[GENERATOR_KEY]:
            progress(
                f"lake-{spec.name}: warning: written by another version of generate.py; "
                "pass --regenerate to rewrite it"
            )
        return lake
    if lake.exists():
        progress(f"lake-{spec.name}: {'regenerating' if same else 'parameters changed, regenerating'}")
        shutil.rmtree(lake)
    progress(
        f"lake-{spec.name}: generating {spec.devices} devices x {spec.days} days x "
        f"{spec.events_per_device_day} events per device-day"
    )
    cmd = [
        PY,
        str(BENCH / "make_lake.py"),
        "--output",
        str(lake),
        "--devices",
        str(spec.devices),
        "--days",
        str(spec.days),
        "--events-per-device-day",
        str(spec.events_per_device_day),
        "--seed",
        str(spec.seed),
        "--start",
        spec.start.isoformat(),
    ]
    m = measure(cmd, BENCH / f"out-{spec.name}" / "logs" / "make_lake.log", env)
    if not m.ok:
        raise SystemExit(f"lake generation failed: {m.note}")
    marker.write_text(json.dumps(params, indent=2) + "\n")
    progress(f"lake-{spec.name}: generated in {m.seconds:.1f}s")
    return lake


def warm_page_cache(lake: Path) -> int:
    """Read every file once, so that no step pays for the first read from disk."""
    total = 0
    for path in sorted(lake.rglob("*.parquet")):
        with path.open("rb") as f:
            while chunk := f.read(1 << 23):
                total += len(chunk)
    return total


# ----------------------------------------------------------------------------------------------
# Measuring a process
# ----------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One fresh process: wall seconds, CPU seconds and peak RSS of its whole process tree."""

    ok: bool
    seconds: float | None = None
    cpu_seconds: float | None = None
    peak_rss: int | None = None
    inner: str = ""  # the process's own account of its time, when it prints one
    note: str = ""  # why it failed or was skipped
    extra: dict = field(default_factory=dict)


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def _wait_gone(procs: list[psutil.Process], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.Error:  # gone already
                break
            time.sleep(0.2)


def with_event_log(env: dict[str, str], directory: Path) -> dict[str, str]:
    """``env`` with Spark's event log (the UI's data, as JSON lines) going to ``directory``.

    Left alone when the caller set ``PYSPARK_SUBMIT_ARGS`` already.
    """
    if "PYSPARK_SUBMIT_ARGS" in env:
        return env
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    conf = f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={directory.as_uri()}"
    return {**env, "PYSPARK_SUBMIT_ARGS": f"{conf} pyspark-shell"}


def measure(cmd: list[str], log_path: Path, env: dict[str, str], poll: float = 0.1) -> Measurement:
    """Run ``cmd`` to completion, polling the RSS and CPU time of it and all its descendants.

    A Spark process also leaves its event log beside ``log_path`` (``<step>.events/``);
    ``Measurement.extra["spark"]`` summarises it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    events = log_path.with_suffix(".events")
    env = with_event_log(env, events)
    with log_path.open("w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        began = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        root = psutil.Process(proc.pid)
        seen: dict[int, psutil.Process] = {}
        cpu: dict[int, float] = {}
        peak = 0
        while proc.poll() is None:
            rss = 0
            for p in _tree(root):
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system
                    seen.setdefault(p.pid, p)
                except psutil.Error:
                    continue
            peak = max(peak, rss)
            time.sleep(poll)
        seconds = time.monotonic() - began
    # A JVM may outlive its Python driver by a moment: let it go before the next step starts.
    _wait_gone([p for pid, p in seen.items() if pid != proc.pid])
    output = log_path.read_text(errors="replace")
    m = Measurement(proc.returncode == 0, seconds, sum(cpu.values()), peak)
    spark = spark_summary(events)
    if spark:
        m.extra["spark"] = spark
    if not m.ok:
        lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith("$ ")]
        errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
        m.note = (errors or lines or [f"exit code {proc.returncode}"])[-1].strip()[:160]
    return m


def spark_summary(events: Path, top: int = 4) -> dict:
    """Jobs, stages, tasks and where the task time went, from a Spark event log ({} if none)."""
    logs = sorted(events.glob("*")) if events.is_dir() else []
    if not logs:
        return {}
    stages: dict[int, dict] = {}
    sql: dict[int, dict] = {}
    jobs = 0
    for line in logs[-1].open(errors="replace"):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:  # a log cut short
            continue
        kind = e.get("Event", "")
        if kind == "SparkListenerJobStart":
            jobs += 1
        elif kind == "SparkListenerStageCompleted":
            info = e["Stage Info"]
            stage = stages.setdefault(info["Stage ID"], {})
            stage["name"] = info["Stage Name"].split(" at ")[0]
            stage["wall_s"] = (info.get("Completion Time", 0) - info.get("Submission Time", 0)) / 1000
        elif kind == "SparkListenerTaskEnd":
            metrics = e.get("Task Metrics") or {}
            stage = stages.setdefault(e["Stage ID"], {})
            stage["tasks"] = stage.get("tasks", 0) + 1
            stage["cpu_s"] = stage.get("cpu_s", 0) + metrics.get("Executor CPU Time", 0) / 1e9
            stage["run_s"] = stage.get("run_s", 0) + metrics.get("Executor Run Time", 0) / 1000
            stage["gc_s"] = stage.get("gc_s", 0) + metrics.get("JVM GC Time", 0) / 1000
            stage["rows_in"] = stage.get("rows_in", 0) + (metrics.get("Input Metrics") or {}).get(
                "Records Read", 0
            )
            shuffle = (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
            stage["shuffle_mib"] = stage.get("shuffle_mib", 0) + shuffle / 2**20
            stage["spill_mib"] = stage.get("spill_mib", 0) + metrics.get("Disk Bytes Spilled", 0) / 2**20
        elif kind.endswith("SparkListenerSQLExecutionStart"):
            sql[e["executionId"]] = {"what": e["description"][:70], "start": e["time"]}
        elif kind.endswith("SparkListenerSQLExecutionEnd") and e["executionId"] in sql:
            sql[e["executionId"]]["s"] = (e["time"] - sql[e["executionId"]].pop("start")) / 1000

    def total(key: str) -> float:
        return round(sum(s.get(key, 0) for s in stages.values()), 1)

    def rounded(d: dict) -> dict:
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()}

    by_cpu = sorted(stages.items(), key=lambda kv: -kv[1].get("cpu_s", 0))[:top]
    by_time = sorted((q for q in sql.values() if "s" in q), key=lambda q: -q["s"])[:top]
    return {
        "jobs": jobs,
        "stages": len(stages),
        "tasks": sum(s.get("tasks", 0) for s in stages.values()),
        "task_cpu_s": total("cpu_s"),
        "task_run_s": total("run_s"),
        "gc_s": total("gc_s"),
        "shuffle_mib": total("shuffle_mib"),
        "spill_mib": total("spill_mib"),
        "top_stages_by_cpu": [{"stage": sid, **rounded(s)} for sid, s in by_cpu],
        "top_queries_by_time": [rounded(q) for q in by_time],
    }


def inner_time(log_path: Path, pattern: str) -> str:
    """The first group of ``pattern`` in a step's log (its own timing line), or ''."""
    found = re.search(pattern, log_path.read_text(errors="replace"))
    return found.group(1) if found else ""


def repeated(runs: int, step, *args) -> Measurement:
    """Run a measured step ``runs`` times; keep the median-time run and the highest peak RSS."""
    results = [step(*args) for _ in range(runs)]
    good = [m for m in results if m.ok]
    if not good:
        return results[-1]
    median = statistics.median_low([m.seconds for m in good])
    chosen = next(m for m in good if m.seconds == median)
    chosen.peak_rss = max(m.peak_rss or 0 for m in good)
    if len(good) > 1:
        chosen.extra["all_seconds"] = [round(m.seconds, 2) for m in good]
    return chosen


# ----------------------------------------------------------------------------------------------
# The steps
# ----------------------------------------------------------------------------------------------


def step_cold(spec: LakeSpec, lake: Path, out: Path, env: dict[str, str]) -> Measurement:
    target = out / "run"
    shutil.rmtree(target, ignore_errors=True)
    cmd = [
        PY,
        "-m",
        "fwpolicy",
        "run",
        "--source",
        str(lake),
        "--source-format",
        "parquet",
        "--output",
        str(target),
        "--start",
        spec.start.isoformat(),
        "--end",
        spec.end.isoformat(),
    ]
    log_path = out / "logs" / "cold.log"
    m = measure(cmd, log_path, env)
    if m.ok:
        m.inner = "job " + inner_time(log_path, r"time taken:\s+([\d.]+s)")
    return m


def nightly_available() -> bool:
    try:
        return importlib.util.find_spec("fwpolicy.nightly") is not None
    except (ImportError, ValueError):
        return False


def step_nightly(spec: LakeSpec, lake: Path, out: Path, env: dict[str, str]) -> Measurement:
    """Back-fill the partials for the day before the last one, then time the last day's run."""
    if not nightly_available():
        return Measurement(False, note="fwpolicy.nightly is not importable")
    target = out / "nightly"
    shutil.rmtree(target, ignore_errors=True)

    def nightly(day: dt.date, name: str) -> Measurement:
        cmd = [
            PY,
            "-m",
            "fwpolicy",
            "nightly",
            "--source",
            str(lake),
            "--source-format",
            "parquet",
            "--output",
            str(target),
            "--date",
            day.isoformat(),
            "--window-days",
            str(spec.days),
            "--refresh-days",
            "2",
        ]
        return measure(cmd, out / "logs" / f"{name}.log", env)

    backfill = nightly(spec.last_day - dt.timedelta(days=1), "nightly-backfill")
    if not backfill.ok:
        return Measurement(False, note=f"back-fill failed: {backfill.note}")
    progress(f"lake-{spec.name}: nightly back-fill took {backfill.seconds:.1f}s; now the steady-state run")
    m = nightly(spec.last_day, "nightly")
    m.extra["backfill_seconds"] = round(backfill.seconds, 2)
    m.inner = f"back-fill {backfill.seconds:.1f}s"
    return m


def run_peer(
    step: str, script: str, spec: LakeSpec, lake: Path, out: Path, env: dict[str, str], *extra: str
) -> tuple[Measurement, Path]:
    """Run ``bench/<script>`` over the lake's window, logging to ``logs/<step>.log``."""
    cmd = [PY, str(BENCH / script), "--source", str(lake)]
    cmd += ["--start", spec.start.isoformat(), "--end", spec.end.isoformat(), *extra]
    log_path = out / "logs" / f"{step}.log"
    return measure(cmd, log_path, env), log_path


def step_duckdb(spec: LakeSpec, lake: Path, out: Path, env: dict[str, str]) -> Measurement:
    result = out / "duckdb.parquet"
    result.unlink(missing_ok=True)
    m, log_path = run_peer("duckdb", "duckdb_query.py", spec, lake, out, env, "--output", str(result))
    if m.ok:
        m.inner = "query " + inner_time(log_path, r"rows in ([\d.]+s)")
    return m


def step_naive(spec: LakeSpec, lake: Path, out: Path, env: dict[str, str]) -> Measurement:
    result = out / "naive"
    shutil.rmtree(result, ignore_errors=True)
    m, log_path = run_peer("naive", "naive_port.py", spec, lake, out, env, "--output", str(result))
    if m.ok:
        m.inner = "job " + inner_time(log_path, r"rows in ([\d.]+s)")
    return m


def step_floor(spec: LakeSpec, lake: Path, out: Path, env: dict[str, str]) -> Measurement:
    m, log_path = run_peer("floor", "floor.py", spec, lake, out, env)
    if m.ok:
        m.inner = "scan " + inner_time(log_path, r"scan ([\d.]+s)")
    return m


STEP_FUNCTIONS = {
    "cold": step_cold,
    "nightly": step_nightly,
    "duckdb": step_duckdb,
    "naive": step_naive,
    "floor": step_floor,
}


# ----------------------------------------------------------------------------------------------
# Same answers?
# ----------------------------------------------------------------------------------------------

Row = tuple


def normalized(rows: list[dict]) -> dict[tuple[str, str], Row]:
    """{(Directionality, AliasPath): the compared columns}, arrays as tuples."""
    out = {}
    for r in rows:
        values = (r[c] for c in KQL_COLUMNS)
        out[(r["Directionality"], r["AliasPath"])] = tuple(
            tuple(v) if isinstance(v, (list, tuple)) else v for v in values
        )
    return out


def policy_partition(root: Path, window_end: dt.date) -> list[dict] | None:
    """The ``window_end`` partition of ``firewall_policy`` under an output root (Delta), or None."""
    from deltalake import DeltaTable

    path = root / "firewall_policy"
    if not (path / "_delta_log").is_dir():
        return None
    table = DeltaTable(str(path)).to_pyarrow_table(
        filters=[("window_end", "=", window_end)], columns=list(KQL_COLUMNS)
    )
    return table.to_pylist()


def parquet_rows(path: Path) -> list[dict] | None:
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist() if path.exists() else None


def compare(spec: LakeSpec, out: Path) -> dict:
    """Do fwpolicy, DuckDB and the naive port agree row for row? (And the nightly with fwpolicy.)"""
    results = {
        "fwpolicy": policy_partition(out / "run", spec.end),
        "duckdb": parquet_rows(out / "duckdb.parquet"),
        "naive": parquet_rows(out / "naive"),
    }
    missing = [name for name, rows in results.items() if rows is None]
    verdict: dict = {"rows": {k: (len(v) if v is not None else None) for k, v in results.items()}}
    if missing:
        verdict.update(identical=False, detail=f"no result from {', '.join(missing)}")
    else:
        ref = normalized(results["fwpolicy"])
        diffs = {}
        for name in ("duckdb", "naive"):
            other = normalized(results[name])
            keys = sorted(k for k in ref.keys() | other.keys() if ref.get(k) != other.get(k))
            if keys:
                diffs[name] = {"groups": len(keys), "first": [list(k) for k in keys[:3]]}
        verdict.update(identical=not diffs, detail=diffs or f"{len(ref)} rows each")
    nightly = policy_partition(out / "nightly", spec.end) if (out / "nightly").is_dir() else None
    if nightly is None or results["fwpolicy"] is None:
        verdict["nightly_equals_cold"] = None
    else:
        verdict["nightly_equals_cold"] = normalized(nightly) == normalized(results["fwpolicy"])
    return verdict


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def gib(n: int | None) -> str:
    return "" if not n else f"{n / 2**30:.2f} GiB"


def ratios(steps: dict[str, Measurement], attr: str = "seconds") -> dict[str, float | None]:
    """``attr`` (seconds or cpu_seconds) of each step over the cold run's (None if either is missing)."""
    cold = getattr(steps["cold"], attr) if steps["cold"].ok else None
    return {s: (getattr(m, attr) / cold if cold and m.ok else None) for s, m in steps.items()}


def target_status(step: str, ratio: float | None) -> tuple[str, str]:
    if step not in TARGETS:
        return "", ""
    op, bound, goal = TARGETS[step]
    text = f"{op} {bound:g} ({goal})"
    if ratio is None:
        return text, "n/a"
    met = ratio <= bound if op == "<=" else ratio >= bound
    return text, "met" if met else "MISSED"


def lake_rows(result: dict) -> list[list[str]]:
    steps = result["steps"]
    rows = []
    for i, step in enumerate(STEPS):
        m = steps[step]
        first = [f"lake-{result['name']}", f"{result['events']:,}"] if i == 0 else ["", ""]
        if not m["ok"]:
            note = "skipped" if m["note"] == "skipped" else f"n/a: {m['note']}"
            target, status = target_status(step, None)
            rows.append([*first, LABELS[step], "n/a", "", "", "", "", "", target, status, note])
            continue
        ratio, cpu_ratio = result["ratios"][step], result["cpu_ratios"][step]
        target, status = target_status(step, ratio)
        rows.append(
            [
                *first,
                LABELS[step],
                f"{m['seconds']:.1f}",
                f"{result['events'] / m['seconds']:,.0f}",
                f"{m['cpu_seconds']:.0f}",
                gib(m["peak_rss"]),
                "" if ratio is None else f"{ratio:.2f}",
                "" if cpu_ratio is None else f"{cpu_ratio:.2f}",
                target,
                status,
                m["inner"],
            ]
        )
    return rows


HEADER = [
    "lake",
    "events",
    "step",
    "seconds",
    "events/s",
    "CPU s",
    "peak RSS",
    "x cold",
    "CPU x cold",
    "target",
    "",
    "notes",
]


def spark_line(m: dict) -> str:
    """One line on where a Spark step's time went, from its event log summary."""
    s = m["extra"]["spark"]
    longest = ", ".join(f"{q['what'].split(' at ')[0]} {q['s']:.0f}s" for q in s["top_queries_by_time"][:2])
    return (
        f"{s['jobs']} jobs, {s['stages']} stages, {s['tasks']} tasks; task CPU {s['task_cpu_s']:.0f}s "
        f"of {m['cpu_seconds']:.0f}s process CPU (GC {s['gc_s']:.0f}s); shuffle {s['shuffle_mib']:.0f} MiB, "
        f"spill {s['spill_mib']:.0f} MiB; longest queries: {longest}"
    )


def render(results: list[dict], host: dict) -> str:
    rows = []
    footers = {}
    for result in results:
        block = lake_rows(result)
        rows.extend(block)
        check = result["check"]
        nightly = {True: "yes", False: "NO", None: "n/a"}[check["nightly_equals_cold"]]
        footers[len(rows) - 1] = (
            f"  results identical: {'yes' if check['identical'] else 'no'} "
            f"(fwpolicy = DuckDB = naive port: {check['detail']}); nightly = cold: {nightly}"
        )
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    right = {1, 3, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        padded = (
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    dirty = " + uncommitted lib/ changes" if host["code"]["lib_dirty"] else ""
    out = [
        f"fwpolicy bench: {host['cpus']} cores, {host['memory_gib']:.1f} GiB RAM, "
        f"Spark local[*] (fresh JVM per step), DuckDB default threads; "
        f"load average {host['load_start']:.1f} at start, {host['load_end']:.1f} at end; "
        f"fwpolicy {host['code']['commit']}{dirty}",
        line(HEADER),
        line(["-" * w for w in widths]),
    ]
    for i, r in enumerate(rows):
        out.append(line(r))
        if i in footers:
            out.append(footers[i])
    out.append(
        "x cold = step seconds / cold seconds (targets apply to it); CPU x cold = the same for CPU "
        "seconds; seconds include process and JVM start-up; "
        "peak RSS is the whole process tree (driver, JVM, Python workers)."
    )
    details = [
        f"  lake-{r['name']} {LABELS[step]}: {spark_line(r['steps'][step])}"
        for r in results
        for step in STEPS
        if r["steps"][step]["extra"].get("spark")
    ]
    if details:
        out.append("Spark detail (event logs: bench/out-<lake>/logs/<step>.events/):")
        out.extend(details)
    if host["load_start"] > host["cpus"] or host["load_end"] > host["cpus"]:
        out.append(
            f"note: the load average exceeded the {host['cpus']} cores: other processes competed "
            "for CPU, so the times are noisy (CPU s is less affected)."
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def code_version() -> dict:
    """The commit benchmarked, and whether lib/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "lib_dirty": bool(git("status", "--short", "lib"))}


def parse_sizes(text: str) -> list[float]:
    try:
        sizes = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r} (e.g. 2e6,5e6,20e6)") from None
    if not sizes or any(s < 1000 for s in sizes):
        raise argparse.ArgumentTypeError("sizes are event counts of at least 1000, e.g. 2e6,5e6,20e6")
    return sizes


def parse_steps(text: str) -> set[str]:
    steps = {s.strip() for s in text.split(",") if s.strip()}
    unknown = (steps - set(STEPS)) | (steps & {"cold"})
    if unknown:
        raise argparse.ArgumentTypeError(f"can skip only {', '.join(s for s in STEPS if s != 'cold')}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark fwpolicy against DuckDB, a naive PySpark port and a plain scan.",
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help=f"comma-separated event counts, e.g. 2e6,5e6,20e6 (default {REF_EVENTS:g}); "
        f"each lake spans {REF_DAYS} days and devices scale with the size",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"one tiny lake (~{human(QUICK_EVENTS)} events over {QUICK_DAYS} days): a smoke test",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per step; the median is reported")
    p.add_argument(
        "--regenerate", action="store_true", help="rewrite the lakes even if their parameters match"
    )
    p.add_argument("--skip", type=parse_steps, default=set(), help="steps to leave out, e.g. naive")
    p.add_argument("--results", type=Path, default=BENCH / "results" / "latest.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        specs = [LakeSpec.for_target(QUICK_EVENTS, QUICK_DAYS)]
    else:
        specs = [LakeSpec.for_target(s) for s in (args.sizes or [REF_EVENTS])]
    env = {**os.environ, "PYSPARK_PYTHON": PY, "PYTHONUNBUFFERED": "1"}
    host = {
        "cpus": os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "load_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "code": code_version(),
    }
    results = []
    for spec in specs:
        lake = ensure_lake(spec, env, args.regenerate)
        out = BENCH / f"out-{spec.name}"
        events = count_events(lake)
        size = warm_page_cache(lake)
        mib = size / 2**20
        progress(f"lake-{spec.name}: {events:,} events, {mib:,.0f} MiB of Parquet (page cache warmed)")
        steps = {}
        for step in STEPS:
            if step in args.skip:
                steps[step] = Measurement(False, note="skipped")
                continue
            progress(f"lake-{spec.name}: {LABELS[step]} ...")
            m = repeated(args.repeat, STEP_FUNCTIONS[step], spec, lake, out, env)
            steps[step] = m
            if m.ok:
                progress(f"lake-{spec.name}: {LABELS[step]}: {m.seconds:.1f}s, peak {gib(m.peak_rss)}")
            else:
                progress(f"lake-{spec.name}: {LABELS[step]}: n/a ({m.note}); logs in {out / 'logs'}")
        progress(f"lake-{spec.name}: comparing results")
        results.append(
            {
                "name": spec.name,
                "lake": str(lake.relative_to(ROOT)),
                "params": spec.params(),
                "window": [spec.start.isoformat(), spec.end.isoformat()],
                "events": events,
                "parquet_bytes": size,
                "steps": {k: asdict(v) for k, v in steps.items()},
                "ratios": ratios(steps),
                "cpu_ratios": ratios(steps, "cpu_seconds"),
                "targets": {s: target_status(s, r)[1] for s, r in ratios(steps).items() if s in TARGETS},
                "check": compare(spec, out),
            }
        )
    host["load_end"] = os.getloadavg()[0]
    table = render(results, host)
    print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": host,
        "targets": {k: {"ratio": f"{v[0]} {v[1]}", "goal": v[2]} for k, v in TARGETS.items()},
        "lakes": results,
        "table": table,
    }
    args.results.write_text(json.dumps(report, indent=2, default=str) + "\n")
    progress(f"wrote {args.results}")
    ok = all(r["check"]["identical"] and r["steps"]["cold"]["ok"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
