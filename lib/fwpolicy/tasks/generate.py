"""Deterministic simulated ``DeviceNetworkEvents`` for demos, tests and benchmarks.

fwpolicy needs realistic Defender for Endpoint network events without any real tenant: a small
fleet for unit tests and demos, and tens of millions of rows for the benchmark. This module builds
them with Spark alone, so the benchmark data is produced as fast as Spark can write it.

The fleet has Windows (about 80%) and Linux devices, each running a mix of programs from the
catalog in ``catalogue.yaml`` beside this module: listening system services, servers on a subset of
devices, browsers and per-user applications going outbound, a few rare programs in odd folders.
The catalog is data so that the fleet can be read and changed without reading this code, which
adds the noise that real exports carry (loopback, link-local, self connections, upper-case and
``\\\\?\\`` paths, nulls, empty ``RemoteIPType``, IPv4-mapped IPv6 addresses, Linux ephemeral
ports below 49152).

Why hashing and not ``rand()``: every random draw is ``xxhash64(key, seed, salt)`` of a stable key
(the row ``id`` from ``spark.range`` for per-event draws; the device index, the program or a pool
slot for per-device and per-pool draws), with a distinct salt per draw. The values therefore do not
depend on the partitioning, the number of cores or the execution order: the same arguments always
give the same rows, unlike ``F.rand(seed)`` whose stream is per partition.

Row layout: ``generate_events`` yields exactly ``devices * days * events_per_device_day`` rows;
row ``id`` encodes ``((day * devices) + device) * events_per_device_day + slot``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from typing import Any

import yaml
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

log = logging.getLogger(__name__)

EVENT_SCHEMA = T.StructType(
    [
        T.StructField("Timestamp", T.TimestampType()),
        T.StructField("DeviceId", T.StringType()),
        T.StructField("DeviceName", T.StringType()),
        T.StructField("ActionType", T.StringType()),
        T.StructField("LocalIP", T.StringType()),
        T.StructField("LocalPort", T.IntegerType()),
        T.StructField("RemoteIP", T.StringType()),
        T.StructField("RemotePort", T.IntegerType()),
        T.StructField("RemoteIPType", T.StringType()),
        T.StructField("Protocol", T.StringType()),
        T.StructField("InitiatingProcessFolderPath", T.StringType()),
        T.StructField("InitiatingProcessFileName", T.StringType()),
        T.StructField("InitiatingProcessCommandLine", T.StringType()),
        T.StructField("RemoteUrl", T.StringType()),
        T.StructField("EventDate", T.DateType()),
    ]
)

WRITE_FORMATS = ("parquet", "delta")


# --------------------------------------------------------------------------------------------
# Catalog (the data is in catalogue.yaml)
# --------------------------------------------------------------------------------------------


_SYSTEM32 = "C:\\Windows\\System32\\"
_UPPER_SYSTEM32 = "C:\\WINDOWS\\system32\\"
_LEGACY_PROFILES = "c:\\documents and settings\\"
_OSES = ("windows", "linux")  # each has a fallback program; the device column ``linux`` tells them apart


class Peers(IntEnum):
    """Catalog ``peers``, as stored in the catalog column."""

    PUBLIC = 0
    PRIVATE = 1
    MIXED = 2


@dataclass(frozen=True)
class Program:
    """One program of the simulated fleet: an entry of ``programs`` in catalogue.yaml.

    The fields are those of the file, whose header says what each one means; ``port_range`` is
    (lo, hi, share), ``cmd`` defaults to ``path``.
    """

    os: str
    path: str
    direction: str
    weight: int
    ports: tuple[int, ...]
    pool: int = 1
    share: float = 1.0
    peers: str = "public"
    port_range: tuple[int, int, float] | None = None
    hosts: tuple[str, ...] = ()
    cmd: str = ""

    @property
    def file_name(self) -> str:
        return self.path.replace("/", "\\").rsplit("\\", 1)[-1]

    def record(self) -> dict[str, object]:
        """The entry as the catalog column holds it (see CATALOG_TYPE); strings split at ``{u}``."""
        path_head, _, path_tail = self.path.partition("{u}")
        cmd = self.cmd or self.path
        cmd_head, _, cmd_tail = cmd.partition("{u}")
        lo, hi, prob = self.port_range or (0, 0, 0.0)
        upper = self.path.startswith(_SYSTEM32)
        return {
            "outbound": self.direction == "out",
            "path_head": path_head,
            "path_tail": path_tail if "{u}" in self.path else None,
            "legacy_head": path_head.replace("C:\\Users\\", _LEGACY_PROFILES),
            "upper_path": _UPPER_SYSTEM32 + self.path[len(_SYSTEM32) :] if upper else None,
            "windir": self.path.startswith("C:\\Windows\\"),
            "file_name": self.file_name,
            "cmd_head": cmd_head,
            "cmd_tail": cmd_tail if "{u}" in cmd else None,
            "ports": list(self.ports),
            "pool": self.pool,
            "share": self.share,
            "peers": int(Peers[self.peers.upper()]),
            "range_lo": lo,
            "range_hi": hi,
            "range_p": prob,
            "hosts": list(self.hosts),
        }


CATALOG_TYPE = (
    "array<struct<outbound: boolean, path_head: string, path_tail: string, legacy_head: string, "
    "upper_path: string, windir: boolean, file_name: string, cmd_head: string, cmd_tail: string, "
    "ports: array<int>, pool: int, share: double, peers: int, range_lo: int, range_hi: int, "
    "range_p: double, hosts: array<string>>>"
)


@dataclass(frozen=True)
class Catalog:
    """The content of catalogue.yaml, validated."""

    programs: tuple[Program, ...]
    fallback_path: dict[str, str]
    user_names: tuple[str, ...]
    public_first_octets: tuple[int, ...]
    udp_port_ranges: tuple[tuple[int, int], ...]


class CatalogError(ValueError):
    """catalogue.yaml is malformed; the message names the file and the entry."""


class _Invalid(Exception):
    """Why a value is malformed; ``_reporting`` adds the file and the entry to make a CatalogError."""


_TOP_KEYS = ("host_groups", "programs", "fallback", "user_names", "public_first_octets", "udp_port_ranges")
_REQUIRED_PROGRAM_KEYS = ("os", "direction", "path", "weight", "ports")
_PROGRAM_KEYS = (*_REQUIRED_PROGRAM_KEYS, "cmd", "share", "port_range", "pool", "peers", "hosts")
_INT_MAX = 2**31 - 1  # the catalog column stores ints
_PRIVATE_POOL_MAX = 245  # private peers of "out" programs are 10.0.0.10 + slot


@contextlib.contextmanager
def _reporting(source: str, where: str) -> Iterator[None]:
    try:
        yield
    except _Invalid as e:
        raise CatalogError(f"{source}: {where}: {e}") from None


def _integer(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _Invalid(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise _Invalid(f"{what} must be a number in (0, 1], got {value!r}")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        # YAML reads a bare no, on, 1.0 or 2024-01-01 as a boolean, number or date.
        hint = " (quote it)" if isinstance(value, bool | int | float | dt.date) else ""
        raise _Invalid(f"{what} must be a non-empty string, got {value!r}{hint}")
    return value


def _items(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _Invalid(f"{what} must be a non-empty list, got {value!r}")
    return value


def _choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _Invalid(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _keys(raw: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Invalid(f"expected a mapping with keys {', '.join(allowed)}, got {raw!r}")
    unknown = [str(k) for k in raw if k not in allowed]
    if unknown:
        raise _Invalid(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(allowed)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise _Invalid(f"missing key(s) {', '.join(missing)}")
    return raw


def _parse_program(raw: Any) -> Program:
    raw = _keys(raw, _PROGRAM_KEYS, _REQUIRED_PROGRAM_KEYS)
    path = _text(raw["path"], "path")
    cmd = _text(raw.get("cmd", path), "cmd")
    for what, text in (("path", path), ("cmd", cmd)):
        if text.count("{u}") > 1:
            raise _Invalid(f"{what} may hold {{u}} once, got {text!r}")
    direction = _choice(raw["direction"], "direction", ("in", "out"))
    peers = _choice(raw.get("peers", "public"), "peers", tuple(p.name.lower() for p in Peers))
    if peers == "mixed" and direction == "out":
        raise _Invalid("peers 'mixed' is for direction 'in' only")
    pool = _integer(raw.get("pool", 1), "pool", 1, _INT_MAX)
    if peers == "private" and pool > _PRIVATE_POOL_MAX:
        raise _Invalid(
            f"pool must be at most {_PRIVATE_POOL_MAX} for private peers (10.0.0.10 + slot), got {pool}"
        )
    port_range = None
    if "port_range" in raw:
        spec = raw["port_range"]
        if not isinstance(spec, dict) or set(spec) != {"lo", "hi", "share"}:
            raise _Invalid(f"port_range must be a mapping with the keys lo, hi, share, got {spec!r}")
        lo = _integer(spec["lo"], "port_range lo", 1, 65535)
        hi = _integer(spec["hi"], "port_range hi", lo, 65535)
        port_range = (lo, hi, _fraction(spec["share"], "port_range share"))
    hosts: list[str] = []
    for item in _items(raw["hosts"], "hosts") if "hosts" in raw else ():
        # An alias of a host group is a list: its hosts go in its place.
        hosts.extend(_text(host, "a host") for host in (item if isinstance(item, list) else [item]))
    return Program(
        os=_choice(raw["os"], "os", _OSES),
        path=path,
        direction=direction,
        weight=_integer(raw["weight"], "weight", 1, _INT_MAX),
        ports=tuple(_integer(port, "a port", 1, 65535) for port in _items(raw["ports"], "ports")),
        pool=pool,
        share=_fraction(raw.get("share", 1.0), "share"),
        peers=peers,
        port_range=port_range,
        hosts=tuple(hosts),
        cmd=cmd,
    )


def parse_catalog(text: str, source: str) -> Catalog:
    """The catalog in the YAML ``text``, validated; ``source`` names the file in CatalogError."""
    stream = io.StringIO(text)
    stream.name = source  # YAML's own messages then name the file too
    try:
        loaded = yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise CatalogError(f"{source}: not valid YAML: {e}") from e
    with _reporting(source, "top level"):
        loaded = _keys(loaded, _TOP_KEYS, _TOP_KEYS[1:])
    with _reporting(source, "host_groups"):
        # Only their anchors are used (by hosts), but a typo here would surface far from its cause.
        groups = loaded.get("host_groups") or {}
        if not isinstance(groups, dict):
            raise _Invalid(f"expected a mapping of group names to lists of hosts, got {groups!r}")
        for name, hosts in groups.items():
            for j, host in enumerate(_items(hosts, f"group {name}"), start=1):
                _text(host, f"host {j} of group {name}")
    with _reporting(source, "programs"):
        entries = _items(loaded["programs"], "the value")
    programs = []
    for i, raw in enumerate(entries, start=1):
        label = f" ({raw['path']})" if isinstance(raw, dict) and isinstance(raw.get("path"), str) else ""
        with _reporting(source, f"program {i}{label}"):
            programs.append(_parse_program(raw))
    with _reporting(source, "fallback"):
        fallback = _keys(loaded["fallback"], _OSES, _OSES)
        for os_name in _OSES:
            if not any(p.os == os_name and p.path == fallback[os_name] for p in programs):
                raise _Invalid(f"{os_name}: {fallback[os_name]!r} is not the path of a {os_name} program")
    with _reporting(source, "user_names"):
        names = _items(loaded["user_names"], "the value")
        users = tuple(_text(u, f"name {j}") for j, u in enumerate(names, start=1))
    with _reporting(source, "public_first_octets"):
        values = _items(loaded["public_first_octets"], "the value")
        octets = tuple(_integer(o, f"octet {j}", 1, 223) for j, o in enumerate(values, start=1))
        if {10, 127} & set(octets):
            raise _Invalid("10 and 127 are private and loopback blocks, not public ones")
    with _reporting(source, "udp_port_ranges"):
        ranges = []
        for j, pair in enumerate(_items(loaded["udp_port_ranges"], "the value"), start=1):
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Invalid(f"range {j} must be a [lo, hi] pair, got {pair!r}")
            lo = _integer(pair[0], f"range {j} lo", 1, 65535)
            ranges.append((lo, _integer(pair[1], f"range {j} hi", lo, 65535)))
    return Catalog(
        programs=tuple(programs),
        fallback_path={os_name: fallback[os_name] for os_name in _OSES},
        user_names=users,
        public_first_octets=octets,
        udp_port_ranges=tuple(ranges),
    )


def load_catalog() -> Catalog:
    """The catalogue.yaml shipped beside this module (a package resource, so it is in the wheel)."""
    resource = resources.files(__package__) / "catalogue.yaml"
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(
            f"{resource}: not found; the package was built without it (see package-data in pyproject.toml)"
        ) from None
    return parse_catalog(text, str(resource))


# Loaded once, at import: the steps below read these as constants.
_CATALOG = load_catalog()
CATALOG = _CATALOG.programs
# Events of a program that a device does not run go to its OS's fallback program.
FALLBACK_PATH = _CATALOG.fallback_path
USER_NAMES = _CATALOG.user_names
PUBLIC_FIRST_OCTETS = _CATALOG.public_first_octets  # of the simulated Internet peers
UDP_PORT_RANGES = _CATALOG.udp_port_ranges  # inclusive ranges of the ports whose traffic is UDP

LEGACY_PROFILE_SHARE = 0.02  # devices whose profiles are c:\documents and settings\<u>\
UPPER_WINDIR_SHARE = 0.1  # devices reporting C:\WINDOWS\system32\...
UNC_PREFIX_SHARE = 0.02  # events with \\?\C:\Windows\... paths

# Per-event action mixes (cumulative thresholds).
OUTBOUND_ACTIONS = (
    (0.80, "ConnectionSuccess"),
    (0.85, "ConnectionFound"),
    (0.92, "ConnectionRequest"),
    (1.00, "ConnectionFailed"),
)
LISTEN_SHARE = 0.1  # inbound programs: ListeningConnectionCreated, else InboundConnectionAccepted

# Noise on outbound events (cumulative thresholds) and nulls on any event.
LOOPBACK_UPTO, LINKLOCAL_UPTO, SELF_UPTO = 0.03, 0.04, 0.045
IPV4_MAPPED_SHARE = 0.05  # inbound private clients reported as ::ffff:10.x.y.z
NULL_IPTYPE_SHARE, EMPTY_IPTYPE_SHARE = 0.005, 0.005
NULL_REMOTEIP_SHARE, NULL_FOLDER_SHARE = 0.002, 0.002

ROWS_PER_PARTITION = 500_000
_DAY_MICROS = 86_400 * 1_000_000
_U53 = 1 << 53


class Salt(IntEnum):
    """One salt per random draw, so that draws are independent."""

    LINUX_SLOT = 1
    USER = 2
    USER_SUFFIX = 3
    USER_SUFFIX_NUMBER = 6
    LEGACY = 4
    UPPER_WINDIR = 5
    TIME = 10
    PROGRAM = 11
    GATE = 12
    ACTION = 13
    PORT = 14
    PORT_RANGE = 15
    POOL = 16
    LOCAL_PORT = 17
    CLIENT = 18
    CLIENT_PUBLIC = 19
    CLIENT_PORT = 20
    MAPPED = 21
    NOISE = 22
    NOISE_ADDR = 23
    IPTYPE = 24
    NULL_REMOTEIP = 25
    NULL_FOLDER = 26
    UNC = 27
    PROTOCOL = 28
    URL = 29
    PUBLIC_IP = 30
    PORT_USUAL = 31
    PORT_RANGE_PICK = 32
    LOOPBACK_PORT = 33
    LINK_LOCAL_HOST = 34


class Kind(IntEnum):
    """Helper column ``kind``: what an event is."""

    OUT = 0  # an outbound connection (ConnectionSuccess/Found/Request/Failed)
    LISTEN = 1  # ListeningConnectionCreated
    ACCEPT = 2  # InboundConnectionAccepted


class Noise(IntEnum):
    """Helper column ``noise``: how an outbound event deviates from its program's peers."""

    NONE = 0
    LOOPBACK = 1
    LINK_LOCAL = 2
    SELF = 3  # RemoteIP == LocalIP


