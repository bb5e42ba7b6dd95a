"""``fwpolicy report``: one self-contained HTML page to review a window.

The page holds the window's headline figures, the policy table (sortable, filterable, with each
program's evidence), the changes since the previous window (``policy_changes``), the hunting
list with its reasons, and the run audit drawn as a picture of where every event went. It works
offline: plotly.js is inlined from the ``plotly`` package (charts are Plotly's, never drawn by
hand), and a Content-Security-Policy forbids the page any network access.

Every value in it comes from telemetry an attacker can shape (a folder path, a URL, a file
name), so nothing from the data is ever written into the page as markup:

* the few values in the page's static HTML go through ``html.escape``;
* the tables' rows travel as JSON inside a ``<script type="application/json">`` block, with
  ``<``, ``>``, ``&`` and the two JavaScript line separators escaped, so no value can close the
  block; the page's script builds the rows with ``textContent``, which never parses markup;
* chart labels are escaped before Plotly sees them (Plotly reads a few tags in labels, links
  among them), and no value becomes a link.

``tests/integration/test_report.py`` puts ``<script>``, ``" onerror=`` and ``javascript:``
payloads into paths and URLs and checks in Chromium that none of them runs.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fwpolicy.config import ConfigError

POLICY_FIELDS = (
    "Directionality",
    "AliasPath",
    "DistinctMachines",
    "DaysObserved",
    "DeviceDays",
    "ConnectionCount",
    "PortCount",
    "Ports",
    "RemoteIPCount",
    "Protocols",
    "TopRemoteUrls",
    "ExampleFileName",
    "ExamplePath",
    "Tags",
    "FirstSeen",
    "LastSeen",
)
CHANGE_FIELDS = ("ChangeType", "Directionality", "AliasPath", "Detail")
HUNTING_FIELDS = (
    "Score",
    "Reasons",
    "Directionality",
    "AliasPath",
    "ExamplePath",
    "DistinctMachines",
    "ConnectionCount",
    "PublicNonStandardPorts",
    "PublicRemoteIPCount",
    "FirstSeen",
)
TOP_CHART = 15  # programs per direction in the machines chart


@dataclass(frozen=True)
class ReportData:
    """What a report shows: rows as plain dicts (summary rows, a few per program)."""

    window_start: dt.date | None
    window_end: dt.date
    policy: list[dict[str, Any]]
    changes: list[dict[str, Any]] | None  # None: no policy_changes table
    previous_window_end: dt.date | None
    hunting: list[dict[str, Any]]
    audit: dict[str, Any] | None  # the latest succeeded run_audit row of the window
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


def check_destination(to: Path) -> Path:
    """Refuse a report path whose folder does not exist (before any work), or that is a folder."""
    folder = to.parent if str(to.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"cannot write the report to {to}: folder {folder} does not exist")
    if to.is_dir():
        raise ConfigError(f"cannot write the report to {to}: it is a folder")
    return to


# --------------------------------------------------------------------------- values


def _plain(value: Any) -> Any:
    """A JSON value: dates and times as ISO text, arrays as lists, maps as dicts."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>``, ``<!--`` or line separator
    in any string can end or change the block."""
    text = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _label(text: Any) -> str:
    """A chart label: escaped, since Plotly reads tags (``<a href>``, ``<br>``) in labels."""
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- charts


def audit_figure(audit: dict[str, Any]) -> dict[str, Any]:
    """A Sankey of where the events read went: kept (by leg), excluded, removed, rejected."""
    import plotly.graph_objects as go

    read = int(audit.get("rows_read") or 0)
    removed = {k: int(v) for k, v in (audit.get("removed") or {}).items() if v}
    rejected = {k: int(v) for k, v in (audit.get("rejected") or {}).items() if v}
    targets = [
        ("policy: inbound", int(audit.get("rows_inbound") or 0)),
        ("policy: outbound", int(audit.get("rows_outbound") or 0)),
        ("excluded by rules", int(audit.get("rows_excluded") or 0)),
    ]
    labels = [f"read ({read:,})"]
    sources: list[int] = []
    ends: list[int] = []
    values: list[int] = []

    def link(source: int, label: str, value: int) -> int:
        labels.append(f"{label} ({value:,})")
        sources.append(source)
        ends.append(len(labels) - 1)
        values.append(value)
        return len(labels) - 1

    for label, value in targets:
        if value:
            link(0, label, value)
    for group, parts in (("removed", removed), ("rejected", rejected)):
        if parts:
            node = link(0, group, sum(parts.values()))
            for reason, value in sorted(parts.items(), key=lambda kv: -kv[1]):
                link(node, reason.replace("_", " "), value)
    fig = go.Figure(
        go.Sankey(
            node={"label": [_label(t) for t in labels], "pad": 14},
            link={"source": sources, "target": ends, "value": values},
        )
    )
    fig.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=360)
    return json.loads(fig.to_json())


def machines_figure(policy: list[dict[str, Any]]) -> dict[str, Any]:
    """The most widespread programs of each direction: machines per program, a bar each."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for direction in ("Outbound", "Inbound"):
        rows = [r for r in policy if r.get("Directionality") == direction]
        rows = sorted(rows, key=lambda r: (-(r.get("DistinctMachines") or 0), str(r.get("AliasPath"))))
        rows = rows[:TOP_CHART][::-1]
        fig.add_trace(
            go.Bar(
                name=direction,
                orientation="h",
                x=[r.get("DistinctMachines") or 0 for r in rows],
                y=[_label(f"{direction[:3]} {r.get('AliasPath') or '(no path)'}") for r in rows],
                hovertemplate="%{y}: %{x} machines<extra></extra>",
            )
        )
    count = sum(len(t.y) for t in fig.data)
    fig.update_layout(
        barmode="group",
        height=max(240, 22 * count + 80),
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        yaxis={"automargin": True},
        xaxis={"title": {"text": "machines"}},
    )
    return json.loads(fig.to_json())


