"""Facts about the processor the pack runs on, for choices measured per vendor."""

from __future__ import annotations

import functools
import platform

INTEL = "GenuineIntel"
AMD = "AuthenticAMD"


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...), or "" where it cannot be read:
    from ``/proc/cpuinfo`` on Linux, else the end of ``platform.processor()`` (Windows gives
    "AMD64 Family 26 Model 2 Stepping 1, AuthenticAMD")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    processor = platform.processor()
    return processor.rsplit(",", 1)[1].strip() if "," in processor else ""
