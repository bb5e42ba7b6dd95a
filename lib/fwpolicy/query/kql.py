"""KQL string semantics as Spark Column expressions.

Spark's string functions look like KQL's but differ at the edges, and those edges decide which
row lands in which group. Each helper here reproduces one KQL function (see DESIGN.md):

* KQL strings are never null: a missing string is ``''`` (``kql_string``).
* ``startswith`` / ``contains`` ignore case; ``in``, ``==`` and join keys do not.
* ``substring`` is 0-based, counts a negative start from the end, and clamps start and length.
* ``indexof`` is 0-based and answers -1 when the text is not found.

All are built from ``pyspark.sql.functions`` only, so Spark evaluates them in the JVM.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

ColumnOrName = Column | str


def _col(c: ColumnOrName) -> Column:
    return F.col(c) if isinstance(c, str) else c


def _int(v: Column | int) -> Column:
    return v if isinstance(v, Column) else F.lit(v)


def kql_string(c: ColumnOrName) -> Column:
    """KQL has no null strings: a missing value reads as ``''``."""
    return F.coalesce(_col(c).cast("string"), F.lit(""))


def _caseless(text: str) -> bool:
    """Whether ``text`` is ASCII with no letter (``'169.254'``): no character's case mapping
    yields such a character but the character itself (mappings give letters and combining
    marks), so a text holds it exactly when the lower-cased text does."""
    return text.isascii() and not any(ch.isalpha() for ch in text)


def _folded(c: ColumnOrName, needle: str) -> Column:
    """The searched text as case-insensitive matching of ``needle`` needs it: lower-cased (a
    Unicode case mapping per row, in the scan of every event), unless ``needle`` has no case."""
    return _col(c) if _caseless(needle) else F.lower(_col(c))


def kql_startswith(c: ColumnOrName, prefix: str) -> Column:
    """Case-insensitive ``startswith``, as KQL's operator is."""
    return _folded(c, prefix).startswith(prefix.lower())


def kql_contains(c: ColumnOrName, needle: str) -> Column:
    """Case-insensitive ``contains``, as KQL's operator is."""
    return _folded(c, needle).contains(needle.lower())


def kql_indexof(c: ColumnOrName, lookup: str, start: Column | int = 0) -> Column:
    """0-based index of ``lookup`` in the string at or after ``start``; -1 when absent.

    A negative ``start`` offsets from the end, as in KQL. A start past the end finds nothing.
    Spark's ``locate`` is 1-based and answers 0 when absent (also for a start past the end);
    ``F.locate`` takes only a Python int position, so the SQL function is called directly.
    """
    s = _col(c)
    if isinstance(start, int) and start >= 0:
        pos = F.lit(start + 1)  # the common case, folded here to keep generated code small
    else:
        st = _int(start)
        pos = F.when(st < 0, F.greatest(F.length(s) + st, F.lit(0))).otherwise(st) + 1
    return F.call_function("locate", F.lit(lookup), s, pos) - 1


def kql_substring(c: ColumnOrName, start: Column | int, length: Column | int | None = None) -> Column:
    """KQL ``substring(s, start[, length])`` on Unicode code points.

    * 0-based; a negative ``start`` counts from the end and then clamps at 0;
    * a start at or past the end gives ``''``;
    * a negative ``length`` counts as 0; the length clamps to what is left of the string.

    Spark's SQL ``substring(s, pos, len)`` is 1-based, counts a negative ``pos`` from the end,
    gives ``''`` for a non-positive length and clamps the end; it differs from KQL only for a
    start before the beginning (it spends the length there), so that start is clamped to
    ``-length(s)`` first. One Spark call, no repeated sub-expressions: the alias expression
    nests this several times and must stay within the JVM's code-size limits.
    """
    s = _col(c)
    n = F.length(s)
    if isinstance(start, int):
        pos = F.lit(start + 1) if start >= 0 else F.greatest(F.lit(start), -n)
    else:
        pos = F.when(start >= 0, start + 1).otherwise(F.greatest(start, -n))
    ln = n if length is None else _int(length)
    return s.substr(pos, ln)
