"""How many CPUs a process may use and how many are idle now, for the default thread and worker counts.

Reads Linux's /proc/stat; no torch, so scripts answer ``--help`` at once.
"""
from __future__ import annotations

import math
import os
import time


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(idle, total) jiffies so far of each of ``cpus``, from Linux's /proc/stat."""
    times = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                jiffies = [int(value) for value in values[:8]]  # user nice system idle iowait irq softirq steal
                times[int(name[3:])] = (jiffies[3] + jiffies[4], sum(jiffies))
    return times


def idle_cpus(interval: float = 0.1) -> float:
    """How many of this process's CPUs are idle now: each one's idle share over ``interval`` seconds, summed
    (Linux's /proc/stat; where it cannot be read, every CPU counts as idle)."""
    try:
        allowed = os.sched_getaffinity(0)
        before = cpu_times(allowed)
        time.sleep(interval)
        after = cpu_times(allowed)
    except AttributeError:  # not on Linux
        return float(available_cpus())
    except (OSError, ValueError, IndexError):
        return float(len(allowed))
    idle = 0.0
    for cpu, (idle_after, total_after) in after.items():
        idle_before, total_before = before.get(cpu, (idle_after, total_after))
        elapsed = total_after - total_before
        idle += (idle_after - idle_before) / elapsed if elapsed > 0 else 1.0
    return idle


def default_workers() -> int:
    """DataLoader workers when ``--workers`` is left out: none on 1–2 CPUs, where a worker process takes a core's
    share from the compute threads and every OpenMP barrier waits for it (evaluation 1.4× slower on 2 CPUs,
    docs/notes/performance.md); 1 on 3 CPUs; 2 from 4 CPUs on, where decoding overlaps the compute for free."""
    return min(2, max(0, available_cpus() - 2))


def default_threads(workers: int) -> int:
    """Intra-op threads when ``--threads`` is left out: ``OMP_NUM_THREADS`` when the environment sets it (the user
    said so), else the CPUs idle when the script starts (a CPU counts when it is at least 75 % idle over 0.1 s)
    minus one per DataLoader worker, at least one. A thread on a core that another process keeps busy stalls
    every parallel region of the others (2–2.5× slower on 2 CPUs with one busy, docs/notes/performance.md)."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, math.floor(idle_cpus() + 0.25) - workers)
