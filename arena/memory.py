"""Resident memory of a process, the first thing someone deploying INT4 models asks about."""
from __future__ import annotations


def resident_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB (Linux /proc), or None where it can't be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
