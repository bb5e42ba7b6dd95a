"""Run audit: one row per run in the ``run_audit`` Delta table under the output root.

Each row says what a run read and what became of every row it read, so that a reviewer (or a
BI dashboard) can trust a policy without rerunning it:

* the run (``run_id``, ``command``, ``status``, ``started_at``, ``duration_seconds``), the
  window, the source (path with credentials redacted, format, Delta version, file count), the
  profile, ``config_hash`` (``PolicyConfig.digest()``) and the fwpolicy version;
* ``rows_read``: events of the window read from the source (plus events with an unusable
  ``Timestamp`` in the window's date partitions: see ``source.window_filter``);
* where they went: ``removed`` (per clause of the query's ``where``, in the order the query
  applies them, plus ``no_server_key``: inbound rows the server-key semi join drops),
  ``rejected`` (per unusable-value reason), ``rows_excluded`` (benign traffic left out by an
  exclude rule) and ``rows_inbound`` / ``rows_outbound`` (the rows the policy summarises).

``rows_read == sum(removed) + sum(rejected) + rows_excluded + rows_inbound + rows_outbound``
always holds (``AuditCounts.balanced``; tested), and ``rows_written`` is the number of
``firewall_policy`` rows the run's commit wrote.

The counts come from the reduced table the run has kept anyway (removed rows are kept
there as one row per day and reason precisely for this), with one small aggregate: no second
read of the source. The audit append is its own Delta commit, after the policy's; a run killed
between the two has a written policy and no audit row.

Use from a job (``tasks.run`` does this; ``tasks.nightly`` the same with ``command="nightly"``)::

    existing = check_outputs(spark, output, (..., AUDIT_TABLE))  # refuses foreign tables
    audit = RunAudit(spark, "run", spec, table_exists=AUDIT_TABLE in existing)
    events = read_window(...); audit.read(events)
    try:
        query = seed_query(events, cfg, window, keep=materialized)
        ...                                   # write the tables (commits tagged audit.commit_tag)
        audit.count(query)
    except Exception:
        audit.failed()                        # best effort: a 'failed' row, then re-raise
        raise
    audit.finish(rows_written)                # appends the row, logs one INFO line
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy import __version__
from fwpolicy.config import RunSpec
from fwpolicy.io.sink import append, row_frame, table_path
from fwpolicy.io.storage import delta_detail, delta_identifier, qualified
from fwpolicy.query.seed import DEVICE, INBOUND, INBOUND_DETAIL, OUTBOUND, REMOVAL_CLAUSES, SeedQuery

log = logging.getLogger(__name__)

AUDIT_TABLE = "run_audit"
NO_SERVER_KEY = "no_server_key"
REJECTED_PREFIX = "rejected:"
COMMANDS = ("run", "nightly")

AUDIT_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType()),
        T.StructField("command", T.StringType()),
        T.StructField("window_start", T.DateType()),
        T.StructField("window_end", T.DateType()),
        T.StructField("source", T.StringType()),
        T.StructField("source_format", T.StringType()),
        T.StructField("source_version", T.LongType()),
        T.StructField("source_files", T.LongType()),
        T.StructField("rows_read", T.LongType()),
        T.StructField("removed", T.MapType(T.StringType(), T.LongType())),
        T.StructField("rejected", T.MapType(T.StringType(), T.LongType())),
        T.StructField("rows_inbound", T.LongType()),
        T.StructField("rows_outbound", T.LongType()),
        T.StructField("rows_excluded", T.LongType()),
        T.StructField("rows_written", T.LongType()),
        T.StructField("duration_seconds", T.DoubleType()),
        T.StructField("profile", T.StringType()),
        T.StructField("config_hash", T.StringType()),
        T.StructField("started_at", T.TimestampType()),
        T.StructField("fwpolicy_version", T.StringType()),
        T.StructField("status", T.StringType()),
    ]
)


_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@:?#]*:[^@]*@")


def redact(path: str) -> str:
    """``path`` without credentials: the user-info of a ``user:secret@`` URI and any query
    string (a SAS token, a signed URL) become ``***``. Plain paths are unchanged.

    ``abfss://container@account...`` keeps its container: a user-info without ``:`` is a
    container or bucket name, not a secret. A secret may hold ``/``: everything up to the
    ``@`` after ``user:`` goes.
    """
    if "://" not in path:
        return path
    path = _CREDENTIALS.sub(r"\1***@", path, count=1)
    head, q, _ = path.partition("?")
    return f"{head}?***" if q else head


# ------------------------------------------------------------------------------------ counts


@dataclass(frozen=True)
class AuditCounts:
    """Where the rows read went. ``removed`` always has every clause and ``no_server_key``."""

    rows_read: int
    removed: dict[str, int]
    rejected: dict[str, int]
    rows_inbound: int
    rows_outbound: int
    rows_excluded: int

    @classmethod
    def empty(cls) -> AuditCounts:
        """The counts of a run that read nothing."""
        return cls(0, {c: 0 for c in (*REMOVAL_CLAUSES, NO_SERVER_KEY)}, {}, 0, 0, 0)

    @property
    def accounted(self) -> int:
        return (
            sum(self.removed.values())
            + sum(self.rejected.values())
            + self.rows_excluded
            + self.rows_inbound
            + self.rows_outbound
        )

    @property
    def balanced(self) -> bool:
        """Every row read is in exactly one of the parts."""
        return self.rows_read == self.accounted


def audit_counts(query: SeedQuery) -> AuditCounts:
    """Count the fate of every row read, from the query's reduced table and its legs.

    A run keeps both (``seed.materialized``); the counts are one Spark job whose
    result is a handful of rows: one per removal reason and direction, per stage. Rows
    excluded by a rule are counted after the join, as the policy leaves them out after it.
    """
    # Every event is counted once in DEVICE or INBOUND_DETAIL (seed.connection_table).
    once = F.col("Facet").isin(DEVICE, INBOUND_DETAIL)
    summed = F.coalesce(F.sum("Connections"), F.lit(0)).cast("long").alias("n")
    excluded = F.col("Excluded").isNotNull().alias("excluded")
    read = (
        query.conns.where(once)
        .groupBy(
            F.lit("read").alias("stage"), F.coalesce("Removed", "Directionality").alias("fate"), excluded
        )
        .agg(summed)
    )
    kept = (
        query.rows.where(once)
        .groupBy(F.lit("matched").alias("stage"), F.col("Directionality").alias("fate"), excluded)
        .agg(summed)
    )
    rows = read.unionByName(kept).collect()  # a handful of rows (reasons x directions x 2)

    def total(stage: str, fate: str | None = None, is_excluded: bool | None = None) -> int:
        return sum(
            int(r["n"])
            for r in rows
            if r["stage"] == stage
            and (fate is None or r["fate"] == fate)
            and (is_excluded is None or r["excluded"] == is_excluded)
        )

    removed = {clause: total("read", clause) for clause in REMOVAL_CLAUSES}
    removed[NO_SERVER_KEY] = total("read", INBOUND) - total("matched", INBOUND)
    reasons = sorted(
        {r["fate"] for r in rows if r["stage"] == "read" and str(r["fate"]).startswith(REJECTED_PREFIX)}
    )
    rejected = {reason[len(REJECTED_PREFIX) :]: total("read", reason) for reason in reasons}
    return AuditCounts(
        rows_read=total("read"),
        removed=removed,
        rejected=rejected,
        rows_inbound=total("matched", INBOUND, False),
        rows_outbound=total("matched", OUTBOUND, False),
        rows_excluded=total("matched", None, True),
    )


def source_snapshot(
    spark: SparkSession, path: str, source_format: str, events: DataFrame
) -> tuple[int | None, int | None]:
    """``(Delta version, number of files)`` of the source a run read; ``None`` where unknown.

    The version is the Delta table's latest when the run opened it (read right after; Delta
    pins a read's snapshot when the DataFrame is made); ``None`` for Parquet. The file count is
    that of the whole source, not only the window's: the Delta snapshot's ``numFiles``, or the
    length of the Parquet read's ``inputFiles()`` (the listing Spark already made; names only).
    """
    version: int | None = None
    files: int | None = None
    try:
        if source_format == "delta":
            # SQL rather than the DeltaTable API: it works over Spark Connect too.
            history = spark.sql(f"DESCRIBE HISTORY {delta_identifier(qualified(spark, path))} LIMIT 1")
            last = history.select("version").first()  # one row of commit metadata
            version = int(last["version"]) if last else None
            detail = delta_detail(spark, path)
            files = int(detail["numFiles"]) if detail else None
        else:
            files = len(events.inputFiles())
    except Exception as e:  # the audit must never fail the run it describes
        log.warning("could not read the source's version or file count: %s", type(e).__name__)
    return version, files


# ------------------------------------------------------------------------------------ record


@dataclass(frozen=True)
class AuditRecord:
    """One row of ``run_audit`` (field order = ``AUDIT_SCHEMA``)."""

    run_id: str
    command: str
    window_start: dt.date
    window_end: dt.date
    source: str
    source_format: str
    source_version: int | None
    source_files: int | None
    rows_read: int | None
    removed: dict[str, int] | None
    rejected: dict[str, int] | None
    rows_inbound: int | None
    rows_outbound: int | None
    rows_excluded: int | None
    rows_written: int | None
    duration_seconds: float
    profile: str
    config_hash: str
    started_at: dt.datetime
    fwpolicy_version: str
    status: str

    def as_tuple(self) -> tuple:
        values = asdict(self)
        return tuple(values[f.name] for f in AUDIT_SCHEMA.fields)

    def summary(self) -> str:
        """The one-line log summary: figures only, never an event value."""

        def kv(d: dict[str, int] | None) -> str:
            return ",".join(f"{k}={v}" for k, v in (d or {}).items()) or "-"

        return (
            f"run_audit {self.run_id} {self.command} {self.status} [{self.window_start}, {self.window_end}): "
            f"read {self.rows_read} rows -> inbound {self.rows_inbound}, outbound {self.rows_outbound}, "
            f"excluded {self.rows_excluded}, removed {kv(self.removed)}, rejected {kv(self.rejected)}; "
            f"wrote {self.rows_written} rows in {self.duration_seconds:.1f}s "
            f"(profile {self.profile}, config {self.config_hash})"
        )


def append_audit(
    spark: SparkSession, output_root: str, record: AuditRecord, exists: bool | None = None
) -> None:
    """Append ``record`` to ``<output_root>/run_audit`` (one Delta commit; table made if absent).

    ``exists``: whether the run's check found the table (``None``: check now)."""
    df = row_frame(spark, AUDIT_SCHEMA, record.as_tuple())
    append(df, table_path(output_root, AUDIT_TABLE), exists=exists)


