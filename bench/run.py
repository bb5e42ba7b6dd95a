"""``make bench``: how fast is fwpolicy, against what, and does everyone get the same answer?

Lakes come in two shapes (``--shapes``), each at the sizes of ``--sizes``: ``wide`` is the
reference fleet (5,000 devices at 20M events, ~44 events per device-day, over 90 days) and
``dense`` a realistic Defender-onboarded workstation (~1,500 events per device-day: ~150 devices
at 20M). For each lake it builds (or reuses) a Parquet lake with fwpolicy's generator, timing the
write against DuckDB writing a lake of the same size and layout (``bench/duckdb_lake.py``), then
runs, each as a fresh process so every figure includes its own start-up (a JVM for Spark):

* ``fwpolicy run`` over the whole lake (the "cold" run every other figure is divided by);
* ``fwpolicy nightly``, measured on its second run (the blocks were back-filled by a first one
  for the previous day; the second sees one new day: the steady state);
* the same query in DuckDB (``bench/duckdb_query.py``), the single-machine peer;
* a naive literal PySpark port (``bench/naive_port.py``): three reads, a real anti join, a UDF;
* the floor (``bench/floor.py``): Spark scanning the window's needed columns once.

Two more lakes check how cost grows: a dense lake of ``--scale`` events (100M by default) on
which only the cold run and the floor run (cost should stay linear, memory flat), and a wide lake
of ``--nightly-long`` days (365) at the 2M wide lake's daily volume, on which the nightly runs
with that window (it should cost little more than the 90-day one).

It prints one table (seconds, events/s, CPU seconds, peak RSS of the process tree, ratio to the
cold run, targets), a cost-per-million-events line per shape, and checks that fwpolicy, DuckDB
and the naive port wrote the same rows. The report is also written as JSON to
``bench/results/latest.json``.

    .venv/bin/python bench/run.py                     # wide and dense at 2M and 20M, + 100M, + 365 days
    .venv/bin/python bench/run.py --shapes dense --sizes 2e6,5e6,20e6 --scale 0 --nightly-long 0
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

from fwpolicy.query.seed import KQL_COLUMNS  # the columns every engine's rows are compared on

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
# The generator's code and data: a lake written by another version of them is flagged on reuse.
GENERATOR_FILES = tuple(ROOT / "lib" / "fwpolicy" / "tasks" / f for f in ("generate.py", "catalogue.yaml"))
START = dt.date(2026, 8, 1)
SEED = 7
REF_DAYS = 90
DEFAULT_SIZES = (2e6, 20e6)
QUICK_EVENTS, QUICK_DAYS = 2e5, 14
SCALE_EVENTS = 1e8  # --scale's default: one dense lake five times the largest default size
# --nightly-long: a wide lake of that many days at the daily volume of the wide lake of this size.
LONG_WINDOW_DAYS, LONG_WINDOW_BASE = 365, 2e6


@dataclass(frozen=True)
class Shape:
    """How a fleet's events are spread: the lake's devices scale with its size at this density."""

    name: str
    events_per_device_day: float
    about: str


SHAPES = {
    s.name: s
    for s in (
        Shape("wide", 20e6 / (5000 * REF_DAYS), "the reference fleet: 5,000 devices at 20M events"),
        Shape("dense", 1500, "a Defender-onboarded workstation: ~150 devices at 20M events"),
    )
}

QUERY_STEPS = ("cold", "nightly", "duckdb", "naive", "floor")
ROLE_STEPS = {
    "main": QUERY_STEPS,
    "scale": ("cold", "floor"),  # does cost stay linear and memory flat at --scale events?
    "window": ("nightly",),  # does the nightly's cost stay flat over a --nightly-long window?
}
LABELS = {
    "generate": "generate lake (fwpolicy)",
    "duckdb-write": "DuckDB write, same lake",
    "cold": "fwpolicy run (cold)",
    "nightly": "fwpolicy nightly (+1 day)",
    "duckdb": "DuckDB, same query",
    "naive": "naive PySpark port",
    "floor": "floor: Spark scan",
}
GENERATOR_KEY = "generator_sha256"
_began = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _began:7.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal on one figure of one step: ``metric`` of ``step`` ``op`` ``bound``.

    Absolute goals are stated for a lake size (``sizes``: the lakes' nominal sizes it applies
    to; empty for all). ``roles`` are the kinds of lake it applies to (see ``ROLE_STEPS``).
    """

    step: str
    metric: str  # a key of METRICS
    op: str
    bound: float
    goal: str  # as people say it
    sizes: tuple[float, ...] = ()
    roles: tuple[str, ...] = ("main",)

    def applies(self, result: dict) -> bool:
        sized = not self.sizes or result["target_events"] in self.sizes
        return sized and result["role"] in self.roles and self.step in result["steps"]

    def status(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        met = value <= self.bound if self.op == "<=" else value >= self.bound
        return "met" if met else "MISSED"


ALL_ROLES = tuple(ROLE_STEPS)
TARGETS = (
    Target("generate", "seconds", "<=", 120, "generate 20M <= 120 s", sizes=(20e6,)),
    Target("generate", "x_duckdb_write", "<=", 1.5, "generate <= 1.5x DuckDB's write", roles=ALL_ROLES),
    Target("cold", "seconds", "<=", 20, "cold 2M <= 20 s", sizes=(2e6,)),
    Target("cold", "seconds", "<=", 40, "cold 20M <= 40 s", sizes=(20e6,)),
    Target("cold", "peak_rss_gib", "<=", 4, "peak RSS 20M <= 4 GiB", sizes=(20e6,)),
    Target("nightly", "x_cold", "<=", 0.25, "nightly <= 1/4 of cold"),
    Target("nightly", "seconds", "<=", 20, "nightly 20M <= 20 s", sizes=(20e6,)),
    Target("nightly", "x_base_nightly", "<=", 1.3, "long window <= 1.3x 90-day nightly", roles=("window",)),
    Target("naive", "x_cold", ">=", 3, "cold >= 3x faster than naive"),
    Target("floor", "x_cold", ">=", 0.5, "cold <= 2x floor", roles=("main", "scale")),
)
# How each metric reads in the table's "value" column.
METRICS = {
    "seconds": "{:.1f} s",
    "peak_rss_gib": "{:.2f} GiB",
    "x_cold": "{:.2f} x cold",
    "x_duckdb_write": "{:.2f}x DuckDB",
    "x_base_nightly": "{:.2f}x 90-day",
}


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
    """Generator arguments for a nominal size: days stay fixed, devices scale at the shape's density."""

    shape: str
    target: float  # nominal events; the lake holds devices x days x events_per_device_day
    days: int
    devices: int
    events_per_device_day: int
    seed: int = SEED
    start: dt.date = START

    @classmethod
    def for_target(cls, target: float, shape: str = "wide", days: int = REF_DAYS) -> LakeSpec:
        density = SHAPES[shape].events_per_device_day
        devices = max(10, round(target / (days * density)))
        per_day = max(1, round(target / (devices * days)))
        return cls(shape, target, days, devices, per_day)

    def over_days(self, days: int) -> LakeSpec:
        """The same fleet and daily volume over ``days`` days (for the window-length check)."""
        target = self.devices * self.events_per_device_day * days
        return LakeSpec(self.shape, target, days, self.devices, self.events_per_device_day)

    @property
    def name(self) -> str:
        """``wide-2M``, ``dense-20M``, ``wide-8.03M-365d``: shape, size and any other length."""
        days = "" if self.days == REF_DAYS else f"-{self.days}d"
        return f"{self.shape}-{human(self.target)}{days}"

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days)

    @property
    def last_day(self) -> dt.date:
        return self.end - dt.timedelta(days=1)

    def params(self) -> dict:
        """What the lake's content depends on, recorded beside it to decide on reuse."""
        return {
            "devices": self.devices,
            "days": self.days,
            "events_per_device_day": self.events_per_device_day,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "format": "parquet",
            GENERATOR_KEY: generator_digest(),
        }


