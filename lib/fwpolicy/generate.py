"""Deterministic simulated ``DeviceNetworkEvents`` for demos, tests and benchmarks.

fwpolicy needs realistic Defender for Endpoint network events without any real tenant: a small
fleet for unit tests and demos, and tens of millions of rows for the benchmark. This module builds
them with Spark alone, so the benchmark data is produced as fast as Spark can write it.

The fleet has Windows (about 80%) and Linux devices, each running a mix of programs from the
catalog below: listening system services, servers on a subset of devices, browsers and per-user
applications going outbound, a few rare programs in odd folders, and the noise that real exports
carry (loopback, link-local, self connections, upper-case and ``\\\\?\\`` paths, nulls, empty
``RemoteIPType``, IPv4-mapped IPv6 addresses, Linux ephemeral ports below 49152).

Why hashing and not ``rand()``: every random draw is ``xxhash64(key, seed, salt)`` of a stable key
(the row ``id`` from ``spark.range`` for per-event draws; the device index, the program or a pool
slot for per-device and per-pool draws), with a distinct salt per draw. The values therefore do not
depend on the partitioning, the number of cores or the execution order: the same arguments always
give the same rows, unlike ``F.rand(seed)`` whose stream is per partition.

Row layout: ``generate_events`` yields exactly ``devices * days * events_per_device_day`` rows;
row ``id`` encodes ``((day * devices) + device) * events_per_device_day + slot``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
from dataclasses import dataclass
from enum import IntEnum

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
# Catalog (data)
# --------------------------------------------------------------------------------------------


_SYSTEM32 = "C:\\Windows\\System32\\"
_UPPER_SYSTEM32 = "C:\\WINDOWS\\system32\\"
_LEGACY_PROFILES = "c:\\documents and settings\\"


@dataclass(frozen=True)
class Program:
    """One program of the simulated fleet.

    ``path`` is the full ``InitiatingProcessFolderPath``; ``{u}`` stands for the device's user.
    ``direction`` "out" programs initiate connections to ``ports`` (the first one is the usual
    one); "in" programs listen on ``ports`` and accept connections from ``peers``.
    ``weight`` is the program's relative share of the events of a device of its OS that runs it;
    ``share`` is the fraction of that OS's devices that run it (the others get the OS's fallback
    program for those events). ``pool`` is the number of distinct remote IPs fleet-wide (for
    "in" programs with public peers: distinct public clients). ``peers``: "public", "private"
    (domain controllers for "out", fleet devices for "in") or "mixed" (half each, "in" only).
    ``port_range`` = (lo, hi, p): with probability p the port is drawn from [lo, hi] instead.
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


_MS = ("login.microsoftonline.com", "graph.microsoft.com", "officecdn.microsoft.com")
_WEB = ("www.google.com", "www.bing.com", "github.com", "en.wikipedia.org", "cdn.jsdelivr.net")

