"""What the CPU computes natively, from Linux's /proc/cpuinfo: whether bf16 pays, and whether ONNX Runtime's int8
kernels compute exactly (VNNI) or may saturate. No torch, so scripts answer ``--help`` at once.

Without VNNI, ONNX Runtime multiplies uint8 activations by int8 weights on x86 with VPMADDUBSW, which adds each
pair of products into a 16-bit integer and clips it there: 255 × 127 × 2 = 64,770 does not fit in 32,767, so
graphs with 8-bit weights lose accuracy on those CPUs (AVX2, or AVX-512 without avx512_vnni). 7-bit weights
(255 × 64 × 2 = 32,640) never overflow (docs/deployment.md has the measurements).
"""
from __future__ import annotations

import functools
import platform

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


@functools.cache
def cpu_info() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty where it cannot be read: not Linux, say)."""
    entries: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as text:
            for line in text:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                entries[key.strip()] = value.strip()
    except OSError:
        pass
    return entries


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports for the CPU (empty where unknown)."""
    return frozenset(cpu_info().get("flags", "").split())


def native_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (otherwise PyTorch emulates it, slower than float32)."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def int8_saturates() -> bool:
    """Whether ONNX Runtime's uint8 × int8 kernels may saturate here: an x86 CPU whose flags are known and show no
    VNNI. False where the flags cannot be read (nothing is known then) and on other architectures."""
    flags = cpu_flags()
    return (platform.machine().lower() in X86_MACHINES and bool(flags)
            and not any(flag in flags for flag in VNNI_FLAGS))


def describe_cpu() -> str:
    """The CPU as figures should name it: its model and the instructions that decide bf16 and int8 speed, e.g.
    ``AMD EPYC (family 25 model 1; avx2, no VNNI)``."""
    info = cpu_info()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    flags = cpu_flags()
    if not flags:
        return name
    widest = next((isa for isa in ("avx512f", "avx2", "avx", "sse4_2") if isa in flags), "")
    features = [widest.removesuffix("f")] if widest else []
    features += [flag for flag in VNNI_FLAGS + NATIVE_BF16_FLAGS if flag in flags]
    if not any(flag in flags for flag in VNNI_FLAGS):
        features.append("no VNNI")
    family = f"family {info['cpu family']} model {info['model']}; " if "cpu family" in info and "model" in info else ""
    return f"{name} ({family}{', '.join(features)})"
