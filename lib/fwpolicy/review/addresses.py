"""IP address text as Spark Column expressions, shared by the benign-traffic rules and hunting.

Defender's ``RemoteIP`` is text: IPv4 dotted quads, IPv6 in any of its spellings (``::``, an
embedded dotted quad, upper case, a ``%zone``), IPv4-mapped IPv6 (``::ffff:a.b.c.d``), and
sometimes not an address at all (``''``, ``-``, a host name). These helpers parse it with
``pyspark.sql.functions`` only (``split``, ``conv``, casts and higher-order functions), so Spark
evaluates them in the JVM; text that is not an address parses to null, never to an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyspark.sql import Column
from pyspark.sql import functions as F

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"^{_OCTET}(\.{_OCTET}){{3}}$"  # strict: no leading zeros (010.0.0.1 is not one)
_TAIL_QUAD = r"^(.*:)([^:]*\.[^:]*)$"
_HEX_GROUP = "^[0-9a-f]{1,4}$"


def let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(value)`` with ``value`` evaluated once (a lambda binding).

    Column trees are trees, not graphs: a parsed address used ten times would be parsed ten
    times, and the expression would outgrow code generation. Binding it keeps both small.
    """
    return F.transform(F.array(value), body).getItem(0)


def any_of(preds: Iterable[Column]) -> Column:
    """The OR of one or more boolean Columns."""
    preds = list(preds)
    out = preds[0]
    for p in preds[1:]:
        out = out | p
    return out


def quad_to_long(text: Column) -> Column:
    """A strict dotted quad as a long (``((a*256 + b)*256 + c)*256 + d``); null when not one."""

    def value(t: Column) -> Column:
        octets = F.split(t, r"\.")
        number = F.aggregate(octets, F.lit(0).cast("long"), lambda acc, o: acc * 256 + o.cast("long"))
        return F.when(t.rlike(IPV4_PATTERN), number)

    return let(text, value)


def ipv4_long(ip: Column) -> Column:
    """IPv4 address (or IPv4-mapped ``::ffff:a.b.c.d``, any case) as a long; null when not one."""
    return quad_to_long(F.regexp_replace(ip, r"(?i)^::ffff:", ""))


def _tail_quad_as_groups(s: Column) -> Column:
    """``...:a.b.c.d`` -> ``...:hhhh:hhhh``; text without a dotted tail unchanged; null if bad."""

    def replace(q: Column) -> Column:
        hex8 = F.lpad(F.lower(F.hex(quad_to_long(q))), 8, "0")
        head = F.regexp_extract(s, _TAIL_QUAD, 1)
        return F.when(q == F.lit(""), s).otherwise(
            F.concat(head, F.substring(hex8, 1, 4), F.lit(":"), F.substring(hex8, 5, 4))
        )

    return let(F.regexp_extract(s, _TAIL_QUAD, 2), replace)


def _expand(t: Column) -> Column:
    """Hex groups text -> its groups, ``::`` filled with zeros; null when ``::`` cannot fit."""

    def groups(x: Column) -> Column:
        return F.when(x == F.lit(""), F.array().cast("array<string>")).otherwise(F.split(x, ":", -1))

    def fill(lr: Column) -> Column:
        left, right = lr.getField("l"), lr.getField("r")
        n = F.size(left) + F.size(right)
        return F.when(n <= 7, F.concat(left, F.array_repeat(F.lit("0"), F.lit(8) - n), right))

    def by_halves(h: Column) -> Column:
        padded = F.concat(h, F.array(F.lit("")))  # element 1 exists even without '::'
        halves = F.struct(groups(padded.getItem(0)).alias("l"), groups(padded.getItem(1)).alias("r"))
        return F.when(F.size(h) == 1, F.split(t, ":", -1)).when(F.size(h) == 2, let(halves, fill))

    return let(F.split(t, "::", -1), by_halves)


def ipv6_groups(text: Column) -> Column:
    """Lower-case IPv6 text without a zone -> its eight 16-bit groups as hex strings
    (``array<string>``); null when it is not an IPv6 address."""

    def valid(g: Column) -> Column:
        return F.when((F.size(g) == 8) & F.forall(g, lambda x: x.rlike(_HEX_GROUP)), g)

    return let(let(_tail_quad_as_groups(text), _expand), valid)
