"""Background system-metrics sampler: CPU and memory from /proc, GPUs via nvidia-smi.

Rule: sampling never disturbs the training loop. It runs on its own daemon thread at a fixed
interval, logs through the run's normal (non-blocking) metric path with split "system", and
a probe that fails (no /proc, no nvidia-smi, a timeout) is skipped silently from then on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Callable

SYSTEM_SPLIT = "system"
NVIDIA_SMI_TIMEOUT = 5.0
_GPU_FIELDS = ("utilization.gpu", "memory.used", "memory.total", "temperature.gpu", "power.draw")
_GPU_NAMES = ("gpu_percent", "memory_used_mb", "memory_total_mb", "temperature_c", "power_w")

LogFn = Callable[[dict[str, float], int], None]


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    text = _read("/proc/stat")
    if not text:
        return None
    parts = [float(x) for x in text.split("\n", 1)[0].split()[1:]]
    if len(parts) < 4:
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    total = sum(parts[:8])
    return total - idle, total


def memory() -> dict[str, float]:
    """System memory use (MB, %) from /proc/meminfo and this process's RSS."""
    out: dict[str, float] = {}
    info = _read("/proc/meminfo")
    if info:
        kv = {}
        for line in info.splitlines():
            name, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                kv[name] = float(fields[0])
        total, avail = kv.get("MemTotal"), kv.get("MemAvailable")
        if total and avail is not None:
            out["memory_used_mb"] = (total - avail) / 1024
            out["memory_percent"] = 100.0 * (total - avail) / total
    status = _read("/proc/self/status")
    if status:
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out["process_rss_mb"] = float(line.split()[1]) / 1024
    return out


def process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def gpus() -> dict[str, float]:
    """Per-GPU utilisation/memory/temperature/power via nvidia-smi (empty when absent)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    try:
        res = subprocess.run(
            [smi, f"--query-gpu={','.join(_GPU_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    out: dict[str, float] = {}
    for i, line in enumerate(res.stdout.strip().splitlines()):
        for name, raw in zip(_GPU_NAMES, line.split(",")):
            try:
                out[f"gpu{i}/{name}"] = float(raw.strip())
            except ValueError:
                continue
    return out


class SystemSampler:
    """Calls `log(values, step)` every `interval` seconds from a daemon thread."""

    def __init__(self, log: LogFn, interval: float = 15.0, *, with_gpu: bool = True) -> None:
        self._log = log
        self.interval = max(0.1, float(interval))
        self._with_gpu = with_gpu and shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runstream-sysmetrics", daemon=True)
        self._prev_cpu = cpu_times()
        self._prev_proc = (time.monotonic(), process_cpu_seconds())
        self._step = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + NVIDIA_SMI_TIMEOUT)

    def sample(self) -> dict[str, float]:
        """One sample (also usable directly)."""
        out: dict[str, float] = {}
        now = cpu_times()
        if now and self._prev_cpu and now[1] > self._prev_cpu[1]:
            busy = now[0] - self._prev_cpu[0]
            out["cpu_percent"] = 100.0 * busy / (now[1] - self._prev_cpu[1])
        self._prev_cpu = now
        t, c = time.monotonic(), process_cpu_seconds()
        if t > self._prev_proc[0]:
            out["process_cpu_percent"] = 100.0 * (c - self._prev_proc[1]) / (t - self._prev_proc[0])
        self._prev_proc = (t, c)
        out.update(memory())
        if self._with_gpu:
            out.update(gpus())
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                values = self.sample()
                if values:
                    self._log(values, self._step)
                    self._step += 1
            except Exception:  # noqa: BLE001 - a sampler must never kill anything
                if self._stop.is_set():
                    return
