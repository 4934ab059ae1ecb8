"""Facts about the processor the pack runs on, for choices measured per vendor."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

INTEL = "GenuineIntel"
AMD = "AuthenticAMD"
CPUINFO_PATH = "/proc/cpuinfo"  # tests point it at a fake file (and call ``cpu_facts.cache_clear()``)


@dataclass(frozen=True)
class CpuFacts:
    """Vendor string, model name and feature flags (empty where they cannot be read)."""

    vendor: str
    model: str
    flags: frozenset[str]


@functools.cache
def cpu_facts() -> CpuFacts:
    """What ``/proc/cpuinfo`` says about the first processor (Linux); elsewhere the vendor from the
    end of ``platform.processor()`` (Windows gives "AMD64 Family 26 Model 2 Stepping 1, AuthenticAMD")
    and no flags."""
    fields: dict[str, str] = {}
    try:
        with open(CPUINFO_PATH, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                key = key.strip()
                if not sep:
                    if fields:  # the first processor's block is enough
                        break
                    continue
                fields.setdefault(key, value.strip())
    except OSError:
        pass
    vendor = fields.get("vendor_id", "")
    if not vendor:
        processor = platform.processor()
        vendor = processor.rsplit(",", 1)[1].strip() if "," in processor else ""
    flags = fields.get("flags") or fields.get("Features") or ""  # x86 / ARM
    return CpuFacts(vendor, fields.get("model name", ""), frozenset(flags.split()))


def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...), or "" where it cannot be read."""
    return cpu_facts().vendor


def bf16_matrix_units() -> bool:
    """Whether the processor multiplies bfloat16 matrices natively, measured faster than float32:
    Intel with AMX (``amx_bf16``: 2.7x at 512 px on a 2-core Xeon, ``bench/results/cpu_network_half.json``),
    AMD with AVX512_BF16 (Zen 4: 1.15-1.92x from 256 to 2048 px,
    ``bench/results/cpu_network_auto*_epyc_zen4.json``; Zen 5: 1.44x at 512, ``cpu_network_half_epyc.json``). Intel's
    AVX512_BF16 without AMX (Cooper Lake) and ARM's bf16 were not measured: False there."""
    facts = cpu_facts()
    if facts.vendor == INTEL:
        return "amx_bf16" in facts.flags
    if facts.vendor == AMD:
        return "avx512_bf16" in facts.flags
    return False


def amx_bf16() -> bool:
    """Whether the processor has Intel's AMX bfloat16 tiles (``amx_bf16``)."""
    return "amx_bf16" in cpu_facts().flags
