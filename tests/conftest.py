"""One Spark session for the whole suite: local[2], few shuffle partitions, UI off, UTC, Delta on.

The session is never stopped between tests; starting a JVM costs seconds. Fixtures that change
Spark conf restore it.

Tests live in three tiers, one directory each, and every test is marked with its tier's name:
``unit`` (pure Python, no Spark session), ``integration`` (real local Spark and Delta under a
temporary directory) and ``slow`` (spark-submit, a standalone cluster, crashed subprocesses).
``-m slow`` also selects tests marked ``slow`` in another tier. The tier directories have no
``__init__.py``, so a test file's name must be unique across them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "slow")

# helpers, kql_reference, plans and submit, for test files in any tier directory
sys.path.insert(0, str(TESTS))


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tier of its directory (tests/unit, tests/integration, tests/slow),
    and refuse a unit test that asks for a Spark session."""
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # not under tests/
            continue
        if tier in TIERS:
            item.add_marker(tier)
        if tier == "unit" and "spark" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{item.nodeid} uses a Spark session: move it to tests/integration")


@pytest.fixture(scope="session")
def spark(tmp_path_factory) -> Iterator[SparkSession]:
    from fwpolicy.io.session import local_builder

    warehouse = tmp_path_factory.mktemp("spark-warehouse")  # no test writes inside the repository
    session = (
        local_builder("local[2]", "fwpolicy-tests")
        .config("spark.sql.warehouse.dir", str(warehouse))
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


@pytest.fixture(scope="session")
def two_windows(spark, tmp_path_factory):
    """(lake, output root) of two runs over hostile values (``tests/two_windows.py``), shared by
    the tests of policy_changes and of the report."""
    from two_windows import build

    return build(spark, tmp_path_factory.mktemp("two-windows"))