def generator_digest() -> str:
    """A short hash of the generator's files (those that exist)."""
    digest = hashlib.sha256()
    for path in GENERATOR_FILES:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


MARKER = "_bench_lake.json"  # a leading '_' keeps it out of Spark's, pyarrow's and DuckDB's reads


@dataclass
class Lake:
    """A lake on disk and its ``_bench_lake.json``; ``generated``: the write, if this run did it."""

    spec: LakeSpec
    path: Path
    marker: dict
    generated: Measurement | None = None

    @property
    def fresh(self) -> bool:
        return self.generated is not None

    @property
    def out(self) -> Path:
        return BENCH / f"out-{self.spec.name}"

    def record(self, step: str, m: Measurement, events: int) -> None:
        """Keep a lake step's figures in the marker, so a run that reuses the lake can report them."""
        figures = {k: getattr(m, k) for k in ("seconds", "cpu_seconds", "peak_rss")}
        self.marker.setdefault("timings", {})[step] = {
            **figures,
            "events_per_s": round(events / m.seconds),
            "inner": m.inner,
            "layout": {k: v for k, v in m.extra.get("layout", {}).items() if k != "columns"},
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "load_average": os.getloadavg()[0],
        }
        (self.path / MARKER).write_text(json.dumps(self.marker, indent=2) + "\n")

    def recorded(self, step: str) -> Measurement | None:
        """A lake step's figures from the marker, or None if this lake never recorded them."""
        found = self.marker.get("timings", {}).get(step)
        if not found:
            return None
        figures = {k: found[k] for k in ("seconds", "cpu_seconds", "peak_rss")}
        m = Measurement(True, **figures, inner=f"(recorded {found['at'][:10]}) {found['inner']}".strip())
        if found.get("layout"):
            m.extra["layout"] = found["layout"]
        return m