# --------------------------------------------------------------------------------------------
# Deterministic draws
# --------------------------------------------------------------------------------------------


def _hash(seed: int, salt: Salt, *keys: Column) -> Column:
    return F.xxhash64(*keys, F.lit(seed), F.lit(int(salt)))


def _uniform(seed: int, salt: Salt, *keys: Column) -> Column:
    """Uniform double in [0, 1); per event unless keys are given."""
    keys = keys or (F.col("id"),)
    return F.pmod(_hash(seed, salt, *keys), F.lit(_U53)) / float(_U53)


def _below(seed: int, salt: Salt, n: Column | int, *keys: Column) -> Column:
    """Uniform long in [0, n); per event unless keys are given."""
    keys = keys or (F.col("id"),)
    n_col = n if isinstance(n, Column) else F.lit(int(n))
    return F.pmod(_hash(seed, salt, *keys), n_col.cast("long"))


def _ipv4(*octets: Column) -> Column:
    return F.concat_ws(".", *[o.cast("string") for o in octets])


def _device_ip(index: Column) -> Column:
    """10.x.y.z address of fleet device ``index`` (unique up to 12.8M devices)."""
    return _ipv4(
        F.lit(10),
        F.lit(16) + F.pmod(F.floor(index / 64_000), F.lit(200)),
        F.pmod(F.floor(index / 250), F.lit(256)),
        F.lit(1) + F.pmod(index, F.lit(250)),
    )


