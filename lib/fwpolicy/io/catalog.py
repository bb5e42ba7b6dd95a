"""Register the output tables in the session's catalog, so BI tools query them by name.

``--catalog SCHEMA`` (on ``run``, ``nightly`` and ``ingest``) makes each table the command wrote
an external Delta table of that schema, at its path: ``SCHEMA.firewall_policy`` and so on.
Dashboards then query names, not storage paths: the Hive metastore of a local session (see
``io.session``: ``FWPOLICY_METASTORE``), Unity Catalog on Databricks (``catalog.schema``), or
Glue on EMR, whichever the session is configured with.

* The name is checked before any work: one or two identifiers of letters, digits and ``_``
  (``security`` or ``main.security``). It goes into SQL only as a parameter of ``IDENTIFIER()``;
  the tables are created through ``spark.catalog.createTable``, never by formatting SQL text.
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


def _location(spark: SparkSession, table: str) -> str:
    from delta.tables import DeltaTable

    detail = DeltaTable.forName(spark, table).detail().select("location").first()  # one row
    return str(detail["location"]).rstrip("/") if detail else ""


def check_registrations(spark: SparkSession, schema: str, tables: dict[str, str]) -> None:
    """Before any work: refuse a name already registered at another location than its path."""
    for name, path in tables.items():
        table = f"{schema}.{name}"
        if spark.catalog.tableExists(table):
            found, wanted = _location(spark, table), qualified(spark, path).rstrip("/")
            if found != wanted:
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

    check_schema_name(schema)
    spark.sql("CREATE SCHEMA IF NOT EXISTS IDENTIFIER(:schema)", args={"schema": schema})
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