def count_events(lake: Path) -> int:
    """Exact row count of a Parquet lake, from the files' footers."""
    import pyarrow.dataset as ds

    return ds.dataset(str(lake), format="parquet", partitioning="hive").count_rows()


def ensure_lake(spec: LakeSpec, env: dict[str, str], regenerate: bool = False) -> Lake:
    """The lake of ``spec`` under bench/, generated unless one with the same parameters exists.

    A lake written by another version of the generator is reused with a warning (writing 20M
    events takes a while); ``regenerate`` rewrites it.
    """
    path = BENCH / f"lake-{spec.name}"
    params = spec.params()
    found = json.loads((path / MARKER).read_text()) if (path / MARKER).is_file() else None
    same = found is not None and all(found.get(k) == v for k, v in params.items() if k != GENERATOR_KEY)
    if same and not regenerate:
        progress(f"lake-{spec.name}: reusing {path.relative_to(ROOT)}")
        if found.get(GENERATOR_KEY) != params[GENERATOR_KEY]:
            progress(
                f"lake-{spec.name}: warning: written by another version of the generator; "
                "pass --regenerate to rewrite it"
            )
        return Lake(spec, path, found)
    if path.exists():
        progress(f"lake-{spec.name}: {'regenerating' if same else 'parameters changed, regenerating'}")
        shutil.rmtree(path)
    lake = Lake(spec, path, params)
    lake.generated = generate_lake(lake, env)
    lake.generated.extra["layout"] = layout(path)
    lake.record("generate", lake.generated, count_events(path))
    return lake


def generate_lake(lake: Lake, env: dict[str, str]) -> Measurement:
    """Write the lake with fwpolicy's generator (``bench/make_lake.py``), timed like any step."""
    spec = lake.spec
    progress(
        f"lake-{spec.name}: generating {spec.devices} devices x {spec.days} days x "
        f"{spec.events_per_device_day} events per device-day"
    )
    cmd = [PY, str(BENCH / "make_lake.py"), "--output", str(lake.path), *generator_args(spec)]
    log_path = lake.out / "logs" / "generate.log"
    m = measure(cmd, log_path, env)
    if not m.ok:
        raise SystemExit(f"lake generation failed: {m.note}")
    m.inner = "job " + inner_time(log_path, r"written in ([\d.]+s)")
    progress(f"lake-{spec.name}: generated in {m.seconds:.1f}s")
    return m


def generator_args(spec: LakeSpec) -> list[str]:
    """The size and seed arguments ``make_lake.py`` and ``duckdb_lake.py`` share."""
    return [
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


def layout(lake: Path) -> dict:
    """Files, bytes and column names of a Parquet lake (its partition column included)."""
    import pyarrow.dataset as ds

    files = list(lake.rglob("*.parquet"))
    columns = ds.dataset(str(lake), format="parquet", partitioning="hive").schema.names
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files), "columns": columns}


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


def _is_copy(pid: int, ppid: int, commands: dict[int, list[str]]) -> bool:
    """Whether process ``pid`` is its parent's copy: a child with its parent's command line has
    not (yet) run a program of its own. The JVM starts helpers that way (``posix_spawn``), and
    for that moment the child shows all of the JVM's resident pages, which are the JVM's:
    counted twice, a 2.8 GiB run looked like 5.4 GiB. ``commands``: the sample's command lines."""
    parent = commands.get(ppid)
    return parent is not None and commands.get(pid) == parent


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
    # One plain JSON-lines file per application, as Spark 3.5 writes it (Spark 4 would compress
    # it and, with rolling on, put it in a folder of its own).
    conf = (
        f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={directory.as_uri()} "
        "--conf spark.eventLog.compress=false --conf spark.eventLog.rolling.enabled=false"
    )
    return {**env, "PYSPARK_SUBMIT_ARGS": f"{conf} pyspark-shell"}


