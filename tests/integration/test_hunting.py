"""unusual_programs: each rule (hit and near miss), the public-address classifier, the scoring.

Spark jobs cost seconds on a busy machine, so the expression cases (addresses, paths) are rows
of one frame collected once, and the table cases are one fleet of events whose tables under
two settings are unioned and collected once (from matched rows computed once). The settings
and the scoring table of the docs, which need no Spark, are in ``unit/test_hunting_settings.py``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

import fwpolicy.review.hunting as hunting
from fwpolicy.config import ConfigError, PolicyConfig
from fwpolicy.query.seed import SeedQuery, connection_table, from_connections, where_clauses
from fwpolicy.review.hunting import (
    HUNTING_COLUMNS,
    HuntingSettings,
    is_public_ip,
    path_rules,
    unusual_programs,
)

from helpers import event, events_df

# --------------------------------------------------------------------------- expressions

IPS = {
    # public
    "8.8.8.8": True,
    "11.0.0.1": True,
    "172.15.255.255": True,
    "172.32.0.1": True,
    "192.169.0.1": True,
    "100.63.255.255": True,
    "100.128.0.0": True,
    "169.253.255.255": True,
    "223.255.255.255": True,
    " 8.8.4.4 ": True,
    "::ffff:8.8.8.8": True,
    "::FFFF:8.8.8.8": True,
    "0:0:0:0:0:ffff:808:808": True,  # IPv4-mapped in hex: 8.8.8.8
    "2001:4860:4860::8888": True,
    "2606:4700:4700:0:0:0:0:1111": True,
    "2001:db8::1": True,  # documentation range: counted as public (module docs)
    "192.0.2.10": True,  # documentation range: counted as public
    "fbff::1": True,  # just below fc00::/7
    "fe00::1": True,  # between fc00::/7 and fe80::/10
    # RFC 1918, CGNAT, loopback, link-local, multicast, reserved, unspecified
    "10.0.0.1": False,
    "10.255.255.255": False,
    "172.16.0.1": False,
    "172.31.255.255": False,
    "192.168.1.1": False,
    "100.64.0.1": False,
    "100.127.255.255": False,
    "169.254.1.1": False,
    "127.0.0.1": False,
    "127.255.255.254": False,
    "0.0.0.0": False,
    "224.0.0.251": False,
    "239.255.255.250": False,
    "255.255.255.255": False,
    "::1": False,
    "0:0:0:0:0:0:0:1": False,
    "::": False,
    "::ffff:10.0.0.1": False,
    "::ffff:192.168.1.162": False,
    "::ffff:127.0.0.1": False,
    "::ffff:a00:1": False,  # 10.0.0.1 in hex
    "fc00::": False,
    "fd12:3456::1": False,
    "fe80::1": False,
    "fe80::1%eth0": False,
    "FE80::1%12": False,
    "febf:ffff::1": False,
    "fec0::1": False,
    "ff02::1": False,
    # not addresses
    "": False,
    "-": False,
    "10.0.0.256": False,
    "010.0.0.1": False,
    "1.2.3": False,
    "8.8.8.8:53": False,
    "example.com": False,
    "1::2::3": False,
    "12345::1": False,
    "gggg::1": False,
    ":::": False,
    "1:2:3:4:5:6:7:8:9": False,
    "1:2:3:4:5:6:7": False,
    "::ffff:1.2.3.999": False,
    None: False,
}

ALL: set[str] = set()  # no path rule
UW, DT, PF, PD, RB, HU = (
    "user_writable_path",
    "downloads_or_temp",
    "public_folder",
    "programdata_root",
    "recycle_bin",
    "hidden_unix_dir",
)
PATHS = {
    r"C:\Users\bob\AppData\Local\Programs\x.exe": {UW},
    r"e:\users\BOB\x.exe": {UW},
    r"\\?\C:\Users\bob\x.exe": {UW},
    r"\Device\HarddiskVolume3\Users\bob\x.exe": {UW},
    r"C:\Documents and Settings\bob\x.exe": {UW},
    r"C:\Users\Default\x.exe": ALL,
    r"C:\Users\All Users\x.exe": ALL,
    r"C:\Users\x.exe": ALL,
    r"C:\Program Files\Users\bob\x.exe": ALL,
    r"C:\Users\bob\Downloads\a.exe": {UW, DT},
    r"C:\Users\bob\AppData\Local\Temp\7z1\a.exe": {UW, DT},
    r"C:\Documents and Settings\bob\Local Settings\Temp\a.exe": {UW, DT},
    r"C:\WINDOWS\Temp\a.exe": {DT},
    r"\\?\D:\Windows\Temp\a.exe": {DT},
    r"C:\Windows\System32\svchost.exe": ALL,
    r"C:\Windows\Temporary\a.exe": ALL,
    r"D:\Data\downloads-archive\a.exe": ALL,
    "/tmp/a": {DT},
    "/var/tmp/a": {DT},
    "/dev/shm/a": {DT},
    "/private/tmp/a": {DT},
    "/opt/tmp/a": ALL,
    "/home/bob/Downloads/a": {UW, DT},
    "/home/bob/.local/bin/a": {UW, HU},
    "/root/a": {UW},
    "/opt/.x/a": {HU},
    "/tmp/.x": {DT, HU},
    "/opt/app.d/a": ALL,
    "/opt/./a": ALL,
    "/opt/../a": ALL,
    "/usr/bin/curl": ALL,
    r"C:\Program Files\.hidden\x.exe": ALL,
    r"C:\Users\Public\x.exe": {PF},
    r"C:\Users\Public\Downloads\x.exe": {PF, DT},
    r"C:\Users\Publication\x.exe": {UW},
    "/Users/Shared/a": {PF},
    "/Users/bob/a": {UW},
    "/Applications/Safari.app/Contents/MacOS/Safari": ALL,
    r"C:\ProgramData\a.exe": {PD},
    r"D:\programdata\A.EXE": {PD},
    r"C:\ProgramData\Vendor\a.exe": ALL,
    r"C:\Windows\ProgramData\a.exe": ALL,
    r"C:\$Recycle.Bin\S-1-5-21-1\a.exe": {RB},
    r"C:\RECYCLER\a.exe": {RB},
    r"C:\Tools\$recycle.bin.exe": ALL,
    "": ALL,
    None: ALL,
}


@pytest.fixture(scope="module")
def expression_results(spark):
    """(kind, text) -> result of every address and path case, from one job."""
    cases = [("ip", ip) for ip in IPS] + [("path", p) for p in PATHS]
    schema = T.StructType([T.StructField("kind", T.StringType()), T.StructField("text", T.StringType())])
    df = spark.createDataFrame(cases, schema)
    rules = path_rules(F.col("text"))
    reasons = F.array_compact(F.array(*(F.when(c, F.lit(n)) for n, c in rules.items())))
    out = df.select("kind", "text", is_public_ip(F.col("text")).alias("public"), reasons.alias("reasons"))
    return {(r["kind"], r["text"]): r for r in out.collect()}


@pytest.mark.parametrize("ip", list(IPS), ids=repr)
def test_public_ip(expression_results, ip):
    assert expression_results[("ip", ip)]["public"] is IPS[ip]


@pytest.mark.parametrize("path", list(PATHS), ids=repr)
def test_path_rules(expression_results, path):
    assert set(expression_results[("path", path)]["reasons"]) == PATHS[path]


# --------------------------------------------------------------------------- the table

START, END = dt.date(2026, 7, 4), dt.date(2026, 8, 3)  # 30 days; recent from 2026-07-27 on
SHORT_START = dt.date(2026, 7, 27)  # a 7-day window: recently_first_seen never applies


def day(d: int, month: int = 7) -> dt.datetime:
    return dt.datetime(2026, month, d, 12, 0, 0)


EARLY = day(5)


def program(path, devices=3, when=EARLY, targets=(("20.1.1.1", 443),), **kw):
    """Outbound events of one program: each device to each ``(ip, port)``, at ``when``."""
    whens = when if isinstance(when, list) else [when] * devices
    return [
        event(
            Timestamp=whens[d],
            DeviceId=f"dev-{d:02d}",
            InitiatingProcessFolderPath=path,
            RemoteIP=ip,
            RemotePort=port,
            **kw,
        )
        for d in range(devices)
        for ip, port in targets
    ]


def server(path, devices=3, port=8000):
    """A program that listens on ``port`` and accepts a connection from a public address."""
    rows = []
    for d in range(devices):
        common = {
            "Timestamp": EARLY,
            "DeviceId": f"dev-{d:02d}",
            "InitiatingProcessFolderPath": path,
            "LocalPort": port,
        }
        rows.append(event(ActionType="ListeningConnectionCreated", RemoteIP="", RemotePort=0, **common))
        rows.append(
            event(ActionType="InboundConnectionAccepted", RemoteIP="20.3.3.3", RemotePort=55555, **common)
        )
    return rows


ZOOM = [rf"C:\Users\{u}\AppData\Roaming\Zoom\bin\Zoom.exe" for u in ("bob", "alice", "carol")]
SYNC_TARGETS = (
    ("20.1.1.1", 4444),
    ("20.1.1.2", 4444),
    ("20.1.1.1", 5555),
    ("2001:db8::1", 7000),  # documentation range counts as public
    ("10.9.9.9", 6666),  # private: not counted
    ("::ffff:10.0.0.1", 7777),  # mapped private: not counted
    ("20.1.1.3", 443),  # standard port: not counted
)
PRIVATE_TARGETS = tuple(
    (ip, 4444)
    for ip in (
        "10.1.1.1",
        "192.168.1.10",
        "172.16.5.5",
        "100.64.0.1",
        "fe80::1",
        "::ffff:192.168.1.162",
        "fd00::5",
    )
)

ZOOM_EVENTS = [
    event(Timestamp=when, DeviceId=f"dev-{d:02d}", InitiatingProcessFolderPath=path)
    for d, (path, when) in enumerate(zip(ZOOM, (EARLY, day(10), day(20)), strict=True))
]

# name -> events; a program is recognised in the output by its smallest raw path (ExamplePath).
PROGRAMS = {
    "chrome": program(r"C:\Program Files\Google\Chrome\Application\chrome.exe", devices=25),
    "zoom_profile": ZOOM_EVENTS,  # three users' profiles, one alias
    "zoom_program_files": program(r"C:\Program Files\Zoom\bin\Zoom.exe"),
    "downloads": program(r"C:\Users\bob\Downloads\setup.exe"),
    "windows_temp": program(r"C:\Windows\Temp\upd.exe"),
    "linux_tmp": program("/tmp/x/agent"),
    "downloads_near": program(r"D:\Data\downloads-archive\tool.exe"),
    "public": program(r"C:\Users\Public\Libraries\svc.exe"),
    "publication": program(r"C:\Users\Publication\app.exe"),
    "programdata_root": program(r"C:\ProgramData\upd.exe"),
    "programdata_sub": program(r"C:\ProgramData\Microsoft\Windows Defender\Platform\MsMpEng.exe"),
    "recycle": program(r"C:\$Recycle.Bin\S-1-5-21-1\r.exe"),
    "recycle_near": program(r"C:\Program Files\RecycleBin Tools\rb.exe"),
    "hidden": program("/opt/.cache/agent"),
    "hidden_near": program("/opt/app.d/agent"),
    # 25 Windows machines (chrome's): rare is on at most max(1, floor(0.05 x 25)) = 1.
    "rare": program(r"C:\Program Files\Rare\rare.exe", devices=1),
    "semi_rare": program(r"C:\Program Files\SemiRare\semi.exe", devices=2),
    # System32's programs run on 25, 25, 25, 7 and 1 machines: median 25, outliers on <= 6.
    "system_svchost": program(r"C:\Windows\System32\svchost.exe", devices=25),
    "system_lsass": program(r"C:\Windows\System32\lsass.exe", devices=25),
    "system_spoolsv": program(r"C:\Windows\System32\spoolsv.exe", devices=25),
    "system_near": program(r"C:\Windows\System32\wuauclt.exe", devices=7),
    "masquerade": program(r"C:\Windows\System32\svch0st.exe", devices=1),
    "sync": program(r"C:\Program Files\Sync\sync.exe", targets=SYNC_TARGETS),
    "lan": program(r"C:\Program Files\Lan\lan.exe", targets=PRIVATE_TARGETS),
    "web": program(r"C:\Program Files\Web\web.exe", targets=(("8.8.8.8", 8443), ("8.8.8.8", 53))),
    "p2p": program(
        r"C:\Program Files\P2P\p2p.exe", targets=tuple(("20.2.2.2", p) for p in range(5039, 4999, -1))
    ),
    "inbound_server": server(r"C:\Program Files\Srv\srv.exe"),
    "inbound_programdata": server(r"C:\ProgramData\srv.exe"),
    "recent": program(r"C:\Program Files\New\new.exe", when=[day(27), day(30), day(1, 8)]),
    "not_recent": program(r"C:\Program Files\Old\old.exe", when=[day(26), day(30), day(1, 8)]),
    "combo": program(
        r"C:\Users\Public\Downloads\x.exe", devices=1, when=day(1, 8), targets=(("20.4.4.4", 4444),)
    ),
}
VARIANTS = {
    "default": (START, HuntingSettings()),
    # A 7-day window (no recency), low_prevalence and the profile rule off, public_folder reweighted above the others, 4444 standard, 2 ports kept.
    "alt": (
        SHORT_START,
        HuntingSettings(
            weights={"user_writable_path": 0, "public_folder": 5, "low_prevalence": 0},
            standard_ports=(443, 4444),
            max_ports=2,
        ),
    ),
}


def first_path(name: str) -> str:
    return min(e["InitiatingProcessFolderPath"] for e in PROGRAMS[name])


@pytest.fixture(scope="module")
def matched(spark):
    """The query over ``[start, END)`` for any ``start``, from one reduced table."""
    events = events_df(spark, [e for rows in PROGRAMS.values() for e in rows])
    cfg = PolicyConfig()
    # One job computes the reduced table; each settings variant then starts from it.
    conns = connection_table(where_clauses(events, cfg)).localCheckpoint()

    def query(start: dt.date) -> SeedQuery:
        return from_connections(conns, cfg, (start, END))

    return query


@pytest.fixture(scope="module")
def tables(matched):
    """variant -> {program name: row}, every variant from one collect."""
    frames = [
        unusual_programs(matched(start), settings).withColumn("variant", F.lit(name))
        for name, (start, settings) in VARIANTS.items()
    ]
    union = frames[0]
    for f in frames[1:]:
        union = union.unionByName(f)
    names = {first_path(n): n for n in PROGRAMS}
    out: dict[str, dict] = {v: {} for v in VARIANTS}
    for r in union.collect():
        name = names[r["ExamplePath"]]
        assert name not in out[r["variant"]], f"{name} listed twice"
        out[r["variant"]][name] = r
    return out


def reasons(tables, variant: str, name: str) -> list[str] | None:
    row = tables[variant].get(name)
    return None if row is None else list(row["Reasons"])


DEFAULT_EXPECTED = {
    "chrome": None,
    "zoom_profile": ["user_writable_path"],
    "zoom_program_files": None,
    "downloads": ["downloads_or_temp", "user_writable_path"],
    "windows_temp": ["downloads_or_temp"],
    "linux_tmp": ["downloads_or_temp"],
    "downloads_near": None,
    "public": ["public_folder"],
    "publication": ["user_writable_path"],
    "programdata_root": ["programdata_root"],
    "programdata_sub": None,
    "recycle": ["recycle_bin"],
    "recycle_near": None,
    "hidden": ["hidden_unix_dir"],
    "hidden_near": None,
    "rare": ["low_prevalence"],
    "semi_rare": None,
    "system_svchost": None,
    "system_lsass": None,
    "system_spoolsv": None,
    "system_near": None,
    "masquerade": ["system_folder_outlier", "low_prevalence"],
    "sync": ["public_nonstandard_port"],
    "lan": None,
    "web": None,
    "p2p": ["public_nonstandard_port"],
    "inbound_server": None,
    "inbound_programdata": ["programdata_root"],
    "recent": ["recently_first_seen"],
    "not_recent": None,
    "combo": [
        "downloads_or_temp",
        "public_folder",
        "public_nonstandard_port",
        "low_prevalence",
        "recently_first_seen",
    ],
}


@pytest.mark.parametrize("name", list(DEFAULT_EXPECTED))
def test_reasons_default(tables, name):
    assert reasons(tables, "default", name) == DEFAULT_EXPECTED[name]


# reason -> programs that nearly meet it (and must not have it)
NEAR_MISSES = {
    "user_writable_path": ["zoom_program_files", "public"],
    "downloads_or_temp": ["downloads_near"],
    "public_folder": ["publication"],
    "programdata_root": ["programdata_sub"],
    "recycle_bin": ["recycle_near"],
    "hidden_unix_dir": ["hidden_near"],
    "low_prevalence": ["semi_rare"],
    "system_folder_outlier": ["system_near", "windows_temp", "semi_rare"],
    "public_nonstandard_port": ["lan", "web", "inbound_server", "inbound_programdata"],
    "recently_first_seen": ["not_recent"],
}


def test_every_reason_has_a_hit_and_a_near_miss(tables):
    hit = {r for rs in DEFAULT_EXPECTED.values() if rs for r in rs}
    assert hit == set(hunting.REASONS) == set(NEAR_MISSES)
    for reason, names in NEAR_MISSES.items():
        for name in names:
            assert reason not in (reasons(tables, "default", name) or []), (reason, name)


def test_score_is_the_sum_of_weights(tables):
    s = HuntingSettings()
    for name, row in tables["default"].items():
        assert row["Score"] == sum(s.weight(r) for r in row["Reasons"]), name
    assert tables["default"]["combo"]["Score"] == 3 + 3 + 3 + 2 + 1
    assert tables["default"]["downloads"]["Score"] == 3 + 1


def test_benign_program_not_listed(tables):
    for variant in VARIANTS:
        assert "chrome" not in tables[variant]


def test_alternative_settings(tables):
    alt = tables["alt"]
    # public_folder (5) before downloads_or_temp (3); 4444 is standard; no recency, no low_prevalence
    assert reasons(tables, "alt", "combo") == ["public_folder", "downloads_or_temp"]
    assert alt["combo"]["Score"] == 5 + 3
    assert "recent" not in alt and "rare" not in alt
    # weight 0 turns a rule off: neither listed nor scored
    assert "zoom_profile" not in alt and "publication" not in alt
    assert (reasons(tables, "alt", "downloads"), alt["downloads"]["Score"]) == (["downloads_or_temp"], 3)
    assert list(alt["sync"]["PublicNonStandardPorts"]) == [5555, 7000]
    assert alt["sync"]["PublicRemoteIPCount"] == 2  # 20.1.1.1 on 5555, 2001:db8::1 on 7000
    assert list(alt["p2p"]["PublicNonStandardPorts"]) == [5000, 5001]
    assert (alt["combo"]["window_start"], alt["combo"]["window_end"]) == (SHORT_START, END)


def test_evidence_columns(tables):
    default = tables["default"]
    sync = default["sync"]
    assert list(sync["PublicNonStandardPorts"]) == [4444, 5555, 7000]
    assert sync["PublicRemoteIPCount"] == 3  # 20.1.1.1, 20.1.1.2, 2001:db8::1
    assert sync["ConnectionCount"] == 3 * len(SYNC_TARGETS)
    assert sync["DistinctMachines"] == 3
    assert list(default["p2p"]["PublicNonStandardPorts"]) == list(range(5000, 5032))  # 32 smallest of 40
    assert default["p2p"]["PublicRemoteIPCount"] == 1
    zoom = default["zoom_profile"]
    assert zoom["ExamplePath"] == ZOOM[1]  # the smallest raw path (alice)
    assert (zoom["FirstSeen"], zoom["LastSeen"], zoom["DistinctMachines"]) == (EARLY, day(20), 3)
    assert zoom["AliasPath"] == r"%userprofile%\appdata\roaming\zoom\bin\zoom.exe"
    inbound = default["inbound_programdata"]
    assert inbound["Directionality"] == "Inbound"
    assert (list(inbound["PublicNonStandardPorts"]), inbound["PublicRemoteIPCount"]) == ([], 0)
    assert (sync["window_start"], sync["window_end"]) == (START, END)


def test_schema(matched):
    schema = unusual_programs(matched(START)).schema
    assert tuple(schema.names) == HUNTING_COLUMNS
    types = {f.name: f.dataType for f in schema.fields}
    assert types["Score"] == T.IntegerType()
    assert types["Reasons"] == T.ArrayType(T.StringType(), True) or types["Reasons"] == T.ArrayType(
        T.StringType(), False
    )
    assert isinstance(types["PublicNonStandardPorts"], T.ArrayType)
    assert types["PublicNonStandardPorts"].elementType == T.IntegerType()
    for name in ("DistinctMachines", "ConnectionCount", "PublicRemoteIPCount"):
        assert types[name] == T.LongType(), name
    assert types["window_start"] == T.DateType() and types["window_end"] == T.DateType()


def test_empty_window_refused(matched):
    with pytest.raises(ConfigError):
        unusual_programs(matched(END))