def _public_ip(h: Column) -> Column:
    """A public IPv4 address made of the bits of the hash ``h`` (a column reference)."""
    first = F.element_at(
        F.array(*[F.lit(o) for o in PUBLIC_FIRST_OCTETS]),
        (F.pmod(h, F.lit(len(PUBLIC_FIRST_OCTETS))) + 1).cast("int"),
    )
    return _ipv4(
        first,
        F.pmod(F.shiftright(h, 8), F.lit(256)),
        F.pmod(F.shiftright(h, 16), F.lit(256)),
        F.lit(1) + F.pmod(F.shiftright(h, 24), F.lit(254)),
    )


def _pick(cumulative: tuple[tuple[float, str], ...], u: Column) -> Column:
    """Value of the first threshold above ``u`` (a uniform draw)."""
    expr = F.lit(cumulative[-1][1])
    for upto, value in reversed(cumulative[:-1]):
        expr = F.when(u < upto, F.lit(value)).otherwise(expr)
    return expr


def _in_ranges(value: Column, ranges: tuple[tuple[int, int], ...]) -> Column:
    return functools.reduce(lambda a, b: a | b, [value.between(lo, hi) for lo, hi in ranges])


def _is(column: str, code: IntEnum) -> Column:
    return F.col(column) == F.lit(int(code))


