"""Tests of the pure-Python KQL oracle itself, against hand-derived KQL results."""

from __future__ import annotations

from typing import Any

import pytest

from kql_reference import kql_alias, kql_indexof, kql_substring, reference_policy


@pytest.mark.parametrize(
    ("s", "start", "length", "expected"),
    [
        ("123456", 1, None, "23456"),  # KQL docs examples
        ("123456", 2, 2, "34"),
        ("ABCD", 0, 2, "AB"),
        ("123456", -2, 2, "56"),
        ("123456", -10, 2, "12"),  # negative start clamps at 0
        ("123456", 6, None, ""),  # start >= len
        ("123456", 9, 2, ""),
        ("123456", 1, -3, ""),  # negative length is 0
        ("123456", 4, 100, "56"),  # length clamps to the rest
        ("", 0, None, ""),
        ("é✓x", 1, 1, "✓"),  # code points
    ],
)
def test_kql_substring(s: str, start: int, length: int | None, expected: str) -> None:
    assert kql_substring(s, start, length) == expected


@pytest.mark.parametrize(
    ("s", "lookup", "start", "expected"),
    [
        ("abcdefg", "cde", 0, 2),  # KQL docs examples
        ("abcdefg", "cde", -5, 2),
        ("Hello, world, hello!", "lo", 5, 17),
        ("abcdefg", "cde", 3, -1),
        ("abcdefg", "cde", -1, -1),
        ("abcdefg", "xyz", 0, -1),
        ("abc", "c", 10, -1),  # start beyond the end: -1 (our documented choice)
    ],
)
def test_kql_indexof(s: str, lookup: str, start: int, expected: int) -> None:
    assert kql_indexof(s, lookup, start) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("C:\\Windows\\System32\\svchost.exe", "%windir%\\system32\\svchost.exe"),
        ("C:\\Program Files (x86)\\a\\b.exe", "%programfilesx86%\\a\\b.exe"),
        ("C:\\Program Files\\Mozilla Firefox\\firefox.exe", "%programfiles%\\mozilla firefox\\firefox.exe"),
        ("C:\\ProgramData\\x\\y.exe", "%programdata%\\x\\y.exe"),
        ("c:\\documents and settings\\bob\\x.exe", "%userprofile%\\x.exe"),
        ("C:\\Users\\bob\\AppData\\x.exe", "%userprofile%\\appdata\\x.exe"),
        # Quirks reproduced on purpose.
        ("C:\\Users\\bob", "%userprofile%b"),
        ("C:\\Users\\a\\AppData\\x.exe", "%userprofile%\\x.exe"),
        ("\\\\?\\C:\\Windows\\x.exe", "%windir%dows\\x.exe"),
        ("D:\\Users\\bob\\x.exe", "d:\\users\\bob\\x.exe"),
        ("", ""),
        ("/Applications/Foo.app/foo", "/applications/foo.app/foo"),
    ],
)
def test_kql_alias(path: str, expected: str) -> None:
    assert kql_alias(path) == expected


SVCHOST = "C:\\Windows\\System32\\svchost.exe"
FIREFOX = "C:\\Program Files\\Mozilla Firefox\\firefox.exe"


def _ev(
    action: str,
    path: str,
    local_ip: str,
    remote_ip: str,
    ip_type: str | None,
    local_port: int | None,
    remote_port: int | None,
    device: str = "d1",
) -> dict[str, Any]:
    return {
        "DeviceId": device,
        "ActionType": action,
        "LocalIP": local_ip,
        "RemoteIP": remote_ip,
        "RemoteIPType": ip_type,
        "InitiatingProcessFolderPath": path,
        "LocalPort": local_port,
        "RemotePort": remote_port,
    }


TINY = [
    # Listener on 445: a server key, and itself an inbound row (RemoteIPType None -> '').
    _ev("ListeningConnectionCreated", SVCHOST, "0.0.0.0", "", None, 445, None),
    _ev("InboundConnectionAccepted", SVCHOST, "10.0.0.5", "10.0.0.9", "Private", 445, 50123),
    _ev("ConnectionSuccess", FIREFOX, "10.0.0.5", "93.184.216.34", "Public", 50000, 443),
    # Each of these would join the firefox outbound group if it were not dropped.
    _ev("ConnectionSuccess", FIREFOX, "127.0.0.1", "127.0.0.2", "Loopback", 50001, 8080),
    _ev("ConnectionSuccess", FIREFOX, "10.0.0.5", "169.254.169.254", "Private", 50002, 80),
    _ev("ConnectionFailed", FIREFOX, "10.0.0.5", "1.2.3.4", "Public", 50003, 8443),
]
INBOUND_KEY = ("Inbound", "%windir%\\system32\\svchost.exe")
OUTBOUND_KEY = ("Outbound", "%programfiles%\\mozilla firefox\\firefox.exe")


def test_reference_policy_tiny() -> None:
    assert reference_policy(TINY) == {
        INBOUND_KEY: {
            "ConnectionCount": 2,
            "DistinctMachines": 1,
            "Ports": [445],
            "RemoteIPs": [""],
            "PortCount": 1,
            "RemoteIPCount": 1,
        },
        OUTBOUND_KEY: {
            "ConnectionCount": 1,
            "DistinctMachines": 1,
            "Ports": [443],
            "RemoteIPs": ["93.184.216.34"],
            "PortCount": 1,
            "RemoteIPCount": 1,
        },
    }


def test_reference_policy_inbound_remote_ips() -> None:
    got = reference_policy(TINY, include_inbound_remote_ips=True)
    assert got[INBOUND_KEY]["RemoteIPs"] == ["", "10.0.0.9"]
    assert got[INBOUND_KEY]["RemoteIPCount"] == 2


def test_reference_policy_null_port_and_no_server_key() -> None:
    events = [
        _ev("ConnectionSuccess", FIREFOX, "10.0.0.5", "8.8.8.8", "Public", None, 53),
        # Low local port but no server key for (d1, path, 3389): in neither leg.
        _ev("ConnectionSuccess", FIREFOX, "10.0.0.5", "10.0.0.9", "Private", 3389, 1),
        # Outbound with a null RemotePort: counted, but makeset ignores the null port.
        _ev("ConnectionRequest", FIREFOX, "10.0.0.5", "8.8.4.4", "Public", 50000, None, "d2"),
    ]
    assert reference_policy(events) == {
        OUTBOUND_KEY: {
            "ConnectionCount": 1,
            "DistinctMachines": 1,
            "Ports": [],
            "RemoteIPs": ["8.8.4.4"],
            "PortCount": 0,
            "RemoteIPCount": 1,
        },
    }


def test_reference_policy_cap() -> None:
    events = [
        _ev("ConnectionFound", FIREFOX, "10.0.0.5", f"10.1.0.{i}", "Private", 50000, 1000 + i, f"d{i % 3}")
        for i in range(10)
    ]
    row = reference_policy(events, cap=4)[OUTBOUND_KEY]
    assert row["Ports"] == [1000, 1001, 1002, 1003]
    assert row["RemoteIPs"] == ["10.1.0.0", "10.1.0.1", "10.1.0.2", "10.1.0.3"]
    assert (row["ConnectionCount"], row["DistinctMachines"]) == (10, 3)
    assert (row["PortCount"], row["RemoteIPCount"]) == (10, 10)
