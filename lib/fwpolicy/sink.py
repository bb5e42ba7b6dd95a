"""Write result tables as Delta, one window per partition, replaced atomically on rerun.

Delta's ``replaceWhere`` swaps the rows of one ``window_end`` partition in a single commit:
readers see either the old partition or the new one, a failed run leaves the previous commit
in place, and other windows are never touched. ``replaceWhere`` takes a SQL predicate string;
it is built here from a ``datetime.date`` (ISO text of a parsed date), never from user text.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

PARTITION_COLUMN = "window_end"


def table_path(output_root: str, name: str) -> str:
    """Every table of a run lives under one output root, named after what it holds."""
    return (
        os.path.join(output_root, name) if "://" not in output_root else f"{output_root.rstrip('/')}/{name}"
    )


def replace_partition(df: DataFrame, path: str, window_end: dt.date) -> None:
    """Atomically replace the ``window_end`` partition of the Delta table at ``path``."""
    if not isinstance(window_end, dt.date):
        raise TypeError(f"window_end must be a date, got {type(window_end).__name__}")
    predicate = f"{PARTITION_COLUMN} = DATE'{window_end.isoformat()}'"
    (
        df.write.format("delta")
        .mode("overwrite")
        .partitionBy(PARTITION_COLUMN)
        .option("replaceWhere", predicate)
        .save(path)
    )
    log.info("replaced partition %s of %s", predicate, path)


def read_table(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)
