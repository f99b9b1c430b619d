"""Pick the fastest numerically safe compute path for this machine.

bf16 autocast is many times *slower* on CPUs without native bf16 (AVX2-only
hosts: 73x slower in the seed notes), so ``auto`` uses bf16 only where the
hardware has it (CPU: AVX512-BF16/AMX as reported by oneDNN; GPU: CUDA bf16)
and fp32 otherwise.
"""
from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware: AVX512-BF16 or AMX-BF16 (x86), BF16 (Arm).

    oneDNN's ``_is_mkldnn_bf16_supported()`` alone is not enough: on x86 it only checks
    AVX512BW/VL/DQ, so it is also True on Skylake-SP / Cascade Lake / Ice Lake, which emulate
    bf16 and run it slower than fp32.  It stays a necessary condition (a build without bf16
    kernels returns False).
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except Exception:  # pragma: no cover - very old / unusual builds
        return False
    import platform

    if platform.machine().lower() in ("aarch64", "arm64"):
        return True  # oneDNN's check is the Arm BF16 extension itself there
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if callable(p)]
    if probes:
        try:
            return any(bool(p()) for p in probes)
        except Exception:  # pragma: no cover
            return False
    try:  # pragma: no cover - torch without the probes: the kernel's CPU flags
        with open("/proc/cpuinfo") as fh:
            flags = next(line for line in fh if line.startswith("flags")).split()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except (OSError, StopIteration):
        return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """Map ``auto``/``32``/``bf16``... to ``"32"`` or ``"bf16"`` for inference."""
    p = str(precision).lower()
    dev = torch.device(device).type
    if p in ("32", "32-true", "fp32", "64"):
        return "32"
    if p in ("bf16", "bf16-mixed"):
        return "bf16"
    if p in ("16-mixed", "16", "fp16"):
        return "16" if dev == "cuda" else "32"
    # auto
    if dev == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "32"
    return "bf16" if cpu_has_native_bf16() else "32"


def trainer_precision(precision: str, accelerator: str = "auto") -> str:
    """Lightning ``precision`` for a config value."""
    p = str(precision).lower()
    if p != "auto":
        return {"32": "32-true", "bf16": "bf16-mixed", "fp32": "32-true"}.get(p, p)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def autocast(device: torch.device, mode: str):
    """Context manager for ``mode`` in {"32", "bf16", "16"}."""
    if mode == "32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