@dataclass
class RunAudit:
    """Collects one run's audit row as the run goes; ``finish`` appends it.

    Made before any work, after the run checked its output tables (``sink.check_outputs``),
    which refuses an output root whose ``run_audit`` is not fwpolicy's: ``table_exists`` is
    what that check found.
    """

    spark: SparkSession
    command: str
    spec: RunSpec
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    source_version: int | None = None
    source_files: int | None = None
    counts: AuditCounts | None = None
    table_exists: bool | None = None
    _began: float = field(default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, got {self.command!r}")

    @property
    def path(self) -> str:
        return table_path(self.spec.output, AUDIT_TABLE)

    @property
    def commit_tag(self) -> str:
        """``userMetadata`` for the run's Delta commits: ``DESCRIBE HISTORY`` links them to
        its ``run_audit`` row."""
        return f"fwpolicy {self.command} {self.run_id}"

    def read(self, events: DataFrame) -> None:
        """Note the source's version and file count (``events`` as ``read_window`` returned it)."""
        self.source_version, self.source_files = source_snapshot(
            self.spark, self.spec.source, self.spec.source_format, events
        )

    def count(self, query: SeedQuery) -> AuditCounts:
        """Count the fates of the rows read (the query persisted; see ``audit_counts``)."""
        self.counts = audit_counts(query)
        if not self.counts.balanced:  # cannot happen unless the seed query changes; say so loudly
            log.warning(
                "run_audit: %d rows read but %d accounted for", self.counts.rows_read, self.counts.accounted
            )
        return self.counts

    def record(self, rows_written: int | None, status: str) -> AuditRecord:
        c = self.counts
        cfg = self.spec.policy
        return AuditRecord(
            run_id=self.run_id,
            command=self.command,
            window_start=self.spec.start,
            window_end=self.spec.end,
            source=redact(self.spec.source),
            source_format=self.spec.source_format,
            source_version=self.source_version,
            source_files=self.source_files,
            rows_read=c.rows_read if c else None,
            removed=c.removed if c else None,
            rejected=c.rejected if c else None,
            rows_inbound=c.rows_inbound if c else None,
            rows_outbound=c.rows_outbound if c else None,
            rows_excluded=c.rows_excluded if c else None,
            rows_written=rows_written,
            duration_seconds=time.monotonic() - self._began,
            profile=cfg.profile,
            config_hash=cfg.digest(),
            started_at=self.started_at,
            fwpolicy_version=__version__,
            status=status,
        )

    def finish(self, rows_written: int | None, status: str = "succeeded") -> AuditRecord:
        """Append the run's row to ``run_audit`` and log its one-line summary.

        A successful run that never called ``count`` read nothing (a nightly run whose days
        were all stored already): its counts are zeros."""
        if self.counts is None and status == "succeeded":
            self.counts = AuditCounts.empty()
        record = self.record(rows_written, status)
        append_audit(self.spark, self.spec.output, record, self.table_exists)
        self.table_exists = True
        log.info("%s", record.summary())
        return record

    def failed(self) -> AuditRecord | None:
        """Best effort, from an ``except`` block: record a failed run; never raises."""
        try:
            return self.finish(None, "failed")
        except Exception as e:
            log.warning("could not append the failed run to %s: %s", self.path, type(e).__name__)
            return None
