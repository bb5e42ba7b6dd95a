"""Property: on random small event sets, the job equals the pure-Python reference.

Values are drawn from pools that hit the traps together: missing strings, case variants,
loopback and link-local addresses, ports on both sides of the ephemeral start, listeners and
accepts, and paths that take each branch of the alias expression.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwpolicy.config import PolicyConfig
from fwpolicy.query.seed import firewall_policy

from helpers import DAY, NEXT_DAY, events_df, policy_dict
from kql_reference import reference_policy

ACTIONS = [
    "InboundConnectionAccepted",
    "ListeningConnectionCreated",
    "ConnectionSuccess",
    "ConnectionFound",
    "ConnectionRequest",
    "ConnectionFailed",
    "connectionsuccess",
    None,
]
IPS = ["10.0.0.1", "10.0.0.2", "20.0.0.1", "169.254.9.9", "169.254", "::1", "127.0.0.1", "", None]
IP_TYPES = ["Public", "Private", "Loopback", "loopback", "", None]
PATHS = [
    r"C:\Windows\System32\svchost.exe",
    r"c:\WINDOWS\system32\svchost.exe",
    r"\\?\C:\Windows\x.exe",
    r"C:\Users\bob",
    r"C:\Users\a\AppData\x.exe",
    r"c:\users\Bob\AppData\Local\app.exe",
    r"C:\Documents and Settings\al\x.exe",
    r"C:\ProgramData\x\y.exe",
    r"C:\Program Files\App\app.exe",
    r"C:\Program Files (x86)\App\app.exe",
    r"D:\Users\bob\x.exe",
    "/usr/sbin/sshd",
    "",
    None,
]
PORTS = [None, 0, 22, 139, 445, 3389, 32768, 49151, 49152, 50000, 65535]

event_strategy = st.fixed_dictionaries(
    {
        "Timestamp": st.just(dt.datetime(2026, 8, 1, 12)),
        "DeviceId": st.sampled_from(["d1", "d2", "D1", "", None]),
        "ActionType": st.sampled_from(ACTIONS),
        "LocalIP": st.sampled_from(IPS),
        "LocalPort": st.sampled_from(PORTS),
        "RemoteIP": st.sampled_from(IPS),
        "RemotePort": st.sampled_from(PORTS),
        "RemoteIPType": st.sampled_from(IP_TYPES),
        "InitiatingProcessFolderPath": st.sampled_from(PATHS),
    }
)


# Each example is a whole query on local Spark (about 2.5 s): 8 per run, new ones each run.
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(event_strategy, min_size=1, max_size=60),
    ephemeral=st.sampled_from([49152, 445, 30000]),
    inbound_ips=st.booleans(),
    cap=st.sampled_from([1, 2, 128]),
)
def test_job_equals_reference(spark, rows, ephemeral, inbound_ips, cap):
    cfg = PolicyConfig(ephemeral_start=ephemeral, include_inbound_remote_ips=inbound_ips, set_cap=cap)
    got = policy_dict(firewall_policy(events_df(spark, rows), cfg, DAY, NEXT_DAY))
    assert got == reference_policy(
        rows, ephemeral_start=ephemeral, include_inbound_remote_ips=inbound_ips, cap=cap
    )
