"""Command line: ``python -m fwpolicy <command> ...``.

Each command is a small function that parses nothing itself: ``build_parser`` declares the
options, the handler turns them into a spec and calls one library function. Errors a user can
fix (a missing source, a bad window, a bad config) end with exit code 2 and one line naming the
problem; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fwpolicy.config import ConfigError, RunSpec, load_policy_config
from fwpolicy.io.source import SourceError

log = logging.getLogger("fwpolicy")

DEMO_START = dt.date(2026, 8, 1)


def date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def add_policy_options(p: argparse.ArgumentParser) -> None:
    """Options that change what the query computes; unset ones come from ``--conf``."""
    p.add_argument(
        "--profile",
        choices=("kql", "normalized"),
        default=None,
        help="alias profile (default: kql, the seed query exactly)",
    )
    p.add_argument(
        "--ephemeral-start",
        type=positive_int,
        default=None,
        help="first port of the ephemeral range (default: 49152)",
    )
    p.add_argument(
        "--include-inbound-remote-ips",
        action="store_true",
        default=None,
        help="report remote IPs of inbound connections too",
    )
    p.add_argument(
        "--exclusions",
        type=Path,
        default=None,
        help="benign-traffic rules to tag or exclude traffic (see conf/exclusions.yaml)",
    )
    p.add_argument("--conf", type=Path, default=None, help="YAML settings file (see conf/default.yaml)")


def add_catalog_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalog",
        default=None,
        metavar="SCHEMA",
        help="also register the tables written in this schema of the session's catalog (for BI)",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="Delta table or Parquet dataset of DeviceNetworkEvents")
    p.add_argument("--source-format", required=True, choices=("delta", "parquet"))
    p.add_argument("--output", required=True, help="output root; tables are written under it")
    p.add_argument("--start", required=True, type=date_arg, help="first day of the window (UTC)")
    p.add_argument("--end", required=True, type=date_arg, help="day after the window (exclusive)")
    add_policy_options(p)
    add_catalog_option(p)


def policy_from_args(args: argparse.Namespace):
    return load_policy_config(
        args.conf,
        profile=args.profile,
        ephemeral_start=args.ephemeral_start,
        include_inbound_remote_ips=args.include_inbound_remote_ips,
        exclusions=str(args.exclusions) if args.exclusions else None,
    )


def print_summary(result, rows: list[dict], out=None) -> None:
    """A short readable report of a run: top programs per direction, then the figures."""
    out = out or sys.stdout  # looked up at call time, so redirection and capture work
    print(f"\nfirewall_policy, window [{result.window_start}, {result.window_end})", file=out)
    header = f"  {'Direction':<9} {'Machines':>8} {'Conns':>9} {'Ports':>5} {'IPs':>5}  AliasPath  (ports)"
    print(header, file=out)
    for r in rows:
        ports = ",".join(str(p) for p in r["Ports"][:6]) + ("..." if r["PortCount"] > 6 else "")
        print(
            f"  {r['Directionality']:<9} {r['DistinctMachines']:>8} {r['ConnectionCount']:>9} "
            f"{r['PortCount']:>5} {r['RemoteIPCount']:>5}  {r['AliasPath']}  ({ports})",
            file=out,
        )
    print(f"\nrows written: {result.rows_written}", file=out)
    print(f"table:        {result.table}", file=out)
    if result.changes is not None:
        print(f"changes:      {result.changes.describe()} (policy_changes)", file=out)
    print(f"time taken:   {result.seconds:.1f}s", file=out)


def with_catalog(catalog: str | None, tables: dict[str, str], work: Callable[[Any], Any]) -> Any:
    """Run ``work(spark)``, then register ``tables`` (name -> path) in the schema ``catalog``
    (``io.catalog``), if given: the name and any clash are checked before the work."""
    from fwpolicy.io.catalog import check_registrations, check_schema_name, register
    from fwpolicy.io.session import get_spark

    schema = check_schema_name(catalog) if catalog else None
    spark = get_spark(hive=schema is not None)
    if schema:
        check_registrations(spark, schema, tables)
    result = work(spark)
    if schema:
        added = register(spark, schema, tables)
        kept = len(tables) - len(added)
        print(f"catalog:      {schema} ({len(added)} tables registered, {kept} already there)")
    return result


def output_tables(output: str) -> dict[str, str]:
    """The tables ``run`` and ``nightly`` write under ``output``, by name."""
    from fwpolicy.io.sink import table_path
    from fwpolicy.tasks.audit import AUDIT_TABLE
    from fwpolicy.tasks.run import WINDOW_TABLES

    return {name: table_path(output, name) for name in (*WINDOW_TABLES, AUDIT_TABLE)}


def cmd_run(args: argparse.Namespace) -> int:
    from fwpolicy.tasks.run import run

    spec = RunSpec(args.source, args.source_format, args.output, args.start, args.end, policy_from_args(args))
    result = with_catalog(args.catalog, output_tables(args.output), lambda spark: run(spec, spark))
    print_summary(result, result.top)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """Print what changed in ``firewall_policy`` between two windows (``review.changes``)."""
    from pyspark.sql import functions as F

    from fwpolicy.io.session import get_spark
    from fwpolicy.review.changes import CHANGE_COLUMNS, diff

    settings = load_policy_config(args.conf).changes
    changes, previous = diff(get_spark(), args.output, args.window_end, args.against, settings)
    order = [F.col(c) for c in ("Directionality", "AliasPath", "ChangeType")]
    rows = [r.asDict() for r in changes.orderBy(*order).collect()]  # changes: a few per program
    if args.format == "json":
        body = {
            "window_end": args.window_end.isoformat(),
            "previous_window_end": previous.isoformat() if previous else None,
            "changes": [{c: r[c] for c in CHANGE_COLUMNS[:4]} for r in rows],
        }
        print(json.dumps(body, indent=2))
        return 0
    if previous is None:
        print(f"window_end {args.window_end} is the first window under {args.output}: no changes")
        return 0
    print(f"changes in firewall_policy from window_end {previous} to {args.window_end}: {len(rows)}")
    for r in rows:
        print(f"  {r['ChangeType']:<16} {r['Directionality']:<8} {r['AliasPath']}\n      {r['Detail']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the window's review page (``review.report``); the path is checked before any work."""
    from fwpolicy.io.session import get_spark
    from fwpolicy.review.report import check_destination, write_report

    check_destination(args.to)
    written = write_report(get_spark(), args.output, args.window_end, args.to)
    print(f"wrote the review report of window_end {args.window_end} to {written}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from fwpolicy.io.session import get_spark
    from fwpolicy.tasks.generate import generate_events, write_lake

    began = time.monotonic()
    spark = get_spark()
    df = generate_events(spark, args.devices, args.days, seed=args.seed, start=args.start)
    write_lake(df, args.output, args.format)
    print(
        f"wrote a {args.format} lake of {args.devices} devices x {args.days} days to {args.output} "
        f"in {time.monotonic() - began:.1f}s"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``make run``: a demo lake under ``data/`` (made once), the job over it, a summary and the
    window's review page."""
    from fwpolicy.io.session import get_spark
    from fwpolicy.review.report import write_report
    from fwpolicy.tasks.generate import generate_events, write_lake
    from fwpolicy.tasks.run import run

    lake, out = args.data / "demo-lake", args.data / "demo-out"
    spark = get_spark()
    if not lake.exists():
        log.info("generating a demo lake (%d devices x %d days) in %s", args.devices, args.days, lake)
        write_lake(
            generate_events(spark, args.devices, args.days, seed=7, start=DEMO_START), str(lake), "delta"
        )
    spec = RunSpec(
        str(lake),
        "delta",
        str(out),
        DEMO_START,
        DEMO_START + dt.timedelta(days=args.days),
        load_policy_config(None),
    )
    result = run(spec, spark)
    print_summary(result, result.top)
    page = write_report(spark, str(out), spec.end, out / "report.html")
    print(f"report:       {page.resolve()} (open it in a browser)")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from fwpolicy.tasks.nightly import NightlySpec, run_nightly

    spec = NightlySpec(
        source=args.source,
        source_format=args.source_format,
        output=args.output,
        date=args.date,
        window_days=args.window_days,
        refresh_days=args.refresh_days,
        policy=policy_from_args(args),
    )
    result = with_catalog(args.catalog, output_tables(args.output), lambda spark: run_nightly(spec, spark))
    print(result.describe())
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """``--output`` is the bronze table itself; ``--catalog`` registers it as
    ``SCHEMA.device_network_events``."""
    from fwpolicy.io.ingest import ingest

    tables = {"device_network_events": args.output}
    result = with_catalog(
        args.catalog, tables, lambda spark: ingest(spark, args.source, args.output, args.input_format)
    )
    print(result.describe())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the rules to ``--to`` (or stdout); for ``intune``, the rules left out for review go
    to ``<to>.review.txt`` beside it (or stderr), so the JSON stays a body Graph accepts."""
    from fwpolicy.io.session import get_spark
    from fwpolicy.review.export import ExportOptions, render, review_listing, review_path, snapshot_rules

    options = ExportOptions(
        fmt=args.format,
        min_machines=args.min_machines,
        min_days=args.min_days,
        include_remote_addresses=args.include_remote_addresses,
    )
    rules = snapshot_rules(get_spark(), args.output, args.window_end, options)
    text, review = render(rules), review_listing(rules)
    if args.to is None:
        sys.stdout.write(text)
        if review is not None:
            sys.stderr.write(review)
    else:
        Path(args.to).write_text(text, encoding="utf-8")
        print(f"wrote {options.fmt} rules to {args.to}")
        if review is not None:
            listing = review_path(args.to)
            listing.write_text(review, encoding="utf-8")
            print(f"rules left out for review are listed in {listing}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fwpolicy",
        description="Draft client-firewall policies from Defender DeviceNetworkEvents.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--remote",
        metavar="URL",
        help="run through Spark Connect: sc://host:15002 (or local[N]); default: $SPARK_REMOTE. "
        f"For {', '.join(CONNECT_COMMANDS)}; paths are the server's",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="compute firewall_policy for a window [start, end)")
    add_run_options(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("nightly", help="incremental: update daily partials, roll up the window")
    p.add_argument("--source", required=True, help="Delta table or Parquet dataset of DeviceNetworkEvents")
    p.add_argument("--source-format", required=True, choices=("delta", "parquet"))
    p.add_argument("--output", required=True, help="output root; tables are written under it")
    p.add_argument("--date", required=True, type=date_arg, help="last day of the window (UTC)")
    p.add_argument(
        "--window-days",
        type=positive_int,
        default=90,
        help="days in the window, ending on --date (default: 90)",
    )
    p.add_argument(
        "--refresh-days",
        type=int,
        default=2,
        help="last days of the window recomputed every night for late events (default: 2)",
    )
    add_policy_options(p)
    add_catalog_option(p)
    p.set_defaults(handler=cmd_nightly)

    p = sub.add_parser(
        "ingest", help="Defender streaming-API export (JSON, or Capture's Avro) -> typed Delta bronze table"
    )
    p.add_argument("--source", required=True, help="folder of the export (storage account or Event Hubs)")
    p.add_argument("--output", required=True, help="path of the bronze Delta table")
    p.add_argument(
        "--input-format",
        choices=("json", "avro"),
        default="json",
        help="json: JSON lines (storage account, Event Hubs); avro: Event Hubs Capture files (default: json)",
    )
    add_catalog_option(p)
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser("export", help="turn one firewall_policy snapshot into rule proposals")
    p.add_argument("--output", required=True, help="output root of a run (holds firewall_policy)")
    p.add_argument("--window-end", required=True, type=date_arg)
    p.add_argument(
        "--format",
        required=True,
        choices=("powershell", "csv", "json", "intune"),
        help="intune: Microsoft Graph JSON (windowsFirewallRule), rules to review listed beside it",
    )
    p.add_argument("--min-machines", type=positive_int, default=2)
    p.add_argument("--min-days", type=positive_int, default=2)
    p.add_argument(
        "--include-remote-addresses",
        action="store_true",
        help="restrict rules to the observed remote IPs, CIDR-collapsed",
    )
    p.add_argument("--to", type=Path, default=None, help="write to this file (default: stdout)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("diff", help="what changed in firewall_policy between two windows")
    p.add_argument("--output", required=True, help="output root of a run (holds firewall_policy)")
    p.add_argument("--window-end", required=True, type=date_arg, help="the window to describe")
    p.add_argument(
        "--against",
        type=date_arg,
        default=None,
        help="the window_end to compare with (default: the latest one before --window-end)",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--conf", type=Path, default=None, help="YAML settings file (its changes: section)")
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser("report", help="one self-contained HTML page to review a window")
    p.add_argument("--output", required=True, help="output root of a run (holds firewall_policy)")
    p.add_argument("--window-end", required=True, type=date_arg)
    p.add_argument("--to", required=True, type=Path, help="the .html file to write (its folder must exist)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("generate", help="write a deterministic simulated fleet (demo/test data)")
    p.add_argument("--output", required=True)
    p.add_argument("--devices", type=positive_int, default=200)
    p.add_argument("--days", type=positive_int, default=7)
    p.add_argument("--format", choices=("delta", "parquet"), default="parquet")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=date_arg, default=DEMO_START, help="first day (default 2026-08-01)")
    p.set_defaults(handler=cmd_generate)

    p = sub.add_parser("demo", help="generate a demo lake if missing, run the job over it")
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--devices", type=positive_int, default=200)
    p.add_argument("--days", type=positive_int, default=7)
    p.set_defaults(handler=cmd_demo)
    return parser


def configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)


# Commands that run over Spark Connect; the others need a JVM in this process (generate and
# demo write through the embedded session, ingest merges through Delta's table API).
CONNECT_COMMANDS = ("run", "nightly", "export", "diff", "report")


def check_remote(args: argparse.Namespace, url: str) -> None:
    """Over Spark Connect: only ``CONNECT_COMMANDS``, and paths the server can resolve (its
    working directory is not the user's)."""
    if args.command not in CONNECT_COMMANDS:
        raise ConfigError(
            f"{args.command} does not run over Spark Connect (--remote {url}); it runs on a local "
            f"session or under spark-submit. Over Spark Connect: {', '.join(CONNECT_COMMANDS)}"
        )
    for option in ("source", "output"):
        path = getattr(args, option, None)
        if path and "://" not in path and not path.startswith("/"):
            raise ConfigError(
                f"--{option} {path}: over Spark Connect paths are the server's; give an absolute "
                "path or a URI (s3a://, abfss://, dbfs:/ ...)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        from fwpolicy.io.session import remote_url, use_remote

        use_remote(args.remote)  # this call's choice only: None falls back to SPARK_REMOTE
        url = remote_url()
        if url:
            check_remote(args, url)
        return handler(args)
    except (SourceError, ConfigError) as e:
        print(f"fwpolicy: error: {e}", file=sys.stderr)
        return 2
