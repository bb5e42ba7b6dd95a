"""One Spark session for the whole suite: local[2], few shuffle partitions, UI off, UTC, Delta on.

The session is never stopped between tests; starting a JVM costs seconds. Fixtures that change
Spark conf restore it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

sys.path.insert(0, str(Path(__file__).parent))  # kql_reference and helpers


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    from fwpolicy.io.session import local_builder

    session = (
        local_builder("local[2]", "fwpolicy-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.adaptive.coalescePartitions.initialPartitionNum", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session


@pytest.fixture
def spark_conf(spark):
    """Set Spark conf values for one test and restore them afterwards."""
    saved: dict[str, str | None] = {}

    def set_conf(key: str, value: str) -> None:
        if key not in saved:
            saved[key] = spark.conf.get(key, None)
        spark.conf.set(key, value)

    yield set_conf
    for key, value in saved.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)
