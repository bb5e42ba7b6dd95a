"""A class-data-sharing archive for the embedded session's JVM: a cold run starts warmer.

A ``python -m fwpolicy`` process on ``local[*]`` starts a fresh JVM, which loads, verifies and
links some twenty thousand classes of Spark, Hadoop and Scala before and while it runs the job.
On a 2-core laptop that is about three seconds of every run (a 2M-event cold run: 29 s, 26 s
with the archive; Spark's bare scan: 8.5 s, 5.5 s). The JVM can instead map those classes,
already parsed and verified, from an archive written once (JDK's dynamic CDS,
``-XX:ArchiveClassesAtExit`` / ``-XX:SharedArchiveFile``).

``make run`` and ``make bench`` build the archive (``make archive``: ``build`` below), once: one
process runs ``generate``, ``run``, ``nightly`` and ``export`` on a small lake in a temporary
folder, and its JVM writes the classes it loaded when it exits. The archive lives beside the
Delta jars in the user's cache, keyed by the Java binary and the pyspark and delta-spark
versions; a change of any of them simply finds no archive (and the JVM itself ignores an
archive whose class path no longer matches). Without an archive nothing changes but the
start-up time. Clusters and ``spark-submit`` are untouched: only the embedded session reads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

log = logging.getLogger(__name__)

# Silence the JVM's notes on classes it cannot archive (signed jars, generated classes) and on
# an archive it must ignore: either way the run goes on, only slower to start.
QUIET = ("-Xshare:auto", "-Xlog:cds=off", "-Xlog:cds+dynamic=off", "-Xlog:class+path=off")


def java_binary() -> Path | None:
    """The ``java`` that ``spark-submit`` starts: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).exists() else None


def archive_path() -> Path | None:
    """Where the archive for this Java, pyspark and delta-spark is (or would be); None without Java."""
    java = java_binary()
    if java is None:
        return None
    stat = java.stat()
    key = f"{java}|{stat.st_size}|{stat.st_mtime_ns}|{version('pyspark')}|{version('delta-spark')}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "fwpolicy" / "jvm" / f"classes-{digest}.jsa"


def java_options() -> list[str]:
    """JVM options that map the archive, or [] when there is none (or its path has a space,
    which ``spark.driver.extraJavaOptions`` would split)."""
    path = archive_path()
    if path is None or not path.is_file() or any(c.isspace() for c in str(path)):
        return []
    return [f"-XX:SharedArchiveFile={path}", *QUIET]


def build(force: bool = False) -> Path | None:
    """Write the archive (``make archive``): a training process's JVM dumps its classes at exit.

    The archive is written under a temporary name and renamed when complete, so an interrupted
    build leaves nothing a run would map. Returns its path, or None when it could not be built
    (no Java, or a JVM without dynamic archiving); a run then just starts as before."""
    path = archive_path()
    if path is None:
        log.warning("no java found: the embedded session's class archive is not built")
        return None
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="fwpolicy-classes-") as work:
        dump = f"-XX:+UseParallelGC -XX:ArchiveClassesAtExit={partial} {QUIET[1]}"
        env = {**os.environ, "FWPOLICY_DRIVER_JAVA_OPTIONS": dump}
        env.pop("PYSPARK_SUBMIT_ARGS", None)
        done = subprocess.run(
            [sys.executable, "-m", "fwpolicy.io.class_archive", "--train", work],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        log.warning("the class archive was not built (the session starts without it): %s", " | ".join(tail))
        return None
    partial.replace(path)
    return path


def train(work: Path) -> None:
    """The training workload: each command a user runs, once, on a small lake, in one JVM."""
    from fwpolicy.cli import main

    lake, out = work / "lake", work / "out"
    source = ["--source", str(lake), "--source-format", "parquet"]
    steps = [
        ["generate", "--output", str(lake), "--devices", "12", "--days", "3"],
        ["run", *source, "--output", str(out), "--start", "2026-08-01", "--end", "2026-08-04"],
        ["nightly", *source, "--output", str(work / "night"), "--date", "2026-08-03", "--window-days", "3"],
        ["export", "--output", str(out), "--window-end", "2026-08-04", "--format", "intune"],
    ]
    for step in steps:
        if main(["--quiet", *step]) != 0:
            raise SystemExit(f"training step failed: {' '.join(step)}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--train":
        train(Path(sys.argv[2]))
    else:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        force = "--force" in sys.argv
        existing = archive_path()
        if force or existing is None or not existing.is_file():
            print("building the JVM class archive (once; about a minute) ...", flush=True)
        print(f"class archive: {build(force) or 'not built; embedded sessions start without it'}")