def _with_barrier(df: DataFrame) -> DataFrame:
    """Adds ``barrier``, always true, that Spark counts as nondeterministic; see ``_output``.

    Spark never pushes a caller's filter below a projection with a nondeterministic column.
    Pushed down, a filter on, say, ActionType would inline the helper columns it depends on, each
    as often as it is used, into one huge condition that the JVM cannot compile.
    """
    return df.withColumn("barrier", F.spark_partition_id() >= 0)


def _output(c: Column) -> Column:
    """Same values, declared nullable (as Defender's columns all are), above the barrier."""
    return F.when(F.col("barrier"), c)


# --------------------------------------------------------------------------------------------
# Catalog as column expressions
# --------------------------------------------------------------------------------------------


def _fallback_id(os_name: str) -> int:
    return next(i for i, p in enumerate(CATALOG) if p.os == os_name and p.path == FALLBACK_PATH[os_name])


def _choose_program(u: Column, linux: Column) -> Column:
    """``prog_id`` whose share of its OS's total weight holds the uniform draw ``u``."""
    by_os = {}
    for os_name in FALLBACK_PATH:
        progs = [(i, p) for i, p in enumerate(CATALOG) if p.os == os_name]
        total = sum(p.weight for _, p in progs)
        bounds, cum = [], 0
        for i, p in progs:
            cum += p.weight
            bounds.append((cum / total, i))
        choice = F.lit(bounds[-1][1])
        for upto, i in reversed(bounds[:-1]):
            choice = F.when(u < upto, F.lit(i)).otherwise(choice)
        by_os[os_name] = choice
    return F.when(linux, by_os["linux"]).otherwise(by_os["windows"])


