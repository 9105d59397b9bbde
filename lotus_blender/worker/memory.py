"""How much memory is free for models, so that Depth & Normals can keep both models warm.

The engine keeps a second model loaded beside the first only when the free memory of the model's
device (RAM for the CPU, VRAM for CUDA, the Metal working set for MPS) holds the new model plus
the working memory of a prediction; otherwise it swaps (the least recently used model goes).

``LOTUS_MEMORY_BUDGET_MB`` caps the memory all loaded models may take together (a studio's limit,
and how the tests force swapping); free memory is then at most the cap minus what is loaded.
No third-party package is needed: /proc/meminfo (and cgroup v2 limits) on Linux,
GlobalMemoryStatusEx on Windows, vm_stat on macOS, torch for GPUs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("lotus.worker")

BUDGET_ENV = "LOTUS_MEMORY_BUDGET_MB"
# Working memory of one prediction beyond the weights, per processed pixel and byte of the
# compute dtype: measured peaks minus weights at 768 px (benchmarks/bench_engine.py) were about
# 1.2 GB in bf16 and 2.1 GB in fp32, i.e. up to ~1000 bytes per pixel and dtype byte.
WORK_BYTES_PER_PIXEL_AND_ITEM = 1000
# Left for Blender, the OS and the decoded images: never plan to fill memory to the last byte.
SAFETY_MARGIN_BYTES = 512 * 2**20
NATIVE_RESOLUTION_GUESS = 2048  # the longest edge assumed when the resolution is native (0)
_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                         "I8": 1, "U8": 1, "BOOL": 1}


def budget_bytes() -> int | None:
    """The cap from LOTUS_MEMORY_BUDGET_MB, or None."""
    value = os.environ.get(BUDGET_ENV, "").strip()
    if not value:
        return None
    try:
        return max(0, int(float(value) * 2**20))
    except ValueError:
        log.warning("ignoring %s=%r: not a number of MB", BUDGET_ENV, value)
        return None


def working_bytes(resolution: int, itemsize: int) -> int:
    """What one prediction needs beyond the weights, at a processing resolution (0 = native)."""
    edge = resolution or NATIVE_RESOLUTION_GUESS
    return edge * edge * WORK_BYTES_PER_PIXEL_AND_ITEM * itemsize + SAFETY_MARGIN_BYTES


def checkpoint_bytes(folder: Path, components=("unet", "vae"), itemsize: int = 4) -> int:
    """The size the components' weights will take in memory at ``itemsize`` bytes per value,
    read from the safetensors headers only (nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for component in components:
        for shard in sorted((Path(folder) / component).glob("*.safetensors")):
            with safe_open(str(shard), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    view = handle.get_slice(key)
                    floating = view.get_dtype() in ("F64", "F32", "F16", "BF16")
                    size = itemsize if floating else _SAFETENSORS_ITEMSIZE.get(view.get_dtype(), 4)
                    total += math.prod(view.get_shape()) * size
    return total


def module_bytes(*modules) -> int:
    """Measured size of loaded torch modules (parameters and buffers)."""
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            total += tensor.numel() * tensor.element_size()
    return total


def free_bytes(device, loaded_bytes: int = 0) -> int | None:
    """Memory free for another model on ``device`` now; None when it cannot be told.

    ``loaded_bytes``: what the models already loaded take (counted against the budget cap).
    """
    free = _device_free_bytes(device)
    cap = budget_bytes()
    if cap is not None:
        free = cap - loaded_bytes if free is None else min(free, cap - loaded_bytes)
    return free


def _device_free_bytes(device) -> int | None:
    try:
        if device.type == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info(device)
            # Blocks torch's caching allocator holds but does not use are free for us too.
            return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        if device.type == "mps":
            import torch

            recommended = getattr(torch.mps, "recommended_max_memory", None)
            allocated = getattr(torch.mps, "driver_allocated_memory", None)
            system = system_available_bytes()
            if recommended is None or allocated is None:
                return system
            gpu = int(recommended() - allocated())
            return gpu if system is None else min(gpu, system)  # unified memory: both limits
    except (RuntimeError, AttributeError) as ex:
        log.info("cannot tell the free memory of %s: %s", device, ex)
        return None
    return system_available_bytes()


def system_available_bytes() -> int | None:
    """RAM available to this process without swapping, or None when unknown."""
    try:
        if sys.platform.startswith("linux"):
            available = _linux_meminfo_available()
            limit = _cgroup_free()
            if available is None or limit is None:
                return available if limit is None else limit
            return min(available, limit)
        if sys.platform == "win32":
            return _windows_available()
        if sys.platform == "darwin":
            return _macos_available()
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError, subprocess.SubprocessError) as ex:
        log.info("cannot tell the available memory: %s", ex)
        return None


def _linux_meminfo_available() -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_free() -> int | None:
    """Free memory under this process's cgroup limit (containers), None without a limit.
    Reclaimable page cache (the checkpoint files just read) does not count as used."""
    line = next((ln for ln in Path("/proc/self/cgroup").read_text().splitlines()
                 if ln.startswith("0::")), None)
    v2 = Path("/sys/fs/cgroup") / line[3:].lstrip("/") if line else None
    v1 = Path("/sys/fs/cgroup/memory")  # a container sees its own cgroup at the root
    for folder, names, inactive in (
            (v2, ("memory.max", "memory.current"), "inactive_file"),
            (v1, ("memory.limit_in_bytes", "memory.usage_in_bytes"), "total_inactive_file")):
        try:
            limit = (folder / names[0]).read_text().strip()
            current = int((folder / names[1]).read_text())
            stat = (folder / "memory.stat").read_text()
        except (OSError, TypeError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # no limit (v1 writes a huge number)
            return None
        match = re.search(rf"^{inactive} (\d+)$", stat, re.MULTILINE)
        used = current - (int(match.group(1)) if match else 0)
        return max(0, int(limit) - used)
    return None


def _windows_available() -> int | None:
    import ctypes

    class MemoryStatusEx(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MemoryStatusEx()
    status.dwLength = ctypes.sizeof(MemoryStatusEx)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullAvailPhys)


def _macos_available() -> int | None:
    """Free + inactive + speculative + purgeable pages, as vm_stat counts them."""
    text = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5, check=True).stdout
    page = re.search(r"page size of (\d+) bytes", text)
    pages = {m.group(1): int(m.group(2)) for m in re.finditer(r"^Pages ([\w ]+):\s+(\d+)\.", text,
                                                               re.MULTILINE)}
    if page is None or "free" not in pages:
        return None
    reclaimable = sum(pages.get(name, 0) for name in ("free", "inactive", "speculative", "purgeable"))
    return reclaimable * int(page.group(1))
