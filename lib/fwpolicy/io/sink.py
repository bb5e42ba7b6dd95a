"""Write result tables as Delta, one window per partition, replaced atomically on rerun.

Delta's ``replaceWhere`` swaps the rows of one ``window_end`` partition in a single commit:
readers see either the old partition or the new one, a failed (or killed) run leaves the
previous commit in place, and other windows are never touched. ``replaceWhere`` takes a SQL
predicate string; it is built here from a ``datetime.date`` (ISO text of a parsed date), never
from user text.

Ownership. Every table fwpolicy creates carries the Delta table property
``fwpolicy.owner = 'fwpolicy'``, set in the commit that creates the table: a table that does not
exist yet is created with its first data in one ``CREATE TABLE ... AS SELECT`` commit that
carries the mark (``writeTo(...).tableProperty(...).create()``); Delta 3.3 ignores writer
options as properties, so the creation commit is the one place the mark can be set atomically.
Before any work a run checks its tables once (``check_outputs``): it refuses a path that holds
something fwpolicy did not create (a plain directory of files, or a Delta table without the
mark) with a ``ConfigError``, which the CLI reports with exit code 2, and learns which tables
exist, so no write asks again. A table on purpose adopted (say, one written before the mark
existed) is marked with ``mark_owned`` or the SQL statement its error message shows.

Concurrency. Two runs on different windows write disjoint partitions, which Delta's optimistic
concurrency lets both commit; a commit conflict (for instance two runs creating the same new
table at once) is retried a bounded number of times: every write here is idempotent (a
partition replacement, or an append whose failed commit added nothing).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import ConfigError
from fwpolicy.io.session import session_conf
from fwpolicy.io.storage import (
    DELTA_LOG,
    delta_identifier,
    has_files,
    is_delta_table,
    is_remote,
    list_names,
    path_exists,
    qualified,
    table_path,
)

log = logging.getLogger(__name__)

PARTITION_COLUMN = "window_end"
OWNER_PROPERTY = "fwpolicy.owner"
OWNER = "fwpolicy"
COMMIT_ATTEMPTS = 5  # a conflicting commit is retried up to this many times in all
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
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
_EXISTS_MARKERS = ("TABLE_OR_VIEW_ALREADY_EXISTS", "already exists")

R = TypeVar("R")

__all__ = ["table_path"]  # re-exported: callers name tables through the sink


# ---------------------------------------------------------------------------------- ownership


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    """The table properties of the Delta table at ``path`` (its log's metadata; no Spark job)."""
    # Qualified: Delta takes a relative location for a table name (as in _create_with).
    rows = spark.sql(f"SHOW TBLPROPERTIES {delta_identifier(qualified(spark, path))}").collect()  # a few rows
    return {r["key"]: r["value"] for r in rows}


def table_state(spark: SparkSession, path: str) -> str:
    """``'absent'``, ``'owned'``, ``'foreign_delta'`` (a Delta table without fwpolicy's mark)
    or ``'not_delta'`` (a file, or a directory with files that are not a Delta table).

    An empty directory, or one holding only an empty ``_delta_log``, counts as absent.
    """
    if is_remote(spark):  # no file system API over Spark Connect: reads answer instead
        if is_delta_table(spark, path):
            owner = table_properties(spark, path).get(OWNER_PROPERTY)
            return "owned" if owner == OWNER else "foreign_delta"
        return "not_delta" if has_files(spark, path) else "absent"
    names = list_names(spark, path)
    if names is None:
        return "not_delta" if path_exists(spark, path) else "absent"
    if is_delta_table(spark, path):
        owner = table_properties(spark, path).get(OWNER_PROPERTY)
        return "owned" if owner == OWNER else "foreign_delta"
    return "absent" if all(n == DELTA_LOG for n in names) else "not_delta"


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


def check_outputs(spark: SparkSession, output_root: str, names: Iterable[str]) -> set[str]:
    """Check the tables ``names`` under ``output_root`` once, before any work; return those
    that exist (so writes create only the others, and never check again).

    The root itself must not be a Delta table: tables written inside another table's folder
    would be deleted by its next ``VACUUM``."""
    if is_delta_table(spark, output_root):
        raise ConfigError(
            f"the output root {output_root} is a Delta table; choose a folder for fwpolicy's tables"
        )
    return {name for name in names if ensure_owned(spark, table_path(output_root, name))}


def mark_owned(spark: SparkSession, path: str) -> None:
    """Mark the existing Delta table at ``path`` as fwpolicy's (a deliberate adoption)."""
    if not is_delta_table(spark, path):
        raise ConfigError(f"not a Delta table: {path}")
    table = delta_identifier(qualified(spark, path))  # a relative location would be a table name
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('{OWNER_PROPERTY}' = '{OWNER}')")


def _as_nullable(t: T.DataType) -> T.DataType:
    """The schema Delta stores for a DataFrame write: every field, element and value nullable."""
    if isinstance(t, T.StructType):
        return T.StructType([T.StructField(f.name, _as_nullable(f.dataType), True, f.metadata) for f in t])
    if isinstance(t, T.ArrayType):
        return T.ArrayType(_as_nullable(t.elementType), True)
    if isinstance(t, T.MapType):
        return T.MapType(_as_nullable(t.keyType), _as_nullable(t.valueType), True)
    return t


def empty_frame(spark: SparkSession, schema: T.StructType) -> DataFrame:
    """No rows, with ``schema`` made nullable as Delta stores a write. Built in the JVM:
    ``createDataFrame`` would start Python workers for nothing, and this works over Spark
    Connect too."""
    return spark.range(0).select(*(F.lit(None).cast(f.dataType).alias(f.name) for f in _as_nullable(schema)))


def _literal(value: object, data_type: T.DataType) -> Column:
    """``value`` as a literal of ``data_type``; a map from its pairs, in their order."""
    if value is None:
        return F.lit(None).cast(data_type)
    if isinstance(data_type, T.MapType):
        pairs = [F.lit(part) for item in value.items() for part in item]  # type: ignore[attr-defined]
        return F.create_map(*pairs).cast(data_type)
    return F.lit(value).cast(data_type)


def row_frame(spark: SparkSession, schema: T.StructType, values: Sequence[object]) -> DataFrame:
    """One row of ``values`` with ``schema``'s types, built in the JVM from literals like
    ``empty_frame``. ``createDataFrame`` of a Python row would fork the driver's JVM to start
    Python workers, to deserialise one row: a second or more of a run, and for a moment the
    JVM's memory twice over in the process tree."""
    literals = (_literal(v, f.dataType).alias(f.name) for v, f in zip(values, schema.fields, strict=True))
    return spark.range(1).select(*literals)  # Delta stores every column nullable all the same


def create_owned(
    spark: SparkSession, path: str, schema: T.StructType, partition_by: Sequence[str] = ()
) -> None:
    """Create an empty Delta table at ``path`` carrying fwpolicy's mark, in one commit.

    For tables that must exist before their first rows (``policy_changes`` of a first window).
    Two runs creating the same table at once: one commit wins, the other finds the table the
    winner made (marked) and goes on. A ``CREATE TABLE`` of no rows, so it works over Spark
    Connect too (the ``DeltaTable`` builder needs a server plugin there).
    """
    _create_with(empty_frame(spark, schema), path, partition_by)


def prepare_table(
    spark: SparkSession, path: str, schema: T.StructType, partition_by: Sequence[str] = ()
) -> None:
    """Refuse a path fwpolicy does not own; create the (marked) table if it is absent."""
    if not ensure_owned(spark, path):
        create_owned(spark, path, schema, partition_by)


@contextmanager
def commit_tag(spark: SparkSession, tag: str | None) -> Iterator[None]:
    """Every Delta commit made inside carries ``tag`` as its ``userMetadata`` (``DESCRIBE
    HISTORY`` shows it), a ``CREATE TABLE AS SELECT`` included, which takes no writer option."""
    if tag is None:
        yield
        return
    with session_conf(spark, USER_METADATA_CONF, tag):
        yield


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


def _create_with(df: DataFrame, path: str, partition_by: Sequence[str]) -> bool:
    """Create the table at ``path`` with ``df``'s rows and fwpolicy's mark in one commit.

    False when another run created it first (then the caller writes into it as usual)."""
    writer = df.writeTo(delta_identifier(qualified(df.sparkSession, path))).using("delta")
    if partition_by:
        writer = writer.partitionedBy(*(F.col(c) for c in partition_by))
    try:
        writer.tableProperty(OWNER_PROPERTY, OWNER).create()
    except Exception as e:
        # Two runs creating the same table at once: the loser's version 0 commit conflicts
        # (ProtocolChangedException) rather than finding the table already there.
        if not (any(m in str(e) for m in _EXISTS_MARKERS) or is_commit_conflict(e)):
            raise
        if not ensure_owned(df.sparkSession, path):  # it must be fwpolicy's to be written
            raise
        log.info("%s was created by a concurrent run", path)
        return False
    log.info("created %s", path)
    return True


def replace_where(
    df: DataFrame,
    path: str,
    predicate: str,
    partition_by: Sequence[str],
    exists: bool | None = None,
) -> None:
    """Atomically replace the rows of ``predicate`` (a partition filter built from parsed values,
    never from user text) in the fwpolicy-owned Delta table at ``path``.

    ``exists``: what ``check_outputs`` found before the run; ``None`` checks now. An absent
    table is created with the rows in one commit.
    """
    if exists is None:
        exists = ensure_owned(df.sparkSession, path)
    if not exists and _create_with(df, path, partition_by):
        return

    def write() -> None:
        df.write.format("delta").mode("overwrite").partitionBy(*partition_by).option(
            "replaceWhere", predicate
        ).save(path)

    with_commit_retries(write, f"{path} ({predicate})")


def partition_predicate(window_end: dt.date) -> str:
    """``window_end = DATE'...'`` from a parsed date (never from user text)."""
    if not isinstance(window_end, dt.date):
        raise TypeError(f"window_end must be a date, got {type(window_end).__name__}")
    return f"{PARTITION_COLUMN} = DATE'{window_end.isoformat()}'"


def replace_partition(df: DataFrame, path: str, window_end: dt.date, exists: bool | None = None) -> None:
    """Atomically replace the ``window_end`` partition of the Delta table at ``path``."""
    predicate = partition_predicate(window_end)
    replace_where(df, path, predicate, (PARTITION_COLUMN,), exists)
    log.info("replaced partition %s of %s", predicate, path)


def append(df: DataFrame, path: str, partition_by: Sequence[str] = (), exists: bool | None = None) -> None:
    """Append ``df`` to the fwpolicy-owned Delta table at ``path`` (created if absent)."""
    if exists is None:
        exists = ensure_owned(df.sparkSession, path)
    if not exists and _create_with(df, path, partition_by):
        return

    def write() -> None:
        writer = df.write.format("delta").mode("append")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.save(path)

    with_commit_retries(write, path)


def read_table(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)