def _catalog_column() -> Column:
    """CATALOG as one constant ``array<struct>`` column, indexed by ``prog_id``.

    Parsed from one JSON literal (Spark folds it into a constant): a column built of ``F.lit``
    calls would cost a round trip to the JVM per field.
    """
    return F.from_json(F.lit(json.dumps([p.record() for p in CATALOG])), CATALOG_TYPE)


def _program(catalog: Column, prog_id: Column) -> Column:
    """The catalog entry of ``prog_id``."""
    return F.element_at(catalog, prog_id + 1)


# --------------------------------------------------------------------------------------------
# Steps
#
# Each helper column is added by its own withColumn and later read by name, so Spark keeps an
# expression that is read several times in one projection instead of copying it into every
# reader. Catalog attributes are looked up by prog_id where they are needed, and strings are
# built only in the branch that uses them.
# --------------------------------------------------------------------------------------------


def _partitions(devices: int, days: int, per_device_day: int) -> int:
    return max(1, math.ceil(devices * days * per_device_day / ROWS_PER_PARTITION))


def _rows(spark: SparkSession, devices: int, days: int, per_device_day: int) -> DataFrame:
    """Row ``id`` = ((day * devices) + device) * per_device_day + slot."""
    total = devices * days * per_device_day
    parts = _partitions(devices, days, per_device_day)
    return spark.range(0, total, 1, parts).select(
        "id",
        F.expr(f"CAST(id DIV {devices * per_device_day} AS INT)").alias("day"),
        F.expr(f"pmod(id DIV {per_device_day}, {devices})").alias("device"),
    )


def _codegen_boundary(df: DataFrame, partitions: int) -> DataFrame:
    """Same rows and partitions, but Spark compiles the steps before and after separately.

    ``coalesce`` to the current number of partitions moves no data; as an operator without code
    generation it ends a whole-stage-codegen stage. Fused into one stage, all the steps make a
    method over the JVM's 8000-byte JIT limit, which then runs interpreted, several times slower.
    """
    return df.coalesce(partitions)