CATALOG: tuple[Program, ...] = (
    # --- Windows: listening system services and servers -----------------------------------
    Program(
        "windows",
        "C:\\Windows\\System32\\svchost.exe",
        "in",
        40,
        (135, 445, 3389),
        peers="private",
        cmd="C:\\Windows\\system32\\svchost.exe -k RPCSS -p",
    ),
    Program(
        "windows",
        "C:\\Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.exe",
        "in",
        150,
        (1433,),
        share=0.04,
        peers="private",
        cmd='"C:\\Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\Binn'
        '\\sqlservr.exe" -sMSSQLSERVER',
    ),
    Program(
        "windows",
        "C:\\Program Files\\Apache Software Foundation\\Tomcat 9.0\\bin\\tomcat9.exe",
        "in",
        100,
        (8080,),
        pool=400,
        share=0.02,
        peers="mixed",
        cmd='"C:\\Program Files\\Apache Software Foundation\\Tomcat 9.0\\bin\\tomcat9.exe" //RS//Tomcat9',
    ),
    # --- Windows: outbound -------------------------------------------------------------------
    Program(
        "windows",
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        "out",
        220,
        (443, 80),
        pool=3000,
        hosts=_WEB,
        cmd='"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=utility '
        "--utility-sub-type=network.mojom.NetworkService",
    ),
    Program(
        "windows",
        "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
        "out",
        150,
        (443, 80),
        pool=2000,
        hosts=_WEB + _MS,
        cmd='"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe" --type=utility',
    ),
    Program(
        "windows",
        "C:\\Users\\{u}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe",
        "out",
        90,
        (443, 3478, 3479, 3480, 3481),
        pool=400,
        port_range=(50000, 50059, 0.2),
        hosts=("teams.microsoft.com", *_MS),
        cmd='"C:\\Users\\{u}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe"',
    ),
    Program(
        "windows",
        "C:\\Users\\{u}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe",
        "out",
        60,
        (443,),
        pool=200,
        hosts=("onedrive.live.com", "api.onedrive.com"),
        cmd='"C:\\Users\\{u}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe" /background',
    ),
    Program(
        "windows",
        "C:\\Users\\{u}\\AppData\\Roaming\\Zoom\\bin\\Zoom.exe",
        "out",
        40,
        (443, 8801, 8802, 8803),
        pool=150,
        share=0.35,
        hosts=("zoom.us",),
        cmd='"C:\\Users\\{u}\\AppData\\Roaming\\Zoom\\bin\\Zoom.exe"',
    ),
    Program(
        "windows",
        "C:\\Users\\{u}\\AppData\\Local\\slack\\app-4.41.97\\slack.exe",
        "out",
        30,
        (443,),
        pool=120,
        share=0.25,
        hosts=("slack.com", "edgeapi.slack.com"),
        cmd='"C:\\Users\\{u}\\AppData\\Local\\slack\\app-4.41.97\\slack.exe"',
    ),
    Program(
        "windows",
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
        "out",
        50,
        (443,),
        pool=300,
        hosts=("outlook.office365.com", *_MS),
        cmd='"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE"',
    ),
    Program(
        "windows",
        "C:\\Windows\\System32\\svchost.exe",
        "out",
        80,
        (443, 80),
        pool=800,
        hosts=("windowsupdate.com", "dl.delivery.mp.microsoft.com", "ctldl.windowsupdate.com"),
        cmd="C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s wuauserv",
    ),
    Program(
        "windows",
        "C:\\Windows\\System32\\svchost.exe",
        "out",
        50,
        (53, 88, 389, 445, 135),
        pool=6,
        peers="private",
        port_range=(49152, 65535, 0.25),
        cmd="C:\\Windows\\system32\\svchost.exe -k NetworkService -p -s Dnscache",
    ),
    Program(
        "windows",
        "C:\\Windows\\System32\\lsass.exe",
        "out",
        10,
        (88, 389, 636),
        pool=6,
        peers="private",
        cmd="C:\\Windows\\system32\\lsass.exe",
    ),
    Program(
        "windows",
        "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe",
        "out",
        40,
        (443,),
        pool=150,
        hosts=("wdcp.microsoft.com", "go.microsoft.com"),
        cmd='"C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe"',
    ),
    Program(
        "windows",
        "C:\\Program Files\\Windows Defender Advanced Threat Protection\\MsSense.exe",
        "out",
        30,
        (443,),
        pool=60,
        hosts=("winatp-gw-eus.microsoft.com",),
        cmd='"C:\\Program Files\\Windows Defender Advanced Threat Protection\\MsSense.exe"',
    ),
    Program(
        "windows",
        "C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe",
        "out",
        10,
        (443, 80),
        pool=40,
        hosts=("msedge.api.cdp.microsoft.com",),
        cmd='"C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe" /ua '
        "/installsource scheduler",
    ),
    Program(
        "windows",
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "out",
        5,
        (443,),
        pool=50,
        share=0.2,
        hosts=("www.powershellgallery.com",),
        cmd="powershell.exe -NoProfile -ExecutionPolicy Bypass",
    ),
    # --- Windows: rare programs in odd folders, on very few devices ----------------------------
    Program(
        "windows",
        "C:\\Users\\Public\\svc.exe",
        "out",
        40,
        (4444,),
        pool=2,
        share=0.002,
        cmd="C:\\Users\\Public\\svc.exe",
    ),
    Program(
        "windows",
        "C:\\Users\\{u}\\Downloads\\invoice.exe",
        "out",
        40,
        (8081, 443),
        pool=3,
        share=0.003,
        cmd='"C:\\Users\\{u}\\Downloads\\invoice.exe"',
    ),
    Program(
        "windows",
        "C:\\$Recycle.Bin\\x.exe",
        "out",
        40,
        (4444, 8443),
        pool=2,
        share=0.001,
        cmd="C:\\$Recycle.Bin\\x.exe -c",
    ),
    Program(
        "windows",
        "C:\\ProgramData\\upd.exe",
        "out",
        40,
        (8081,),
        pool=3,
        share=0.002,
        cmd="C:\\ProgramData\\upd.exe /silent",
    ),
    # --- Linux: listeners and servers ------------------------------------------------------------
    Program(
        "linux",
        "/usr/sbin/sshd",
        "in",
        80,
        (22,),
        peers="private",
        cmd="sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
    ),
    Program(
        "linux",
        "/usr/sbin/nginx",
        "in",
        250,
        (80, 443),
        pool=2000,
        share=0.3,
        peers="mixed",
        cmd="nginx: worker process",
    ),
    Program(
        "linux",
        "/usr/lib/postgresql/14/bin/postgres",
        "in",
        150,
        (5432,),
        share=0.1,
        peers="private",
        cmd="/usr/lib/postgresql/14/bin/postgres -D /var/lib/postgresql/14/main",
    ),
    # --- Linux: outbound ------------------------------------------------------------------------
    Program(
        "linux",
        "/usr/bin/curl",
        "out",
        150,
        (443, 80),
        pool=500,
        hosts=_WEB,
        cmd="curl -fsSL https://example.org/health",
    ),
    Program(
        "linux",
        "/usr/lib/apt/methods/http",
        "out",
        80,
        (80, 443),
        pool=40,
        hosts=("deb.debian.org", "security.debian.org", "archive.ubuntu.com"),
        cmd="/usr/lib/apt/methods/http",
    ),
    Program(
        "linux",
        "/usr/bin/python3.10",
        "out",
        100,
        (443,),
        pool=300,
        hosts=("pypi.org", *_WEB),
        cmd="/usr/bin/python3.10 /opt/app/worker.py",
    ),
    Program(
        "linux",
        "/usr/lib/systemd/systemd-resolved",
        "out",
        100,
        (53,),
        pool=4,
        peers="private",
        cmd="/usr/lib/systemd/systemd-resolved",
    ),
    Program(
        "linux",
        "/usr/sbin/chronyd",
        "out",
        30,
        (123,),
        pool=20,
        hosts=("pool.ntp.org",),
        cmd="/usr/sbin/chronyd -F 1",
    ),
    Program(
        "linux",
        "/opt/microsoft/mdatp/sbin/wdavdaemon",
        "out",
        60,
        (443,),
        pool=80,
        hosts=("winatp-gw-eus.microsoft.com",),
        cmd="/opt/microsoft/mdatp/sbin/wdavdaemon",
    ),
    Program(
        "linux",
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        "out",
        60,
        (443, 9092, 5432),
        pool=200,
        share=0.3,
        cmd="java -jar /opt/app/service.jar",
    ),
    # --- Linux: rare ---------------------------------------------------------------------------------
    Program("linux", "/tmp/.x/kworker", "out", 40, (4444, 1337), pool=2, share=0.004, cmd="[kworker/0:2]"),
)

# Events of a program that a device does not run go to its OS's fallback program.
FALLBACK_PATH = {
    "windows": "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    "linux": "/usr/bin/curl",
}

# Profile names: one-letter ones (a quirk of the KQL alias), mixed case, a non-ASCII one.
# fmt: off
USER_NAMES = (
    "a", "b", "J", "x", "bob", "Alice", "jdoe", "JSmith", "maria.garcia", "Li.Wei", "o.mueller",
    "KLee", "Administrator", "svc_build", "zoë", "Tom.Baker",
)
# fmt: on

# First octets of public blocks used for simulated Internet peers (no private/reserved ones).
PUBLIC_FIRST_OCTETS = (13, 20, 23, 34, 35, 40, 52, 54, 104, 142, 151, 157, 185, 199, 204)

# Ports whose traffic is UDP (DNS, NTP, NetBIOS, mDNS, Teams media), as inclusive ranges.
UDP_PORT_RANGES = ((53, 53), (123, 123), (137, 137), (3478, 3481), (5353, 5353), (50000, 50059))

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


class Peers(IntEnum):
    """Catalog ``peers``, as stored in the catalog column."""

    PUBLIC = 0
    PRIVATE = 1
    MIXED = 2


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
