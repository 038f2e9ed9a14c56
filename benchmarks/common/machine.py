# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The machine a benchmark ran on, how busy it was, and memory probes.

On a shared machine other processes distort CPU timings. `QuietMachine` holds the scripts' options for that: wait for a
low load average before starting, wait before each run while other tasks are runnable, and run a case again when other
processes used more than a given number of cores during it. `MemoryProbe` reads the memory a run uses: CUDA memory
allocated by torch, or the process's resident set size (RSS) with a resettable high-water mark on CPU.
"""

import argparse
import datetime
import os
import platform
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from .env import REPO_ROOT


def machine_info() -> dict:
    """Versions, CPU, memory, GPU and the git commit of this run."""
    import torch
    import transformers
    import trl

    import trl_inspo

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "trl_inspo": trl_inspo.__version__,
        "cpu_count_os": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo)
        info["cpu_model"] = names[0].strip() if names else platform.processor()
        info["cpu_logical_cores"] = len(names)
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        meminfo = Path("/proc/meminfo").read_text()
        info["mem_total_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) / 2**20, 1)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "trl_inspo"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        info["trl_inspo_uncommitted_changes"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


# ---------------------------------------------------------------------------------------------------------- load
def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def other_runnable_tasks(samples: int = 20, interval_s: float = 0.1) -> float:
    """Mean number of runnable tasks on the machine other than this process, sampled from `/proc/loadavg` over about
    `samples * interval_s` seconds (an instantaneous gauge; the load averages lag by minutes)."""
    values = []
    for _ in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return 0.0
        values.append(max(running - 1, 0))
        time.sleep(interval_s)
    return sum(values) / len(values)


def machine_busy_cpu_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores: user, nice, system, irq, softirq, steal)."""
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    busy = values[0] + values[1] + values[2] + sum(values[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OtherCpuMeter:
    """CPU cores used by other processes (averaged over the wall time) between `start()` and `stop()`: what
    distorted a CPU run. Also records this process's cores and the load averages at both ends."""

    def start(self) -> None:
        self.load_start = load_average()
        self._machine, self._own, self._wall = machine_busy_cpu_seconds(), process_cpu_seconds(), time.perf_counter()

    def stop(self) -> dict:
        wall = time.perf_counter() - self._wall
        own = process_cpu_seconds() - self._own
        return {
            "load_average_start": self.load_start,
            "load_average_end": load_average(),
            "other_cpu_cores_during_train": (machine_busy_cpu_seconds() - self._machine - own) / wall,
            "own_cpu_cores_during_train": own / wall,
        }


@dataclass
class QuietMachine:
    """How a CPU benchmark copes with a shared machine: every field is a command-line option (see `HELP`), all off by
    default."""

    max_load: float | None = None
    max_wait: float = 2400.0
    max_busy: float | None = None
    case_wait: float = 600.0
    max_other_cores: float | None = None
    max_attempts: int = 3
    patience: float | None = None

    HELP = {
        "max_load": "wait until the 1-minute load average is below this before measuring",
        "max_wait": "longest wait for --max-load (s)",
        "max_busy": "before each run, wait while this many other tasks are runnable on average",
        "case_wait": "longest wait before one run (s)",
        "max_other_cores": "run again when other processes used more CPU cores than this during a run",
        "max_attempts": "runs of one case in all (the least disturbed one is kept)",
        "patience": "after this many seconds, stop waiting for a quiet machine and stop re-running",
    }

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """`--max-load`, `--max-wait`, ...: one option per field."""
        group = parser.add_argument_group("shared machine")
        for f in fields(cls):
            kind = int if f.type is int else float
            group.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default, help=cls.HELP[f.name])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "QuietMachine":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def wait_at_start(self) -> dict | None:
        """Sleep until the 1-minute load average is below `max_load` (or `max_wait` passed); what happened."""
        if self.max_load is None:
            return None
        start = time.time()
        load = load_average()
        while load and load[0] >= self.max_load and time.time() - start < self.max_wait:
            print(f"[bench] load average {load[0]:.2f} >= {self.max_load}: waiting", file=sys.stderr, flush=True)
            time.sleep(30)
            load = load_average()
        return {"waited_s": round(time.time() - start, 1), "load_after_wait": load, "max_load": self.max_load}

    def wait_before_case(self) -> dict | None:
        """Before a run: wait (up to `case_wait`) while `max_busy` or more other tasks are runnable."""
        if self.max_busy is None:
            return None
        start = time.time()
        busy = other_runnable_tasks()
        while busy >= self.max_busy and time.time() - start < self.case_wait:
            time.sleep(10)
            busy = other_runnable_tasks()
        return {"waited_s": round(time.time() - start, 1), "other_runnable": busy}

    def disturbed(self, result: dict) -> bool:
        """Whether other processes used more than `max_other_cores` during the run of `result`."""
        return self.max_other_cores is not None and result["other_cpu_cores_during_train"] > self.max_other_cores


# ---------------------------------------------------------------------------------------------------------- memory
class MemoryProbe:
    """Memory in MiB: on CUDA, what torch has allocated; on CPU, this process's RSS, with a high-water mark that
    `reset_peak()` resets (Linux >= 4.0). Reading on CUDA synchronises first, so the numbers belong to the work queued
    before."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.unit = "MiB allocated (CUDA)" if cuda else "MiB RSS"

    def current(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.memory_allocated() / 2**20
        return self._status_mib("VmRSS")

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:  # not resettable here: the peak is the process's
            pass

    def peak(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return self._status_mib("VmHWM")

    @staticmethod
    def _status_mib(key: str) -> float:
        try:
            return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
        except (OSError, AttributeError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
