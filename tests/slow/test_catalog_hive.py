"""``--catalog`` with the embedded session's Hive metastore: one process registers the tables
(``run`` and ``ingest``), another, started later, queries them by name. Slow: three JVMs."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO, TESTS


def test_tables_registered_by_one_process_are_queried_by_name_in_the_next(tmp_path):
    env = {**os.environ, "FWPOLICY_METASTORE": str(tmp_path / "metastore")}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    lake, out, bronze = tmp_path / "lake", tmp_path / "out", tmp_path / "bronze"

    def fwpolicy(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fwpolicy", "-q", *argv],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    made = fwpolicy("generate", "--output", str(lake), "--devices", "6", "--days", "2")
    assert made.returncode == 0, made.stderr[-2000:]
    done = fwpolicy(
        "run", "--source", str(lake), "--source-format", "parquet", "--output", str(out),
        "--start", "2026-08-01", "--end", "2026-08-03", "--catalog", "fw_bi",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "5 tables registered" in done.stdout
    ingested = fwpolicy(
        "ingest",
        "--source",
        str(TESTS / "fixtures" / "ingest"),
        "--output",
        str(bronze),
        "--catalog",
        "fw_bi",
    )
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    query = (
        "from fwpolicy.io.session import get_spark; s = get_spark(hive=True); "
        "print('tables', sorted(r.tableName for r in s.sql('SHOW TABLES IN fw_bi').collect())); "
        "print('rows', s.sql('SELECT count(*) AS n FROM fw_bi.firewall_policy').first().n); "
        "print('path', s.read.format('delta').load(" + repr(str(out / "firewall_policy")) + ").count())"
    )
    read = subprocess.run(
        [sys.executable, "-c", query], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert read.returncode == 0, read.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in read.stdout.splitlines() if " " in line)
    assert "firewall_policy" in lines["tables"] and "device_network_events" in lines["tables"]
    assert int(lines["rows"]) == int(lines["path"]) > 0
    assert not (REPO / "metastore_db").exists() and not (tmp_path / "derby.log").exists()
