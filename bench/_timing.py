"""Timing shared by the benchmarks: best of interleaved repeats of a calibrated loop.

The minimum is the figure least disturbed by other work on a shared machine (timeit's advice);
interleaving the contenders repeat by repeat makes a burst of outside load hit all of them.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable


def calibrate(run: Callable[[], object], target: float) -> int:
    """Loop count (a power of two) for which `run` takes at least `target` seconds."""
    loops = 1
    while True:
        started = time.perf_counter()
        for _ in range(loops):
            run()
        if time.perf_counter() - started >= target:
            return loops
        loops *= 2


def measure(contenders: dict[str, Callable[[], object]], repeats: int, target: float
            ) -> dict[str, float]:
    """Best seconds per operation for each contender, interleaving the repeats."""
    loops = {name: calibrate(run, target) for name, run in contenders.items()}
    best = dict.fromkeys(contenders, float("inf"))
    gc.collect()
    for _ in range(repeats):
        for name, run in contenders.items():
            count = loops[name]
            started = time.perf_counter()
            for _ in range(count):
                run()
            best[name] = min(best[name], (time.perf_counter() - started) / count)
    return best


def schedstat_ns(pid: int | str = "self") -> tuple[int, int]:
    """Nanoseconds a process's live threads have run, and have waited for a CPU while ready to
    run (Linux ``/proc/PID/task/*/schedstat``); ``(0, 0)`` where that is not available."""
    run = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                fields = file.read().split()
        except OSError:
            continue  # the thread ended
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait
