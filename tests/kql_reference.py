"""Pure-Python reference evaluation of the "Firewall Policy Design Assistant" KQL query.

This module is the oracle the Spark job is compared against in tests. It is deliberately
naive: plain loops over dicts, no Spark, no pandas, one function per KQL construct, each
following the documented KQL semantics literally (profile ``kql``, quirks included). It was
written from the KQL semantics, not from the Spark code, so that the two can disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

INBOUND_ACTIONS = ("InboundConnectionAccepted", "ListeningConnectionCreated")
OUTBOUND_ACTIONS = ("ConnectionSuccess", "ConnectionFound", "ConnectionRequest")
STRING_COLUMNS = (
    "DeviceId",
    "ActionType",
    "LocalIP",
    "RemoteIP",
    "RemoteIPType",
    "InitiatingProcessFolderPath",
)

Key = tuple[str, str, int]


def kql_substring(s: str, start: int, length: int | None = None) -> str:
    """KQL ``substring``: 0-based; negative start counts from the end, then clamps at 0;
    start >= len gives ''; negative length is 0; the length clamps to the rest of s."""
    n = len(s)
    if start < 0:
        start = max(0, n + start)
    if start >= n:
        return ""
    if length is None:
        return s[start:]
    return s[start : start + max(0, length)]


def kql_indexof(s: str, lookup: str, start: int = 0) -> int:
    """KQL ``indexof``: 0-based position of ``lookup`` at or after ``start``, -1 if absent.

    A negative start offsets from the end by abs(start) (clamped at 0). Choice: a start
    beyond the end of ``s`` gives -1 (not null), which is what the alias quirks rely on.
    """
    n = len(s)
    if start < 0:
        start = max(0, n + start)
    if start > n:
        return -1
    return s.find(lookup, start)


def kql_alias(folder_path: str) -> str:
    r"""The AliasPath ``tolower(case(...))`` expression, branch for branch.

    ``startswith``/``contains`` are case-insensitive. Quirks kept on purpose:
    ``C:\Users\bob`` -> ``%userprofile%b`` (indexof is -1, substring(s, -1, 1) = 'b');
    ``C:\Users\a\AppData\x.exe`` -> ``%userprofile%\x.exe`` (a one-letter user loses a folder);
    ``\\?\C:\Windows\x.exe`` -> ``%windir%dows\x.exe`` (the offset 10 assumes ``X:\Windows``);
    ``D:\Users\bob\x.exe`` -> ``d:\users\bob\x.exe`` (only ``c:`` profiles are folded).
    """
    p = folder_path
    low = p.lower()
    if low.startswith("c:\\users\\"):
        out = "%UserProfile%" + kql_substring(p, kql_indexof(p, "\\", 11), len(p) - 11)
    elif low.startswith("c:\\documents and settings\\"):
        out = "%UserProfile%" + kql_substring(p, kql_indexof(p, "\\", 27), len(p) - 27)
    elif ":\\windows\\" in low:
        out = "%windir%" + kql_substring(p, 10)
    elif ":\\programdata\\" in low:
        out = "%programdata%" + kql_substring(p, 14)
    elif ":\\program files\\" in low:
        out = "%ProgramFiles%" + kql_substring(p, 16)
    elif ":\\program files (x86)\\" in low:
        out = "%ProgramFilesx86%" + kql_substring(p, 22)
    else:
        out = p
    return out.lower()


def _normalize(event: Mapping[str, Any]) -> dict[str, Any]:
    """KQL strings are never null: a missing or None string column becomes ''."""
    row = dict(event)
    for col in STRING_COLUMNS:
        if row.get(col) is None:
            row[col] = ""
    row.setdefault("LocalPort", None)
    row.setdefault("RemotePort", None)
    return row


def _common_filters(r: dict[str, Any]) -> bool:
    """Loopback (case-sensitive ``!=``), LocalIP == RemoteIP and link-local rows drop."""
    return (
        r["RemoteIPType"] != "Loopback"
        and r["LocalIP"] != r["RemoteIP"]
        and not r["RemoteIP"].lower().startswith("169.254")
    )


def _key(r: dict[str, Any]) -> Key:
    return (r["DeviceId"], r["InitiatingProcessFolderPath"], r["LocalPort"])


def reference_policy(
    events: Iterable[Mapping[str, Any]],
    ephemeral_start: int = 49152,
    include_inbound_remote_ips: bool = False,
    cap: int = 128,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Evaluate the whole query; returns {(Directionality, AliasPath): summary row}.

    A ``where`` on a null port is false, so a None LocalPort fails both ``< E`` and ``>= E``.
    Ports/RemoteIPs are makeset: distinct, nulls dropped ('' kept), sorted ascending, first
    ``cap``; PortCount/RemoteIPCount are the uncapped distinct counts.
    """
    rows = [_normalize(e) for e in events]

    def below(r: dict[str, Any]) -> bool:
        return r["LocalPort"] is not None and r["LocalPort"] < ephemeral_start

    def at_or_above(r: dict[str, Any]) -> bool:
        return r["LocalPort"] is not None and r["LocalPort"] >= ephemeral_start

    server_keys = {
        _key(r) for r in rows if r["ActionType"] in INBOUND_ACTIONS and _common_filters(r) and below(r)
    }

    # (Directionality, AliasPath, DeviceId, Port, RemoteIP) per surviving row.
    legs: list[tuple[str, str, str, int | None, str]] = []
    for r in rows:
        if not _common_filters(r):
            continue
        path = r["InitiatingProcessFolderPath"]
        if (
            r["ActionType"] in INBOUND_ACTIONS + OUTBOUND_ACTIONS and below(r) and _key(r) in server_keys
        ):  # leftsemi
            ip = r["RemoteIP"] if include_inbound_remote_ips else ""
            legs.append(("Inbound", kql_alias(path), r["DeviceId"], r["LocalPort"], ip))
        # Not elif: the two legs of the union are evaluated independently.
        if (
            r["ActionType"] in OUTBOUND_ACTIONS and at_or_above(r) and _key(r) not in server_keys
        ):  # leftanti (can never match: ports differ)
            legs.append(("Outbound", kql_alias(path), r["DeviceId"], r["RemotePort"], r["RemoteIP"]))

    groups: dict[tuple[str, str], list[tuple[str, str, str, int | None, str]]] = {}
    for leg in legs:
        groups.setdefault((leg[0], leg[1]), []).append(leg)

    result: dict[tuple[str, str], dict[str, Any]] = {}
    for group_key, members in groups.items():
        ports = sorted({m[3] for m in members if m[3] is not None})
        ips = sorted({m[4] for m in members})
        result[group_key] = {
            "ConnectionCount": len(members),
            "DistinctMachines": len({m[2] for m in members}),
            "Ports": ports[:cap],
            "RemoteIPs": ips[:cap],
            "PortCount": len(ports),
            "RemoteIPCount": len(ips),
        }
    return result