def _with_device(df: DataFrame, seed: int) -> DataFrame:
    """Per-device attributes, all functions of the device index."""
    dev = F.col("device")
    # Exactly one Linux device in each block of five: 80% Windows at any fleet size.
    linux_slot = _below(seed, Salt.LINUX_SLOT, 5, F.expr("device DIV 5"))
    base_user = F.col("base_user")
    df = df.withColumns(
        {
            "linux": F.pmod(dev, F.lit(5)) == linux_slot,
            "base_user": F.element_at(
                F.array(*[F.lit(u) for u in USER_NAMES]),
                (_below(seed, Salt.USER, len(USER_NAMES), dev) + 1).cast("int"),
            ),
        }
    )
    suffix = (_below(seed, Salt.USER_SUFFIX_NUMBER, 90, dev) + 10).cast("string")
    return df.withColumns(
        {
            "user": F.when(
                (F.length(base_user) > 1) & (_uniform(seed, Salt.USER_SUFFIX, dev) < 0.3),
                F.concat(base_user, suffix),
            ).otherwise(base_user),
            "legacy": ~F.col("linux") & (_uniform(seed, Salt.LEGACY, dev) < LEGACY_PROFILE_SHARE),
            "upper_windir": _uniform(seed, Salt.UPPER_WINDIR, dev) < UPPER_WINDIR_SHARE,
        }
    ).drop("base_user")


def _with_device_names(df: DataFrame, seed: int) -> DataFrame:
    """DeviceId (sha1 of seed and index) and DeviceName."""
    device = F.col("device").cast("string")
    prefix = F.when(F.col("linux"), F.lit("lnx-")).otherwise(F.lit("desktop-"))
    return df.withColumns(
        {
            "DeviceId": F.sha1(F.concat_ws(":", F.lit(str(seed)), device)),
            "DeviceName": F.concat(prefix, F.lpad(device, 6, "0")),
        }
    )


def _with_program(df: DataFrame, seed: int, catalog: Column) -> DataFrame:
    """Weighted program choice per event, then the OS's fallback if the device does not run it."""
    df = df.withColumn("u_program", _uniform(seed, Salt.PROGRAM))
    df = df.withColumn("chosen", _choose_program(F.col("u_program"), F.col("linux")))
    chosen = F.col("chosen")
    runs_it = _uniform(seed, Salt.GATE, F.col("device"), chosen) < _program(catalog, chosen)["share"]
    fallback = F.when(F.col("linux"), F.lit(_fallback_id("linux"))).otherwise(F.lit(_fallback_id("windows")))
    return df.withColumn("prog_id", F.when(runs_it, chosen).otherwise(fallback)).drop("u_program", "chosen")


def _with_folder_path(df: DataFrame, seed: int, catalog: Column) -> DataFrame:
    """InitiatingProcessFolderPath for the device's user, with the device's quirks."""
    prog, path = _program(catalog, F.col("prog_id")), F.col("path")
    head = F.when(F.col("legacy"), prog["legacy_head"]).otherwise(prog["path_head"])
    df = df.withColumn(
        "path",
        F.when(prog["path_tail"].isNotNull(), F.concat(head, F.col("user"), prog["path_tail"]))
        .when(F.col("upper_windir") & prog["upper_path"].isNotNull(), prog["upper_path"])
        .otherwise(prog["path_head"]),
    )
    unc = prog["windir"] & (_uniform(seed, Salt.UNC) < UNC_PREFIX_SHARE)
    return df.withColumn(
        "path",
        F.when(_uniform(seed, Salt.NULL_FOLDER) < NULL_FOLDER_SHARE, F.lit(None))
        .when(unc, F.concat(F.lit("\\\\?\\"), path))
        .otherwise(path),
    )


def _with_peers(df: DataFrame, seed: int, devices: int, catalog: Column) -> DataFrame:
    """Kind of event, its noise, service port and peer draws (no strings yet)."""
    prog = _program(catalog, F.col("prog_id"))
    outbound, u_action, u_noise = prog["outbound"], F.col("u_action"), F.col("u_noise")
    ports = prog["ports"]
    any_port = F.element_at(ports, (_below(seed, Salt.PORT, F.size(ports)) + 1).cast("int"))
    listed_port = F.when(
        outbound & (_uniform(seed, Salt.PORT_USUAL) < 0.7), F.element_at(ports, 1)
    ).otherwise(any_port)
    range_port = prog["range_lo"] + _below(seed, Salt.PORT_RANGE, prog["range_hi"] - prog["range_lo"] + 1)
    u_pool = _uniform(seed, Salt.POOL)
    df = df.withColumns({"u_action": _uniform(seed, Salt.ACTION), "u_noise": _uniform(seed, Salt.NOISE)})
    df = df.withColumns(
        {
            "kind": F.when(outbound, F.lit(int(Kind.OUT)))
            .when(u_action < LISTEN_SHARE, F.lit(int(Kind.LISTEN)))
            .otherwise(F.lit(int(Kind.ACCEPT))),
            "noise": F.when(~outbound, F.lit(int(Noise.NONE)))
            .when(u_noise < LOOPBACK_UPTO, F.lit(int(Noise.LOOPBACK)))
            .when(u_noise < LINKLOCAL_UPTO, F.lit(int(Noise.LINK_LOCAL)))
            .when(u_noise < SELF_UPTO, F.lit(int(Noise.SELF)))
            .otherwise(F.lit(int(Noise.NONE))),
            "service_port": F.when(_uniform(seed, Salt.PORT_RANGE_PICK) < prog["range_p"], range_port)
            .otherwise(listed_port)
            .cast("int"),
            # Pool slot, skewed: a few peers are popular and the tail is long.
            "slot": F.floor(prog["pool"] * u_pool * u_pool).cast("int"),
            "peers": prog["peers"],
            "client": _below(seed, Salt.CLIENT, devices),
        }
    )
    return df.withColumns(
        {
            "public_client": _is("peers", Peers.PUBLIC)
            | (_is("peers", Peers.MIXED) & (_uniform(seed, Salt.CLIENT_PUBLIC) < 0.5)),
            "pool_hash": _hash(seed, Salt.PUBLIC_IP, F.col("prog_id"), F.col("slot")),
        }
    )


