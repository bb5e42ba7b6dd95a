"""``make package`` builds a wheel that spark-submit can run the job from.

The wheel is built into ``tmp_path`` from a copy of the project (the repository is not written),
its contents are checked, then ``jobs/firewall_policy.py`` runs under ``spark-submit
--py-files <wheel>`` with a Python interpreter that has the dependencies (pyspark, delta-spark,
PyYAML) but not fwpolicy, from a working directory outside the repository and with no
``PYTHONPATH``: the job can only import fwpolicy from the wheel, as on a cluster. Its output
must equal what ``seed.firewall_policy`` gives in-process.

The spark-submit helpers and the tiny input are in ``tests/submit.py``, shared with
``test_standalone_cluster.py``. Both tests are in the slow tier: ``python -m build`` fetches
its build backend from PyPI, and each starts a second JVM.
"""

from __future__ import annotations

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
from fwpolicy.io.source import window_filter
from fwpolicy.query.seed import firewall_policy

from helpers import REPO, events_df
from submit import (
    END,
    START,
    TINY_ROWS,
    canonical,
    policy_table,
    spark_submit,
    submitted_properties,
    write_tiny_source,
)

VERSION = "0.1.0"


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