def measure(
    cmd: list[str], log_path: Path, env: dict[str, str], poll: float = 0.1, spark: bool = True
) -> Measurement:
    """Run ``cmd`` to completion, polling the RSS and CPU time of it and all its descendants.

    A Spark process (``spark``) also leaves its event log beside ``log_path``
    (``<step>.events/``); ``Measurement.extra["spark"]`` summarises it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    events = log_path.with_suffix(".events")
    if spark:
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
            sample: list[tuple[int, int, int]] = []  # pid, parent pid, resident bytes
            commands: dict[int, list[str]] = {}
            for p in _tree(root):
                try:
                    with p.oneshot():
                        commands[p.pid] = p.cmdline()
                        sample.append((p.pid, p.ppid(), p.memory_info().rss))
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system
                    seen.setdefault(p.pid, p)
                except psutil.Error:
                    continue
            rss = sum(resident for pid, ppid, resident in sample if not _is_copy(pid, ppid, commands))
            peak = max(peak, rss)
            time.sleep(poll)
        seconds = time.monotonic() - began
    # A JVM may outlive its Python driver by a moment: let it go before the next step starts.
    _wait_gone([p for pid, p in seen.items() if pid != proc.pid])
    output = log_path.read_text(errors="replace")
    m = Measurement(proc.returncode == 0, seconds, sum(cpu.values()), peak)
    summary = spark_summary(events) if spark else {}
    if summary:
        m.extra["spark"] = summary
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
    cmd = [PY, "-m", "fwpolicy", "run", "--source", str(lake), "--source-format", "parquet"]
    cmd += ["--output", str(target), "--start", spec.start.isoformat(), "--end", spec.end.isoformat()]
    log_path = out / "logs" / "cold.log"
    m = measure(cmd, log_path, env)
    if m.ok:
        m.inner = "job " + inner_time(log_path, r"time taken:\s+([\d.]+s)")
    return m


def nightly_available() -> bool:
    try:
        return importlib.util.find_spec("fwpolicy.tasks.nightly") is not None
    except (ImportError, ValueError):
        return False


def step_nightly(spec: LakeSpec, lake: Path, out: Path, env: dict[str, str]) -> Measurement:
    """Back-fill the blocks for the day before the last one, then time the last day's run.

    The window is the whole lake (``--window-days`` = the lake's days), so the window-length
    check's lake measures a long window with the same code.
    """
    if not nightly_available():
        return Measurement(False, note="fwpolicy.tasks.nightly is not importable")
    target = out / "nightly"
    shutil.rmtree(target, ignore_errors=True)

    def nightly(day: dt.date, name: str) -> Measurement:
        cmd = [PY, "-m", "fwpolicy", "nightly", "--source", str(lake), "--source-format", "parquet"]
        cmd += ["--output", str(target), "--date", day.isoformat()]
        cmd += ["--window-days", str(spec.days), "--refresh-days", "2"]
        return measure(cmd, out / "logs" / f"{name}.log", env)

    backfill = nightly(spec.last_day - dt.timedelta(days=1), "nightly-backfill")
    if not backfill.ok:
        return Measurement(False, note=f"back-fill failed: {backfill.note}")
    progress(f"lake-{spec.name}: nightly back-fill took {backfill.seconds:.1f}s; now the steady-state run")
    m = nightly(spec.last_day, "nightly")
    m.extra["backfill_seconds"] = round(backfill.seconds, 2)
    if m.ok:
        m.inner = f"back-fill {backfill.seconds:.1f}s; " + nightly_work(out / "logs" / "nightly.log")
    return m


def nightly_work(log_path: Path) -> str:
    """What the steady-state night did, from its report: blocks built, state rows written."""
    built = inner_time(log_path, r"blocks built:\s+([^\n]+)")
    state = inner_time(log_path, r"state rows:\s+(\d+)")
    return f"blocks built: {built or '?'}; state rows written: {state or '?'}"


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

# Spark's simple type names in EVENT_SCHEMA -> DuckDB's. TimestampType is an instant: TIMESTAMPTZ.
DUCKDB_TYPES = {
    "timestamp": "TIMESTAMPTZ",
    "string": "VARCHAR",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
}


def write_event_schema(path: Path) -> Path:
    """EVENT_SCHEMA as ``[{name, type}]`` in DuckDB types, for ``duckdb_lake.py`` (no pyspark there)."""
    from fwpolicy.tasks.generate import EVENT_SCHEMA

    columns = []
    for f in EVENT_SCHEMA.fields:
        kind = f.dataType.simpleString()
        if kind not in DUCKDB_TYPES:
            raise SystemExit(f"bench: no DuckDB type for EVENT_SCHEMA column {f.name} ({kind}); add one")
        columns.append({"name": f.name, "type": DUCKDB_TYPES[kind]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(columns, indent=2) + "\n")
    return path


def step_duckdb_write(lake: Lake, env: dict[str, str]) -> Measurement:
    """DuckDB writing a lake of the same size and layout, into a scratch directory removed after.

    Its layout (files, bytes, columns) is kept beside the time, to show the two writes did the
    same job; different columns fail the step rather than compare unlike things.
    """
    out, spec = lake.out, lake.spec
    scratch = out / "duckdb-lake"
    shutil.rmtree(scratch, ignore_errors=True)
    schema = write_event_schema(out / "event_schema.json")
    cmd = [PY, str(BENCH / "duckdb_lake.py"), "--schema", str(schema), "--output", str(scratch)]
    log_path = out / "logs" / "duckdb-write.log"
    try:
        m = measure([*cmd, *generator_args(spec)], log_path, env, spark=False)
        if m.ok:
            m.inner = "write " + inner_time(log_path, r"written in ([\d.]+s)")
            m.extra["layout"] = written = layout(scratch)
            expected = layout(lake.path)["columns"]
            if written["columns"] != expected:
                m.ok, m.note = False, f"columns differ from the lake's: {written['columns']} != {expected}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return m


def lake_steps(lake: Lake, events: int, env: dict[str, str], lake_timing: bool) -> dict[str, Measurement]:
    """What writing the lake cost: the generator's figures and DuckDB's, measured or recorded.

    DuckDB writes a lake when fwpolicy's generator just did, so the two figures come from the same
    machine and moment (``--lake-timing`` makes it write for a reused lake too); otherwise the
    figures recorded with the lake are shown.
    """
    untimed = Measurement(False, note="not recorded: the lake predates timed writes (--regenerate)")
    steps = {"generate": lake.generated or lake.recorded("generate") or untimed}
    if lake.fresh or lake_timing:
        progress(f"lake-{lake.spec.name}: {LABELS['duckdb-write']} ...")
        m = step_duckdb_write(lake, env)
        if m.ok:
            lake.record("duckdb-write", m, events)
            progress(f"lake-{lake.spec.name}: {LABELS['duckdb-write']}: {m.seconds:.1f}s")
        steps["duckdb-write"] = m
    else:
        untimed = Measurement(False, note="not recorded for this reused lake (--lake-timing)")
        steps["duckdb-write"] = lake.recorded("duckdb-write") or untimed
    return steps


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


def compare(spec: LakeSpec, out: Path, ran: set[str]) -> dict:
    """Do fwpolicy, DuckDB and the naive port agree row for row? (And the nightly with fwpolicy.)

    Only the steps in ``ran`` are compared: a skipped step's output may be left from another run.
    """
    peers = [name for name in ("duckdb", "naive") if name in ran]
    results = {
        "fwpolicy": policy_partition(out / "run", spec.end),
        "duckdb": parquet_rows(out / "duckdb.parquet") if "duckdb" in ran else None,
        "naive": parquet_rows(out / "naive") if "naive" in ran else None,
    }
    missing = [name for name in ("fwpolicy", *peers) if results[name] is None]
    verdict: dict = {"rows": {k: (len(v) if v is not None else None) for k, v in results.items()}}
    if missing:
        verdict.update(identical=False, detail=f"no result from {', '.join(missing)}")
    elif not peers:
        verdict.update(identical=None, detail="DuckDB and the naive port skipped")
    else:
        ref = normalized(results["fwpolicy"])
        diffs = {}
        for name in peers:
            other = normalized(results[name])
            keys = sorted(k for k in ref.keys() | other.keys() if ref.get(k) != other.get(k))
            if keys:
                diffs[name] = {"groups": len(keys), "first": [list(k) for k in keys[:3]]}
        skipped = [name for name in ("duckdb", "naive") if name not in peers]
        note = f"{len(ref)} rows each" + (f"; {' and '.join(skipped)} skipped" if skipped else "")
        verdict.update(identical=not diffs, detail=diffs or note)
    nightly = policy_partition(out / "nightly", spec.end) if "nightly" in ran else None
    if nightly is None or results["fwpolicy"] is None:
        verdict["nightly_equals_cold"] = None
    else:
        verdict["nightly_equals_cold"] = normalized(nightly) == normalized(results["fwpolicy"])
    return verdict


# ----------------------------------------------------------------------------------------------
# Targets and the cost of a million events
# ----------------------------------------------------------------------------------------------


def seconds_of(result: dict | None, step: str) -> float | None:
    m = (result or {}).get("steps", {}).get(step)
    return m["seconds"] if m and m["ok"] else None


def over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def metric(result: dict, step: str, name: str, by_name: dict[str, dict]) -> float | None:
    """The figure ``name`` (a key of METRICS) of ``step`` on one lake; None if not measured."""
    m = result["steps"][step]
    if name == "seconds":
        return seconds_of(result, step)
    if name == "peak_rss_gib":
        return m["peak_rss"] / 2**30 if m["ok"] and m["peak_rss"] else None
    if name == "x_cold":
        return over(seconds_of(result, step), seconds_of(result, "cold"))
    if name == "x_duckdb_write":
        return over(seconds_of(result, step), seconds_of(result, "duckdb-write"))
    if name == "x_base_nightly":  # the window-length check: against the base lake's 90-day nightly
        return over(seconds_of(result, step), seconds_of(by_name.get(result.get("base", "")), "nightly"))
    raise ValueError(f"unknown metric {name!r}")


def evaluate(results: list[dict]) -> None:
    """Add to each lake's result the targets that apply to it, with their figure and verdict."""
    by_name = {r["name"]: r for r in results}
    for result in results:
        checks = []
        for t in TARGETS:
            if t.applies(result):
                value = metric(result, t.step, t.metric, by_name)
                shown = "" if value is None else METRICS[t.metric].format(value)
                checks.append({"step": t.step, "goal": t.goal, "value": value, "shown": shown})
                checks[-1]["status"] = t.status(value)
        result["targets"] = checks


def cost_per_million(results: list[dict]) -> dict[str, dict]:
    """Per shape, a least-squares line through its cold runs: fixed seconds + seconds per million.

    A line that fits all sizes says the cost is linear in the events; the peak RSS range beside
    it says whether memory stays flat as they grow.
    """
    lines = {}
    for shape in SHAPES:
        runs = [r for r in results if r["shape"] == shape and seconds_of(r, "cold") is not None]
        if not runs:
            continue
        xs = [r["events"] / 1e6 for r in runs]
        ys = [seconds_of(r, "cold") for r in runs]
        rss = [r["steps"]["cold"]["peak_rss"] or 0 for r in runs]
        line = {"lakes": [r["name"] for r in runs], "rss_gib": [min(rss) / 2**30, max(rss) / 2**30]}
        if len(set(xs)) >= 2:
            slope, fixed = statistics.linear_regression(xs, ys)
            worst = max(abs(y - (fixed + slope * x)) / y for x, y in zip(xs, ys, strict=True))
            line.update(fixed_s=fixed, per_million_s=slope, worst_off=worst)
        else:
            line.update(seconds=ys[0], millions=xs[0])
        lines[shape] = line
    return lines


def cost_text(shape: str, line: dict) -> str:
    lakes = ", ".join(line["lakes"])
    rss = "{:.2f}-{:.2f} GiB".format(*line["rss_gib"])
    if "per_million_s" not in line:
        return (
            f"  {shape}: one size only ({lakes}: {line['seconds']:.1f} s for {line['millions']:.2f}M "
            f"events; a line needs two); cold peak RSS {rss}"
        )
    sign = "-" if line["per_million_s"] < 0 else "+"
    return (
        f"  {shape}: {line['fixed_s']:.1f} s {sign} {abs(line['per_million_s']):.2f} s per million events "
        f"({lakes}; farthest run {line['worst_off']:.0%} off the line); cold peak RSS {rss}"
    )


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def gib(n: int | None) -> str:
    return "" if not n else f"{n / 2**30:.2f} GiB"


def ratios(steps: dict[str, Measurement], attr: str = "seconds") -> dict[str, float | None]:
    """``attr`` (seconds or cpu_seconds) of each query step over the cold run's (None if missing)."""
    cold = getattr(steps["cold"], attr) if "cold" in steps and steps["cold"].ok else None
    return {
        s: (getattr(m, attr) / cold if cold and m.ok else None) for s, m in steps.items() if s in QUERY_STEPS
    }


def size_note(found: dict | None) -> str:
    return f"{found['files']:,} files, {found['bytes'] / 2**20:,.0f} MiB" if found else ""


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
    "value",
    "",
    "notes",
]
RIGHT = {1, 3, 4, 5, 6, 7, 8, 10}  # right-aligned columns