def _with_ports(df: DataFrame, seed: int) -> DataFrame:
    """ActionType, LocalIP and the ports, from the kind of event and its noise."""
    out, listen, accept = _is("kind", Kind.OUT), _is("kind", Kind.LISTEN), _is("kind", Kind.ACCEPT)
    loopback, link_local = _is("noise", Noise.LOOPBACK), _is("noise", Noise.LINK_LOCAL)
    ephemeral = F.when(F.col("linux"), F.lit(32768) + _below(seed, Salt.LOCAL_PORT, 61000 - 32768)).otherwise(
        F.lit(49152) + _below(seed, Salt.LOCAL_PORT, 65536 - 49152)
    )
    df = df.withColumn(
        "loopback_ip",
        F.when(_uniform(seed, Salt.NOISE_ADDR) < 0.2, F.lit("::1")).otherwise(F.lit("127.0.0.1")),
    )
    df = df.withColumns(
        {
            "ActionType": F.when(listen, F.lit("ListeningConnectionCreated"))
            .when(accept, F.lit("InboundConnectionAccepted"))
            .otherwise(_pick(OUTBOUND_ACTIONS, F.col("u_action"))),
            "LocalIP": F.when(listen, F.lit("0.0.0.0"))
            .when(loopback, F.col("loopback_ip"))
            .otherwise(_device_ip(F.col("device"))),
            "LocalPort": F.when(out, ephemeral).otherwise(F.col("service_port")),
            "RemotePort": F.when(listen, F.lit(0))
            .when(accept, F.lit(49152) + _below(seed, Salt.CLIENT_PORT, 65536 - 49152))
            .when(loopback, F.lit(1024) + _below(seed, Salt.LOOPBACK_PORT, 65536 - 1024))
            .when(link_local, F.lit(80))
            .otherwise(F.col("service_port")),
        }
    )
    protocol_port = F.when(out, F.col("RemotePort")).otherwise(F.col("service_port"))
    return df.withColumn(
        "Protocol",
        F.when(_in_ranges(protocol_port, UDP_PORT_RANGES), F.lit("Udp"))
        .when(_uniform(seed, Salt.PROTOCOL) < 0.3, F.lit("TcpV4"))
        .otherwise(F.lit("Tcp")),
    )


def _with_remote_ip(df: DataFrame, seed: int) -> DataFrame:
    """RemoteIP and RemoteIPType; each address string is built only for the rows that use it."""
    listen, accept = _is("kind", Kind.LISTEN), _is("kind", Kind.ACCEPT)
    loopback, link_local = _is("noise", Noise.LOOPBACK), _is("noise", Noise.LINK_LOCAL)
    private_peers = _is("peers", Peers.PRIVATE)
    link_local_host = _hash(seed, Salt.LINK_LOCAL_HOST, F.col("id"))
    link_local_ip = F.when(F.col("linux"), F.lit("169.254.169.254")).otherwise(
        _ipv4(
            F.lit(169),
            F.lit(254),
            F.pmod(F.shiftright(link_local_host, 8), F.lit(256)),
            F.lit(1) + F.pmod(link_local_host, F.lit(254)),
        )
    )
    fleet_ip = _device_ip(F.col("client"))
    mapped = _uniform(seed, Salt.MAPPED) < IPV4_MAPPED_SHARE
    public_ip = _public_ip(F.col("pool_hash"))
    remote_ip = (
        F.when(_uniform(seed, Salt.NULL_REMOTEIP) < NULL_REMOTEIP_SHARE, F.lit(None))
        .when(listen, F.lit(""))
        .when(accept & F.col("public_client"), public_ip)
        .when(accept & mapped, F.concat(F.lit("::ffff:"), fleet_ip))
        .when(accept, fleet_ip)
        .when(loopback, F.col("loopback_ip"))
        .when(link_local, link_local_ip)
        .when(_is("noise", Noise.SELF), F.col("LocalIP"))
        .when(private_peers, _ipv4(F.lit(10), F.lit(0), F.lit(0), F.lit(10) + F.col("slot")))
        .otherwise(public_ip)
    )
    u_type = _uniform(seed, Salt.IPTYPE)
    remote_type = (
        F.when(u_type < NULL_IPTYPE_SHARE, F.lit(None))
        .when(listen | (u_type < NULL_IPTYPE_SHARE + EMPTY_IPTYPE_SHARE), F.lit(""))
        .when(accept & F.col("public_client"), F.lit("Public"))
        .when(accept, F.lit("Private"))
        .when(loopback, F.lit("Loopback"))
        .when(link_local, F.lit("LinkLocal"))
        .when(_is("noise", Noise.SELF) | private_peers, F.lit("Private"))
        .otherwise(F.lit("Public"))
    )
    return df.withColumns({"RemoteIP": remote_ip, "RemoteIPType": remote_type})


