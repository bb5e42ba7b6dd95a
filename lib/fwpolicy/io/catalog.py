"""Register the output tables in the session's catalog, so BI tools query them by name.

``--catalog SCHEMA`` (on ``run``, ``nightly`` and ``ingest``) makes each table the command wrote
an external Delta table of that schema, at its path: ``SCHEMA.firewall_policy`` and so on.
Dashboards then query names, not storage paths: the Hive metastore of a local session (see
``io.session``: ``FWPOLICY_METASTORE``), Unity Catalog on Databricks (``catalog.schema``), or
Glue on EMR, whichever the session is configured with.

* The name is checked before any work: one or two identifiers of letters, digits and ``_``
  (``security`` or ``main.security``). The one SQL statement, ``CREATE SCHEMA``, takes it only
  after that check, each part quoted as an identifier (``quoted``): Spark 4.2 does not bind a
  parameter of ``IDENTIFIER()`` in a DDL statement. The tables are created through
  ``spark.catalog.createTable``, never by formatting SQL text.
* Registration is idempotent: a table already registered at the same location is left alone,
  so a rerun does not fail. One registered at another location is refused before any work,
  naming both locations: fwpolicy never re-points a name a dashboard may rely on.
* A table is registered after the command wrote it, so it always has rows and a schema.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from pyspark.sql import SparkSession

from fwpolicy.config import ConfigError
from fwpolicy.io.storage import qualified

log = logging.getLogger(__name__)

SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def check_schema_name(name: str) -> str:
    """``name`` if it is a schema name fwpolicy accepts, else a ``ConfigError`` naming it."""
    if not isinstance(name, str) or not SCHEMA_NAME.match(name):
        raise ConfigError(
            f"--catalog {name!r}: a schema name is one or two identifiers of letters, digits and _ "
            "(e.g. security or main.security)"
        )
    return name


def quoted(name: str) -> str:
    """A checked schema name as SQL identifiers: ``main.security`` -> ```main`.`security```."""
    return ".".join(f"`{part}`" for part in check_schema_name(name).split("."))


def _location(spark: SparkSession, schema: str, name: str) -> str:
    """Where the table ``schema.name`` is (SQL, so that it works over Spark Connect too)."""
    detail = spark.sql(f"DESCRIBE DETAIL {quoted(schema)}.`{name}`").first()  # one row
    return str(detail["location"]).rstrip("/") if detail else ""


def _local(location: str) -> str:
    """``file:/x``, ``file:///x`` and ``/x`` are one location (a Connect client names server
    paths without the scheme the catalog shows)."""
    if location.startswith("file:"):
        return "/" + location[len("file:") :].lstrip("/")
    return location


def check_registrations(spark: SparkSession, schema: str, tables: dict[str, str]) -> None:
    """Before any work: refuse a name already registered at another location than its path."""
    for name, path in tables.items():
        table = f"{schema}.{name}"
        if spark.catalog.tableExists(table):
            found, wanted = _location(spark, schema, name), qualified(spark, path).rstrip("/")
            if _local(found) != _local(wanted):
                raise ConfigError(
                    f"catalog table {table} is registered at {found}, not at {wanted}; "
                    "drop it or choose another --catalog"
                )


def register(
    spark: SparkSession, schema: str, tables: dict[str, str], only: Iterable[str] | None = None
) -> list[str]:
    """Register ``tables`` (name -> path) that exist as Delta tables under ``schema``; returns
    the names newly registered. ``only``: the names to consider (default: all)."""
    from fwpolicy.io.storage import is_delta_table

    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {quoted(schema)}")  # letters, digits and _ only
    added = []
    for name in only if only is not None else tables:
        path = tables[name]
        table = f"{schema}.{name}"
        if spark.catalog.tableExists(table) or not is_delta_table(spark, path):
            continue
        spark.catalog.createTable(table, path=qualified(spark, path), source="delta")
        added.append(table)
    log.info("catalog %s: %s", schema, ", ".join(added) if added else "every table already registered")
    return added
