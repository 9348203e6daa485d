"""Throughput helpers: the matmul peak MFU is measured against."""

from __future__ import annotations

import time

import torch

# Dense bf16 peaks (TFLOP/s) of common training GPUs, by a substring of the device name.
KNOWN_PEAKS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "4090": 165.0,
}


def measure_peak_tflops(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048
) -> float:
    """Achievable matmul TFLOP/s on ``device`` (a known GPU's datasheet peak if listed)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in KNOWN_PEAKS.items():
            if key in name and dtype == torch.bfloat16:
                return peak
        size = 8192
    # A private generator: measuring must not shift the run's random stream.
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    torch.matmul(a, b)  # warm up kernels and thread pools
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e12
