"""Storage questions asked by every command, answered once: does a path exist, is it a Delta
table, is one path inside another, and where exactly is it.

In a classic session the Hadoop FileSystem of a path answers, through the JVM in this process,
for ``s3a://``, ``abfss://``, ``gs://`` and local paths alike. Over Spark Connect (``--remote``)
there is no JVM here: the same questions go to the server as reads and SQL (a path that does
not exist is Spark's ``PATH_NOT_FOUND``; a Delta table is one that reads as ``delta``), and
paths are the server's, taken as given.
"""

from __future__ import annotations

import contextlib
import os.path
from typing import Any

from pyspark.sql import SparkSession

DELTA_LOG = "_delta_log"


def is_remote(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client (``--remote``), with no JVM in this process."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def filesystem(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop FileSystem of ``path`` and its Hadoop Path (classic sessions only)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def _not_found(e: Exception) -> bool:
    return "PATH_NOT_FOUND" in str(e)


def has_files(spark: SparkSession, path: str) -> bool | None:
    """Over Spark Connect: whether ``path`` holds a file that is not hidden (``_delta_log`` and
    ``.crc`` files are), or None when it does not exist. One small listing job on the server."""
    listing = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(path)
    try:
        return bool(listing.select("path").limit(1).collect())  # at most one row
    except Exception as e:
        if _not_found(e):
            return None
        raise


def path_exists(spark: SparkSession, path: str) -> bool:
    if is_remote(spark):
        return has_files(spark, path) is not None  # a Delta table's folder lists too
    fs, hpath = filesystem(spark, path)
    return bool(fs.exists(hpath))


def list_names(spark: SparkSession, path: str) -> list[str] | None:
    """Names in the directory ``path``; None when it is a file or does not exist (classic
    sessions only: over Spark Connect, ``has_files`` answers what the callers ask)."""
    fs, hpath = filesystem(spark, path)
    if not fs.exists(hpath) or not fs.getFileStatus(hpath).isDirectory():
        return None
    return [status.getPath().getName() for status in fs.listStatus(hpath)]


def qualified(spark: SparkSession, path: str) -> str:
    """``path`` with its file system's scheme (``file:/abs/...``, ``s3a://...``).

    Delta takes a relative location for a table name, so tables are created at this. Over
    Spark Connect the path is the server's: taken as given (``cli`` requires it absolute)."""
    if is_remote(spark):
        return path
    fs, hpath = filesystem(spark, path)
    return str(fs.makeQualified(hpath).toString())


def is_delta_table(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` is a Delta table now, even if another process just created it.

    ``DeltaTable.isDeltaTable`` answers from the session's cached log of the path, which does
    not see a table that another process created after this session first looked. Opening the
    path for a read brings the cached log up to date first. Over Spark Connect (where the
    ``DeltaTable`` API needs a server plugin) the read alone answers.
    """
    from delta.tables import DeltaTable

    if is_remote(spark):
        try:
            spark.read.format("delta").load(path).schema  # noqa: B018 (analysed on the server)
        except Exception:
            return False
        return True
    if not path_exists(spark, os.path.join(path, DELTA_LOG) if "://" not in path else f"{path}/{DELTA_LOG}"):
        return False
    with contextlib.suppress(Exception):  # not a Delta table (yet): isDeltaTable says so below
        spark.read.format("delta").load(path)
    return bool(DeltaTable.isDeltaTable(spark, path))


def delta_identifier(path: str) -> str:
    """```delta.`path` ``` for SQL and ``writeTo``: a path, quoted, never a value from config."""
    return "delta.`" + path.replace("`", "``") + "`"


def delta_detail(spark: SparkSession, path: str) -> Any:
    """``DESCRIBE DETAIL`` of the Delta table at ``path``: one row (location, partition columns,
    number of files, ...), through SQL so that it works over Spark Connect too."""
    return spark.sql(f"DESCRIBE DETAIL {delta_identifier(qualified(spark, path))}").first()


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