def _event_columns(seed: int, start: dt.date, catalog: Column) -> dict[str, Column]:
    """The remaining EVENT_SCHEMA columns."""
    start_micros = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc).timestamp())
    micros = (
        F.lit(start_micros * 1_000_000) + F.col("day") * _DAY_MICROS + _below(seed, Salt.TIME, _DAY_MICROS)
    )
    prog = _program(catalog, F.col("prog_id"))
    hosts = prog["hosts"]
    url = F.when(
        (F.size(hosts) > 0) & (_uniform(seed, Salt.URL) < 0.6),
        F.element_at(hosts, (F.pmod(F.col("slot"), F.size(hosts)) + 1).cast("int")),
    ).otherwise(F.lit(""))
    return {
        "Timestamp": F.timestamp_micros(micros),
        "InitiatingProcessFolderPath": F.col("path"),
        "InitiatingProcessFileName": prog["file_name"],
        "InitiatingProcessCommandLine": F.when(
            prog["cmd_tail"].isNotNull(), F.concat(prog["cmd_head"], F.col("user"), prog["cmd_tail"])
        ).otherwise(prog["cmd_head"]),
        "RemoteUrl": F.when(_is("kind", Kind.OUT) & _is("noise", Noise.NONE), url).otherwise(F.lit("")),
        "EventDate": F.date_add(F.lit(start), F.col("day")),
    }


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_events(
    spark: SparkSession,
    devices: int,
    days: int,
    seed: int = 7,
    start: dt.date = dt.date(2026, 8, 1),
    events_per_device_day: int = 40,
) -> DataFrame:
    """Simulated ``DeviceNetworkEvents`` of ``devices`` devices over ``[start, start + days)``.

    Exactly ``devices * days * events_per_device_day`` rows, with EVENT_SCHEMA; Timestamps are
    spread over each UTC day and ``EventDate`` is their UTC date. The same arguments give the
    same rows on any cluster and partitioning.
    """
    for name, value in (
        ("devices", devices),
        ("days", days),
        ("events_per_device_day", events_per_device_day),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    log.info(
        "generating %d devices x %d days x %d events from %s (seed %d)",
        devices,
        days,
        events_per_device_day,
        start,
        seed,
    )
    parts = _partitions(devices, days, events_per_device_day)
    df = _rows(spark, devices, days, events_per_device_day)
    # Four code-generation stages, each small enough for the JIT (see _codegen_boundary).
    catalog = _catalog_column()
    df = _with_folder_path(_with_program(_with_device(df, seed), seed, catalog), seed, catalog)
    df = _codegen_boundary(df, parts)
    df = _with_ports(_with_peers(df, seed, devices, catalog), seed)
    df = _codegen_boundary(df, parts)
    df = _with_remote_ip(df, seed)
    df = _codegen_boundary(df, parts)
    df = _with_barrier(_with_device_names(df, seed))
    columns = _event_columns(seed, start, catalog)
    return df.select(
        *[
            _output(columns.get(f.name, F.col(f.name)).cast(f.dataType)).alias(f.name)
            for f in EVENT_SCHEMA.fields
        ]
    )


def write_lake(df: DataFrame, output: str, fmt: str = "parquet") -> None:
    """Write ``df`` to ``output`` as a ``fmt`` dataset partitioned by EventDate (overwrite)."""
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"unsupported format {fmt!r}: expected one of {', '.join(WRITE_FORMATS)}")
    log.info("writing %s lake to %s", fmt, output)
    writer = df.write.format(fmt).mode("overwrite").partitionBy("EventDate")
    if fmt == "delta":
        writer = writer.option("overwriteSchema", "true")
    writer.save(output)