def ratio_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def step_cells(result: dict, step: str) -> list[str]:
    """The measured cells of one step's row: label to CPU x cold, and its notes."""
    m = result["steps"][step]
    if not m["ok"]:
        note = "skipped" if m["note"] == "skipped" else f"n/a: {m['note']}"
        return [LABELS[step], "n/a", "", "", "", "", "", note]
    notes = ", ".join(n for n in (m["inner"], size_note(m["extra"].get("layout"))) if n)
    return [
        LABELS[step],
        f"{m['seconds']:.1f}",
        f"{result['events'] / m['seconds']:,.0f}",
        f"{m['cpu_seconds']:.0f}",
        gib(m["peak_rss"]),
        ratio_cell(result["ratios"].get(step)),
        ratio_cell(result["cpu_ratios"].get(step)),
        notes,
    ]


def lake_rows(result: dict) -> list[list[str]]:
    """One row per step; a step with several targets gets one more row per extra target."""
    rows = []
    for step in result["steps"]:
        *cells, notes = step_cells(result, step)
        targets = [t for t in result["targets"] if t["step"] == step] or [None]
        for i, t in enumerate(targets):
            shown = [t["goal"], t["shown"], t["status"]] if t else ["", "", ""]
            measured = cells if i == 0 else [""] * len(cells)
            rows.append(["", "", *measured, *shown, notes if i == 0 else ""])
    rows[0][:2] = [f"lake-{result['name']}", f"{result['events']:,}"]
    return rows


