"""Write result tables as Delta, one window per partition, replaced atomically on rerun.

Delta's ``replaceWhere`` swaps the rows of one ``window_end`` partition in a single commit:
readers see either the old partition or the new one, a failed (or killed) run leaves the
previous commit in place, and other windows are never touched. ``replaceWhere`` takes a SQL
predicate string; it is built here from a ``datetime.date`` (ISO text of a parsed date), never
from user text.

Ownership. Every table fwpolicy creates carries the Delta table property
``fwpolicy.owner = 'fwpolicy'``, set in the commit that creates the table (an empty table with
the schema of the first write, made by ``DeltaTable.createIfNotExists``; then the data commit).
Delta 3.3 rejects unknown ``delta.*`` keys passed as writer options and ignores other writer
options as properties, so the creation commit is the one place the mark can be set atomically.
Before any write, ``ensure_owned`` refuses a path that holds something fwpolicy did not create
(a plain directory of files, or a Delta table without the mark) with a ``ConfigError``, which
the CLI reports with exit code 2. A table on purpose adopted (say, one written before the mark
existed) is marked with ``mark_owned`` or the SQL statement its error message shows.

Concurrency. Two runs on different windows write disjoint partitions, which Delta's optimistic
concurrency lets both commit; a commit conflict (for instance two runs creating the same new
table at once) is retried a bounded number of times: every write here is idempotent (a
partition replacement, or an append whose failed commit added nothing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from fwpolicy.config import ConfigError

log = logging.getLogger(__name__)

PARTITION_COLUMN = "window_end"
OWNER_PROPERTY = "fwpolicy.owner"
OWNER = "fwpolicy"
COMMIT_ATTEMPTS = 5  # a conflicting commit is retried up to this many times in all
_DELTA_LOG = "_delta_log"
# Delta's commit-conflict exceptions (Java class names and error classes, as their text shows).
_CONFLICT_MARKERS = (
    "io.delta.exceptions.Concurrent",
    "io.delta.exceptions.MetadataChangedException",
    "io.delta.exceptions.ProtocolChangedException",
    "io.delta.exceptions.DeltaConcurrentModificationException",
    "DELTA_CONCURRENT_",
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
)

R = TypeVar("R")


def table_path(output_root: str, name: str) -> str:
    """Every table of a run lives under one output root, named after what it holds."""
    return (
        os.path.join(output_root, name) if "://" not in output_root else f"{output_root.rstrip('/')}/{name}"
    )


# ---------------------------------------------------------------------------------- ownership


def _filesystem(spark: SparkSession, path: str):
    """The Hadoop FileSystem of ``path`` and its Path (local, ``s3a://``, ``abfss://`` alike)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def _is_delta_table(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` is a Delta table now, even if another process just created it.

    ``DeltaTable.isDeltaTable`` answers from the session's cached log of the path, which does
    not see a table that another process created after this session first looked (a run
    checks its outputs before work, and a concurrent run may create them meanwhile). Opening
    the path for a read brings the cached log up to date first.
    """
    from delta.tables import DeltaTable

    with contextlib.suppress(Exception):  # not a Delta table (yet): isDeltaTable says so below
        spark.read.format("delta").load(path)
    return bool(DeltaTable.isDeltaTable(spark, path))


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    """The table properties of the Delta table at ``path`` (commit metadata, no data read)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).detail().select("properties").first()  # one row
    return dict(row["properties"] or {}) if row else {}


def table_state(spark: SparkSession, path: str) -> str:
    """``'absent'``, ``'owned'``, ``'foreign_delta'`` (a Delta table without fwpolicy's mark)
    or ``'not_delta'`` (a file, or a directory with files that are not a Delta table).

    An empty directory, or one holding only an empty ``_delta_log``, counts as absent.
    """
    fs, hpath = _filesystem(spark, path)
    if not fs.exists(hpath):
        return "absent"
    if _is_delta_table(spark, path):
        owner = table_properties(spark, path).get(OWNER_PROPERTY)
        return "owned" if owner == OWNER else "foreign_delta"
    if not fs.getFileStatus(hpath).isDirectory():
        return "not_delta"
    names = [status.getPath().getName() for status in fs.listStatus(hpath)]
    return "absent" if all(n == _DELTA_LOG for n in names) else "not_delta"


def refusal(path: str, state: str) -> ConfigError:
    what = "a Delta table without fwpolicy's mark" if state == "foreign_delta" else "not a Delta table"
    return ConfigError(
        f"refusing to overwrite a table fwpolicy did not create: {path} ({what}); move it away or "
        f"choose another --output (to adopt a Delta table on purpose: ALTER TABLE delta.`{path}` "
        f"SET TBLPROPERTIES ('{OWNER_PROPERTY}' = '{OWNER}'))"
    )


def ensure_owned(spark: SparkSession, path: str) -> bool:
    """True if ``path`` is a table fwpolicy created, False if nothing is there yet.

    Raises ``ConfigError`` when the path holds anything else; call it before any work so a
    refused run writes nothing.
    """
    state = table_state(spark, path)
    if state in ("foreign_delta", "not_delta"):
        raise refusal(path, state)
    return state == "owned"


def mark_owned(spark: SparkSession, path: str) -> None:
    """Mark the existing Delta table at ``path`` as fwpolicy's (a deliberate adoption)."""
    if not _is_delta_table(spark, path):
        raise ConfigError(f"not a Delta table: {path}")
    quoted = path.replace("`", "``")
    spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ('{OWNER_PROPERTY}' = '{OWNER}')")


