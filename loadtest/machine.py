"""A description of the machine measurements were taken on: CPU model, cores, RAM, OS, date.

Read from /proc on Linux (cpuinfo, meminfo); elsewhere the fields it cannot read are left out.
"""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def describe_machine() -> dict[str, Any]:
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_bytes": int(mem_kb.split()[0]) * 1024 if mem_kb else None,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line for calibration.json's `machine` (what `quiver sizing` prints)."""
    ram = f"{info['ram_bytes'] / 2**30:.1f} GiB RAM" if info.get("ram_bytes") else "RAM unknown"
    return (f"{info['cpu_model']}, {info['usable_cores']} cores, {ram}, {info['os']}; "
            f"measured {info['date']}")
