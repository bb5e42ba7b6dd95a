"""Storage questions asked by every command, answered once: does a path exist, is it a Delta
table, is one path inside another, and where exactly is it.

The Hadoop FileSystem of a path answers for ``s3a://``, ``abfss://``, ``gs://`` and local paths
alike, so nothing here assumes a local disk.
"""

from __future__ import annotations

import contextlib
import os.path
from typing import Any

from pyspark.sql import SparkSession

DELTA_LOG = "_delta_log"


def filesystem(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop FileSystem of ``path`` and its Hadoop Path."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = filesystem(spark, path)
    return bool(fs.exists(hpath))


def list_names(spark: SparkSession, path: str) -> list[str] | None:
    """Names in the directory ``path``; None when it is a file or does not exist."""
    fs, hpath = filesystem(spark, path)
    if not fs.exists(hpath) or not fs.getFileStatus(hpath).isDirectory():
        return None
    return [status.getPath().getName() for status in fs.listStatus(hpath)]


def qualified(spark: SparkSession, path: str) -> str:
    """``path`` with its file system's scheme (``file:/abs/...``, ``s3a://...``).

    Delta takes a relative location for a table name, so tables are created at this."""
    fs, hpath = filesystem(spark, path)
    return str(fs.makeQualified(hpath).toString())


def is_delta_table(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` is a Delta table now, even if another process just created it.

    ``DeltaTable.isDeltaTable`` answers from the session's cached log of the path, which does
    not see a table that another process created after this session first looked. Opening the
    path for a read brings the cached log up to date first.
    """
    from delta.tables import DeltaTable

    if not path_exists(spark, os.path.join(path, DELTA_LOG) if "://" not in path else f"{path}/{DELTA_LOG}"):
        return False
    with contextlib.suppress(Exception):  # not a Delta table (yet): isDeltaTable says so below
        spark.read.format("delta").load(path)
    return bool(DeltaTable.isDeltaTable(spark, path))


def delta_identifier(path: str) -> str:
    """```delta.`path` ``` for SQL and ``writeTo``: a path, quoted, never a value from config."""
    return "delta.`" + path.replace("`", "``") + "`"


def is_within(child: str, parent: str) -> bool:
    """Whether ``child`` is ``parent`` or inside it (real paths locally, prefixes for URIs)."""
    if "://" in child or "://" in parent:
        c, p = child.rstrip("/") + "/", parent.rstrip("/") + "/"
        return c.startswith(p)
    c, p = os.path.realpath(child), os.path.realpath(parent)
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


def overlaps(a: str, b: str) -> bool:
    """Whether one path is inside (or equal to) the other."""
    return is_within(a, b) or is_within(b, a)


def table_path(output_root: str, name: str) -> str:
    """Every table of a run lives under one output root, named after what it holds."""
    return (
        os.path.join(output_root, name) if "://" not in output_root else f"{output_root.rstrip('/')}/{name}"
    )
