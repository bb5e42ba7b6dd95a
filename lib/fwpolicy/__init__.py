"""fwpolicy: draft client-firewall policies and hunting leads from Defender network telemetry."""

from __future__ import annotations

__version__ = "0.1.0"
