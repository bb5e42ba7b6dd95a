"""``firewall_policy`` read without Spark: BI tools outside Spark can use the table.

The pipeline writes a policy window twice, so a reader must follow the Delta log: the files
of the first write are still on disk and must not be read.
Then:

* ``deltalake`` (delta-rs, no JVM) reads the table through its Delta log;
* DuckDB reads the Parquet files of the current snapshot, as ``deltalake`` lists them (DuckDB's
  own ``delta`` extension is downloaded on first use, which an offline machine cannot do), with
  ``window_end`` taken from the Hive-style partition folder;

and both give exactly the rows Spark reads, column for column. Two runs and two other engines:
in the slow tier (``make slow-test``).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import unquote, urlparse

import pytest

from fwpolicy.config import PolicyConfig, RunSpec
from fwpolicy.query.seed import POLICY_COLUMNS
from fwpolicy.tasks.run import POLICY_TABLE, run

from helpers import DAY, NOON, event, events_df, server

pytestmark = pytest.mark.slow

deltalake = pytest.importorskip("deltalake")
duckdb = pytest.importorskip("duckdb")

DAY3 = DAY + dt.timedelta(days=2)
SVC = r"C:\Windows\System32\svchost.exe"


def canonical(value):
    """One representation per value across engines: lists, UTC-naive datetimes, dates."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value  # Spark and the readers below run in UTC (the session and TZ are UTC)
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays from DuckDB
        return canonical(value.tolist())
    return value


def rows_of(dicts) -> list[tuple]:
    return sorted(
        (tuple(canonical(d[c]) for c in POLICY_COLUMNS) for d in dicts),
        key=lambda t: (str(t[POLICY_COLUMNS.index("window_end")]), t[0], t[1]),
    )


@pytest.fixture(scope="module")
def policy_path(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    src = root / "src"
    rows = [
        event(),
        event(DeviceId="dev-2", RemoteIP="20.1.1.2"),
        event(
            Timestamp=NOON + dt.timedelta(days=1), InitiatingProcessFolderPath=r"C:\Users\bob\AppData\x.exe"
        ),
        *server(SVC, 3389, "198.51.100.9"),
    ]
    events_df(spark, rows).coalesce(1).write.parquet(str(src))
    out = root / "out"
    for _ in range(2):  # the second run replaces the window: its first files become stale
        run(RunSpec(str(src), "parquet", str(out), DAY, DAY3, PolicyConfig()), spark)
    return out / POLICY_TABLE


def local_path(uri: str) -> str:
    return unquote(urlparse(uri).path) if uri.startswith("file:") else uri


def test_deltalake_and_duckdb_read_what_spark_reads(spark, policy_path):
    spark_rows = rows_of(
        r.asDict(recursive=True) for r in spark.read.format("delta").load(str(policy_path)).collect()
    )
    assert len(spark_rows) == 3  # svchost in; app and the user's program out

    table = deltalake.DeltaTable(str(policy_path))
    # create with the first rows (one CREATE TABLE AS SELECT), rewrite: the first files are stale
    assert table.version() == 1
    arrow = table.to_pyarrow_table()
    assert set(arrow.column_names) >= set(POLICY_COLUMNS)
    assert rows_of(arrow.to_pylist()) == spark_rows

    files = [local_path(u) for u in table.file_uris()]
    all_files = [str(p) for p in policy_path.rglob("*.parquet")]
    assert len(files) < len(all_files)  # the replaced partition's old files are still on disk
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rel = con.sql(
        "SELECT * REPLACE (CAST(window_end AS DATE) AS window_end) FROM read_parquet($files, hive_partitioning = true)",
        params={"files": files},
    )
    duck = [dict(zip(rel.columns, values, strict=True)) for values in rel.fetchall()]
    assert rows_of(duck) == spark_rows