def lake_footer(result: dict) -> str:
    """The line under a lake's rows: what its role checks (and, for a main lake, same answers?)."""
    if result["role"] == "scale":
        return "  scale check: the cold run and the floor only (cost per million events below)"
    if result["role"] == "window":
        return (
            f"  window-length check: the nightly over a {result['days']}-day window, "
            f"against lake-{result['base']}'s {REF_DAYS}-day nightly"
        )
    check = result["check"]
    identical = {True: "yes", False: "no", None: "n/a"}[check["identical"]]
    nightly = {True: "yes", False: "NO", None: "n/a"}[check["nightly_equals_cold"]]
    return (
        f"  results identical: {identical} "
        f"(fwpolicy = DuckDB = naive port: {check['detail']}); nightly = cold: {nightly}"
    )


def spark_line(m: dict) -> str:
    """One line on where a Spark step's time went, from its event log summary."""
    s = m["extra"]["spark"]
    longest = ", ".join(f"{q['what'].split(' at ')[0]} {q['s']:.0f}s" for q in s["top_queries_by_time"][:2])
    return (
        f"{s['jobs']} jobs, {s['stages']} stages, {s['tasks']} tasks; task CPU {s['task_cpu_s']:.0f}s "
        f"of {m['cpu_seconds']:.0f}s process CPU (GC {s['gc_s']:.0f}s); shuffle {s['shuffle_mib']:.0f} MiB, "
        f"spill {s['spill_mib']:.0f} MiB; longest queries: {longest}"
    )