def _as_nullable(t: T.DataType) -> T.DataType:
    """The schema Delta stores for a DataFrame write: every field, element and value nullable."""
    if isinstance(t, T.StructType):
        return T.StructType([T.StructField(f.name, _as_nullable(f.dataType), True, f.metadata) for f in t])
    if isinstance(t, T.ArrayType):
        return T.ArrayType(_as_nullable(t.elementType), True)
    if isinstance(t, T.MapType):
        return T.MapType(_as_nullable(t.keyType), _as_nullable(t.valueType), True)
    return t


def create_owned(
    spark: SparkSession, path: str, schema: T.StructType, partition_by: Sequence[str] = ()
) -> None:
    """Create an empty Delta table at ``path`` carrying fwpolicy's mark, in one commit.

    Two runs creating the same table at once: one commit wins, the other finds the table the
    winner made (marked) and goes on.
    """
    from delta.tables import DeltaTable

    # A relative location is taken for a table name (and refused, after creating the log):
    # hand Delta the qualified path (file:/abs/..., s3a://...).
    fs, hpath = _filesystem(spark, path)
    location = fs.makeQualified(hpath).toString()
    builder = DeltaTable.createIfNotExists(spark).location(location).addColumns(_as_nullable(schema))
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    try:
        builder.property(OWNER_PROPERTY, OWNER).execute()
    except Exception as e:
        # A concurrent run may have created it first (a commit conflict on version 0).
        if table_state(spark, path) != "owned":
            raise
        log.info("%s was created by a concurrent run (%s)", path, type(e).__name__)
    else:
        log.info("created %s", path)


def ensure_owned_under(spark: SparkSession, output_root: str, names: Sequence[str]) -> None:
    """``ensure_owned`` for each table ``names`` under ``output_root``: refuse before any work.

    The root itself must not be a Delta table: tables written inside another table's folder
    would be deleted by its next ``VACUUM``."""
    if _is_delta_table(spark, output_root):
        raise ConfigError(
            f"the output root {output_root} is a Delta table; choose a folder for fwpolicy's tables"
        )
    for name in names:
        ensure_owned(spark, table_path(output_root, name))


def prepare_table(
    spark: SparkSession, path: str, schema: T.StructType, partition_by: Sequence[str] = ()
) -> None:
    """Refuse a path fwpolicy does not own; create the (marked) table if it is absent."""
    if not ensure_owned(spark, path):
        create_owned(spark, path, schema, partition_by)


# ------------------------------------------------------------------------------------ writing


def is_commit_conflict(e: BaseException) -> bool:
    """Whether ``e`` is one of Delta's optimistic-concurrency conflicts (a retryable commit)."""
    text = f"{type(e).__name__}: {e}"
    return any(marker in text for marker in _CONFLICT_MARKERS) or type(e).__name__ in (
        "ConcurrentAppendException",
        "ConcurrentWriteException",
        "ConcurrentDeleteReadException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentTransactionException",
        "MetadataChangedException",
        "ProtocolChangedException",
        "DeltaConcurrentModificationException",
    )


def with_commit_retries(action: Callable[[], R], what: str, attempts: int = COMMIT_ATTEMPTS) -> R:
    """Run ``action`` (one idempotent Delta commit), retrying it after a commit conflict."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as e:
            if attempt == attempts or not is_commit_conflict(e):
                raise
            pause = random.uniform(0.5, 1.5) * attempt
            log.warning(
                "commit conflict on %s (attempt %d of %d); retrying in %.1fs", what, attempt, attempts, pause
            )
            time.sleep(pause)
    raise AssertionError("unreachable")


def replace_where(
    df: DataFrame,
    path: str,
    predicate: str,
    partition_by: Sequence[str],
    user_metadata: str | None = None,
) -> None:
    """Atomically replace the rows of ``predicate`` (a partition filter built from parsed values,
    never from user text) in the fwpolicy-owned Delta table at ``path``, creating it if absent.

    ``user_metadata`` is stored in the commit (``DESCRIBE HISTORY`` shows it), e.g. a run id.
    """
    prepare_table(df.sparkSession, path, df.schema, partition_by)

    def write() -> None:
        writer = (
            df.write.format("delta")
            .mode("overwrite")
            .partitionBy(*partition_by)
            .option("replaceWhere", predicate)
        )
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        writer.save(path)

    with_commit_retries(write, f"{path} ({predicate})")


def replace_partition(
    df: DataFrame, path: str, window_end: dt.date, user_metadata: str | None = None
) -> None:
    """Atomically replace the ``window_end`` partition of the Delta table at ``path``."""
    if not isinstance(window_end, dt.date):
        raise TypeError(f"window_end must be a date, got {type(window_end).__name__}")
    predicate = f"{PARTITION_COLUMN} = DATE'{window_end.isoformat()}'"
    replace_where(df, path, predicate, (PARTITION_COLUMN,), user_metadata)
    log.info("replaced partition %s of %s", predicate, path)


def append(df: DataFrame, path: str, partition_by: Sequence[str] = ()) -> None:
    """Append ``df`` to the fwpolicy-owned Delta table at ``path`` (created if absent)."""
    prepare_table(df.sparkSession, path, df.schema, partition_by)

    def write() -> None:
        writer = df.write.format("delta").mode("append")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.save(path)

    with_commit_retries(write, path)


def read_table(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)