# --------------------------------------------------------------------------- page


def headline(data: ReportData) -> list[tuple[str, str]]:
    """The window's figures, as (label, value) text."""
    by_direction = {
        d: sum(1 for r in data.policy if r.get("Directionality") == d) for d in ("Inbound", "Outbound")
    }
    machines = max((r.get("DistinctMachines") or 0 for r in data.policy), default=0)
    items = [
        ("window", f"{data.window_start or '?'} to {data.window_end} (end exclusive)"),
        (
            "programs",
            f"{len(data.policy):,} ({by_direction['Outbound']:,} outbound, "
            f"{by_direction['Inbound']:,} inbound)",
        ),
        ("most machines of one program", f"{machines:,}"),
        ("hunting leads", f"{len(data.hunting):,}"),
    ]
    if data.changes is None:
        items.append(("changes", "no policy_changes table under this output"))
    elif data.previous_window_end is None:
        items.append(("changes", "none: the first window here"))
    else:
        items.append(("changes", f"{len(data.changes):,} since {data.previous_window_end}"))
    if data.audit:
        items.append(
            (
                "events read by the run",
                f"{int(data.audit.get('rows_read') or 0):,} ({data.audit.get('command')})",
            )
        )
    return items


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#fff}
header{background:#1f3b57;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{padding:8px 24px 40px}section{margin-top:26px}h2{font-size:17px;margin:0 0 8px}
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px;margin:0}dt{color:#555}
dd{margin:0;font-weight:600}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e2e6ea;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f5f7;cursor:pointer;user-select:none;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums}td{overflow-wrap:anywhere}
.controls{display:flex;gap:10px;align-items:center;margin:6px 0}.muted{color:#666}
.wrap{max-height:640px;overflow:auto;border:1px solid #e2e6ea}
"""

# Builds the tables from the JSON block with textContent only; sorts and filters them.
SCRIPT = """
(function(){
  const data = JSON.parse(document.getElementById('report-data').textContent);
  function text(v){
    if (v === null || v === undefined) return '';
    if (Array.isArray(v)) return v.map(text).join(', ');
    return String(v);
  }
  function table(id, rows, columns, numeric, initial){
    const el = document.getElementById(id);
    const head = el.createTHead().insertRow();
    const body = el.createTBody();
    let order = initial || null, descending = Boolean(initial);
    columns.forEach(function(c){
      const th = document.createElement('th');
      th.textContent = c;
      th.addEventListener('click', function(){
        descending = order === c ? !descending : numeric.includes(c);
        order = c; draw();
      });
      head.appendChild(th);
    });
    const filter = document.getElementById(id + '-filter');
    const direction = document.getElementById(id + '-direction');
    const shown = document.getElementById(id + '-shown');
    function draw(){
      const needle = filter ? filter.value.toLowerCase() : '';
      const side = direction ? direction.value : '';
      let kept = rows.filter(function(r){
        if (side && r.Directionality !== side) return false;
        return !needle || columns.some(function(c){ return text(r[c]).toLowerCase().includes(needle); });
      });
      if (order){
        kept = kept.slice().sort(function(a, b){
          const x = a[order], y = b[order];
          const cmp = numeric.includes(order) ? (x || 0) - (y || 0) : text(x).localeCompare(text(y));
          return descending ? -cmp : cmp;
        });
      }
      body.replaceChildren();
      kept.forEach(function(r){
        const tr = body.insertRow();
        columns.forEach(function(c){
          const td = tr.insertCell();
          td.textContent = text(r[c]);
          if (numeric.includes(c)) td.className = 'n';
        });
      });
      if (shown) shown.textContent = kept.length + ' of ' + rows.length;
    }
    if (filter) filter.addEventListener('input', draw);
    if (direction) direction.addEventListener('change', draw);
    draw();
  }
  table('policy', data.policy, data.columns.policy, data.numeric, 'DistinctMachines');
  table('changes', data.changes || [], data.columns.changes, data.numeric);
  table('hunting', data.hunting, data.columns.hunting, data.numeric, 'Score');
  const options = {displayModeBar: false, responsive: true};
  for (const [id, figure] of Object.entries(data.figures)){
    if (figure) Plotly.newPlot(id, figure.data, figure.layout, options);
  }
})();
"""

NUMERIC = (
    "DistinctMachines",
    "DaysObserved",
    "DeviceDays",
    "ConnectionCount",
    "PortCount",
    "RemoteIPCount",
    "Score",
    "PublicRemoteIPCount",
)


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _controls(table_id: str, what: str, directions: bool = True) -> str:
    select = (
        f'<select id="{table_id}-direction" aria-label="direction"><option value="">both directions</option>'
        "<option>Outbound</option><option>Inbound</option></select>"
        if directions
        else ""
    )
    return (
        f'<div class="controls"><input id="{table_id}-filter" type="search" placeholder="filter {what}" '
        f'aria-label="filter {what}">{select}<span class="muted" id="{table_id}-shown"></span></div>'
    )


def render(data: ReportData) -> str:
    """The page, as one string of HTML with everything inlined."""
    from plotly.offline import get_plotlyjs

    payload = {
        "policy": [{c: r.get(c) for c in POLICY_FIELDS} for r in data.policy],
        "changes": [{c: r.get(c) for c in CHANGE_FIELDS} for r in data.changes] if data.changes else [],
        "hunting": [{c: r.get(c) for c in HUNTING_FIELDS} for r in data.hunting],
        "columns": {"policy": POLICY_FIELDS, "changes": CHANGE_FIELDS, "hunting": HUNTING_FIELDS},
        "numeric": NUMERIC,
        "figures": {
            "chart-machines": machines_figure(data.policy) if data.policy else None,
            "chart-audit": audit_figure(data.audit) if data.audit else None,
        },
    }
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in headline(data))
    if data.changes is None:
        changes_note = (
            "This output root has no policy_changes table (written by runs of fwpolicy 0.1 and later)."
        )
    elif data.previous_window_end is None:
        changes_note = "The first window under this output root: no earlier window to compare with."
    else:
        changes_note = f"Compared with the window ending {data.previous_window_end}."
    audit = data.audit
    audit_note = (
        f"Run {audit.get('run_id')} ({audit.get('command')}, {audit.get('started_at')}); a nightly run "
        "counts the events of the days it computed."
        if audit
        else "No succeeded run_audit row for this window."
    )
    sections = [
        _section("Window", f"<dl>{facts}</dl>"),
        _section(
            "Policy",
            _controls("policy", "programs, ports, URLs, tags")
            + '<div id="chart-machines"></div><div class="wrap"><table id="policy"></table></div>',
        ),
        _section(
            "Changes since the previous window",
            f'<p class="muted">{html.escape(changes_note)}</p>'
            + _controls("changes", "changes")
            + '<div class="wrap"><table id="changes"></table></div>',
        ),
        _section(
            "Hunting leads",
            _controls("hunting", "leads") + '<div class="wrap"><table id="hunting"></table></div>',
        ),
        _section(
            "Where every event went",
            f'<p class="muted">{html.escape(audit_note)}</p><div id="chart-audit"></div>',
        ),
    ]
    title = f"fwpolicy review, window ending {data.window_end}"
    # No network at all: every script and style is inline, images only from data: URLs.
    csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
    generated = data.generated_at.isoformat(sep=" ", timespec="seconds")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><div>generated {html.escape(generated)}</div></header>"
        f"<main>{''.join(sections)}</main>"
        f'<script type="application/json" id="report-data">{script_json(payload)}</script>'
        f"<script>{get_plotlyjs()}</script><script>{SCRIPT}</script></body></html>\n"
    )


# --------------------------------------------------------------------------- reading


def gather(spark: Any, output_root: str, window_end: dt.date) -> ReportData:
    """Read the window's rows of each table under ``output_root`` (summary rows: bounded by the
    number of programs, never by events). An unknown ``window_end`` is a ``ConfigError``."""
    from pyspark.sql import functions as F

    from fwpolicy.io.sink import read_table, table_path
    from fwpolicy.io.storage import is_delta_table
    from fwpolicy.review.changes import CHANGES_TABLE, POLICY_TABLE, known_window_ends, previous_window_end

    ends = known_window_ends(spark, output_root, window_end)

    def rows(name: str) -> list[dict[str, Any]] | None:
        path = table_path(output_root, name)
        if not is_delta_table(spark, path):
            return None
        df = read_table(spark, path).where(F.col("window_end") == F.lit(window_end))
        return [r.asDict(recursive=True) for r in df.collect()]  # one window's summary rows

    policy = rows(POLICY_TABLE) or []
    changes = rows(CHANGES_TABLE)
    audit = None
    audit_path = table_path(output_root, "run_audit")
    if is_delta_table(spark, audit_path):
        latest = (
            read_table(spark, audit_path)
            .where((F.col("window_end") == F.lit(window_end)) & (F.col("status") == F.lit("succeeded")))
            .orderBy(F.desc("started_at"))
            .limit(1)
            .collect()  # one row
        )
        audit = latest[0].asDict(recursive=True) if latest else None
    starts = sorted({r["window_start"] for r in policy if r.get("window_start")})
    return ReportData(
        window_start=starts[0] if starts else None,
        window_end=window_end,
        policy=policy,
        changes=changes,
        previous_window_end=previous_window_end(ends, window_end) if changes is not None else None,
        hunting=sorted(
            rows("unusual_programs") or [], key=lambda r: (-(r.get("Score") or 0), str(r.get("AliasPath")))
        ),
        audit=audit,
    )


def write_report(spark: Any, output_root: str, window_end: dt.date, to: Path) -> Path:
    """Gather the window and write its page to ``to`` (its folder must exist)."""
    check_destination(to)
    page = render(gather(spark, output_root, window_end))
    to.write_text(page, encoding="utf-8")
    return to