def table(results: list[dict]) -> list[str]:
    """The aligned table: every lake's rows, each lake followed by its footer."""
    blocks = [(lake_rows(r), lake_footer(r)) for r in results]
    rows = [row for block, _ in blocks for row in block]
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        padded = (
            str(c).rjust(w) if i in RIGHT else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    out = [line(HEADER), line(["-" * w for w in widths])]
    for block, footer in blocks:
        out.extend(line(r) for r in block)
        out.append(footer)
    return out


def render(results: list[dict], costs: dict[str, dict], host: dict) -> str:
    dirty = " + uncommitted lib/ changes" if host["code"]["lib_dirty"] else ""
    out = [
        f"fwpolicy bench: {host['cpus']} cores, {host['memory_gib']:.1f} GiB RAM, "
        f"Spark local[*] (fresh JVM per step), DuckDB default threads; "
        f"load average {host['load_start']:.1f} at start, {host['load_end']:.1f} at end; "
        f"fwpolicy {host['code']['commit']}{dirty}",
        *table(results),
        "x cold = step seconds / cold seconds; CPU x cold = the same for CPU seconds; seconds include "
        "process and JVM start-up; peak RSS is the whole process tree (driver, JVM, Python workers); "
        "'(recorded)': the figure stored with a reused lake when it was written.",
    ]
    if costs:
        out.append("cost per million events (least squares through each shape's cold runs):")
        out.extend(cost_text(shape, line) for shape, line in costs.items())
    details = [
        f"  lake-{r['name']} {LABELS[step]}: {spark_line(m)}"
        for r in results
        for step, m in r["steps"].items()
        if m["extra"].get("spark")
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


@dataclass(frozen=True)
class Plan:
    """One lake and what runs on it: ``role`` is a key of ROLE_STEPS; ``base`` the lake compared with."""

    spec: LakeSpec
    role: str = "main"
    base: LakeSpec | None = None


def plan(args: argparse.Namespace) -> list[Plan]:
    """The lakes of this run: shapes x sizes, then the window-length and scale checks."""
    if args.quick:
        return [Plan(LakeSpec.for_target(QUICK_EVENTS, "wide", QUICK_DAYS))]
    plans = [Plan(LakeSpec.for_target(size, shape)) for shape in args.shapes for size in args.sizes]
    specs = [p.spec for p in plans]
    if args.nightly_long:
        base = LakeSpec.for_target(LONG_WINDOW_BASE, "wide")
        if base in specs and "nightly" not in args.skip:
            plans.append(Plan(base.over_days(args.nightly_long), "window", base))
        else:
            progress(
                f"--nightly-long: no window-length check, it compares with lake-{base.name}'s nightly "
                "(needs wide in --shapes, 2e6 in --sizes and the nightly not skipped)"
            )
    if args.scale:
        scale = LakeSpec.for_target(args.scale, "dense")
        plans += [] if scale in specs else [Plan(scale, "scale")]
    return plans


def run_steps(plan_: Plan, lake: Lake, env: dict[str, str], args: argparse.Namespace) -> dict:
    """The query steps of the lake's role (``--skip`` ones marked skipped), each ``--repeat`` times."""
    name, steps = plan_.spec.name, {}
    for step in ROLE_STEPS[plan_.role]:
        if step in args.skip:
            steps[step] = Measurement(False, note="skipped")
            continue
        progress(f"lake-{name}: {LABELS[step]} ...")
        m = repeated(args.repeat, STEP_FUNCTIONS[step], plan_.spec, lake.path, lake.out, env)
        steps[step] = m
        if m.ok:
            progress(f"lake-{name}: {LABELS[step]}: {m.seconds:.1f}s, peak {gib(m.peak_rss)}")
        else:
            progress(f"lake-{name}: {LABELS[step]}: n/a ({m.note}); logs in {lake.out / 'logs'}")
    return steps


def bench_lake(plan_: Plan, env: dict[str, str], args: argparse.Namespace) -> dict:
    """Build or reuse one lake, time its write, run its role's steps, check the answers."""
    spec = plan_.spec
    lake = ensure_lake(spec, env, args.regenerate)
    events = count_events(lake.path)
    steps = lake_steps(lake, events, env, args.lake_timing)
    size = warm_page_cache(lake.path)
    progress(f"lake-{spec.name}: {events:,} events, {size / 2**20:,.0f} MiB of Parquet (page cache warmed)")
    steps.update(run_steps(plan_, lake, env, args))
    ran = {s for s, m in steps.items() if m.ok}
    result = {
        "name": spec.name,
        "shape": spec.shape,
        "role": plan_.role,
        "base": plan_.base.name if plan_.base else None,
        "lake": str(lake.path.relative_to(ROOT)),
        "params": spec.params(),
        "target_events": spec.target,
        "days": spec.days,
        "window": [spec.start.isoformat(), spec.end.isoformat()],
        "events": events,
        "parquet_bytes": size,
        "steps": {k: asdict(v) for k, v in steps.items()},
        "ratios": ratios(steps),
        "cpu_ratios": ratios(steps, "cpu_seconds"),
    }
    if plan_.role == "main":
        progress(f"lake-{spec.name}: comparing results")
        result["check"] = compare(spec, lake.out, ran)
    return result


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


def parse_shapes(text: str) -> list[str]:
    shapes = [s.strip() for s in text.split(",") if s.strip()]
    if not shapes or any(s not in SHAPES for s in shapes):
        raise argparse.ArgumentTypeError(f"shapes are a comma-separated list of {', '.join(SHAPES)}")
    return list(dict.fromkeys(shapes))


def parse_scale(text: str) -> float:
    try:
        size = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (e.g. 1e8, or 0 for none)") from None
    if size != 0 and size < 1000:
        raise argparse.ArgumentTypeError("an event count of at least 1000, or 0 for no scale check")
    return size


def parse_days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if days != 0 and days < 2:
        raise argparse.ArgumentTypeError("at least 2 days (a back-fill night and a timed one), or 0 for none")
    return days


def parse_steps(text: str) -> set[str]:
    steps = {s.strip() for s in text.split(",") if s.strip()}
    unknown = (steps - set(QUERY_STEPS)) | (steps & {"cold"})
    if unknown:
        raise argparse.ArgumentTypeError(f"can skip only {', '.join(s for s in QUERY_STEPS if s != 'cold')}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark fwpolicy against DuckDB, a naive PySpark port and a plain scan.",
    )
    p.add_argument(
        "--shapes",
        type=parse_shapes,
        default=list(SHAPES),
        help="comma-separated lake shapes (default: wide,dense): "
        + "; ".join(
            f"{s.name}: {s.events_per_device_day:.0f} events per device-day, {s.about}"
            for s in SHAPES.values()
        ),
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated event counts, e.g. 2e6,5e6,20e6 (default: 2e6,20e6); each lake spans "
        f"{REF_DAYS} days and devices scale with the size at the shape's density",
    )
    p.add_argument(
        "--scale",
        type=parse_scale,
        default=None,
        help=f"scale check: one dense lake of this many events, cold run and floor only (default: "
        f"{human(SCALE_EVENTS)}; 0 for none)",
    )
    p.add_argument(
        "--nightly-long",
        type=parse_days,
        default=LONG_WINDOW_DAYS,
        metavar="DAYS",
        help=f"window-length check: the nightly over a wide lake of DAYS days at the daily volume of "
        f"the wide {human(LONG_WINDOW_BASE)} lake, against its {REF_DAYS}-day nightly "
        f"(default: {LONG_WINDOW_DAYS}; 0 for none)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"one tiny wide lake (~{human(QUICK_EVENTS)} events over {QUICK_DAYS} days), no scale or "
        "window-length check: a smoke test",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per step; the median is reported")
    p.add_argument(
        "--regenerate", action="store_true", help="rewrite the lakes even if their parameters match"
    )
    p.add_argument(
        "--lake-timing",
        action="store_true",
        help="time DuckDB's write of reused lakes too (by default only of lakes generated by this run)",
    )
    p.add_argument("--skip", type=parse_steps, default=set(), help="steps to leave out, e.g. naive")
    p.add_argument("--results", type=Path, default=BENCH / "results" / "latest.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scale is None:
        args.scale = 0 if args.quick else SCALE_EVENTS
    env = {**os.environ, "PYSPARK_PYTHON": PY, "PYTHONUNBUFFERED": "1"}
    host = {
        "cpus": os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "load_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "code": code_version(),
    }
    results = [bench_lake(p, env, args) for p in plan(args)]
    evaluate(results)
    costs = cost_per_million(results)
    host["load_end"] = os.getloadavg()[0]
    text = render(results, costs, host)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": host,
        "shapes": {s.name: asdict(s) for s in SHAPES.values()},
        "targets": [asdict(t) for t in TARGETS],
        "lakes": results,
        "cost_per_million_events": costs,
        "table": text,
    }
    args.results.write_text(json.dumps(report, indent=2, default=str) + "\n")
    progress(f"wrote {args.results}")
    return 0 if all(passed(r) for r in results) else 1


def passed(result: dict) -> bool:
    """Did the lake's cold run work, and (on a main lake) did every engine give the same answer?"""
    cold = result["steps"].get("cold")
    if cold is not None and not cold["ok"]:
        return False
    return result.get("check", {}).get("identical") is not False


if __name__ == "__main__":
    sys.exit(main())
