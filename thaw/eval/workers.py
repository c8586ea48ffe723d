"""The worker runner: jobs by name, here or in worker processes, under one progress bar.

Apart from the protocol so that how jobs are spread (worker processes, torch.distributed ranks)
can change without touching what a job does: ``run_jobs`` takes any picklable ``job(name, task)``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from thaw import distributed
from thaw.eval.progress import Progress


def run_jobs(job: Callable[[str, Any], Any], tasks: Mapping[str, Any], jobs: int,
             expected: Mapping[str, float], desc: str, progress: bool) -> dict[str, Any]:
    """``job(name, task)`` for every task, here (``jobs == 1`` or a single task) or in ``jobs``
    worker processes, under one progress bar; the outcomes by name.

    Under torch.distributed the tasks are dealt out over the ranks by expected seconds; each
    rank runs its share alone and every rank gets every outcome (the jobs are seeded one by
    one, so the outcomes are one process's)."""
    if distributed.active():
        names = list(tasks)
        mine = distributed.deal([expected.get(n) or 1.0 for n in names])
        if distributed.debug():
            print(f"rank {distributed.rank()} runs {', '.join(names[i] for i in mine) or 'nothing'} "
                  f"of {desc}", file=sys.stderr, flush=True)
        with distributed.alone():
            local = run_jobs(job, {names[i]: tasks[names[i]] for i in mine}, jobs, expected, desc,
                             progress and distributed.is_main())
        gathered = {n: o for outcomes in distributed.gather(local) for n, o in outcomes.items()}
        return {n: gathered[n] for n in names}
    bar = Progress(list(tasks), 1 if jobs == 1 or len(tasks) == 1 else min(jobs, len(tasks)),
                   expected, desc, progress)
    try:
        if bar.jobs > 1:
            return _in_workers(job, tasks, bar)
        outcomes = {}
        for name, task in tasks.items():
            bar.started(name)
            outcomes[name] = job(name, task)
            bar.finished(name)
        return outcomes
    finally:
        bar.close()


def _in_workers(job: Callable[[str, Any], Any], models: Mapping[str, Any], bar: Progress) -> dict[str, Any]:
    """Run ``job`` on every model in ``bar.jobs`` worker processes; the outcomes by name.

    Workers are spawned, not forked (a forked child of a process that has used torch's thread
    pools can deadlock), born with SIGINT blocked, and tied to this process (see
    ``_worker_start``). Whatever ends the wait (a worker's exception, Ctrl-C, any other
    signal turned exception) stops every worker before it propagates: nothing keeps fitting.
    """
    context = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=bar.jobs, mp_context=context, initializer=_worker_start,
                               initargs=(os.getpid(),))
    outcomes: dict[str, Any] = {}
    try:
        with _sigint_blocked():  # inherited: a Ctrl-C is the parent's to handle
            futures: dict[Future, str] = {pool.submit(job, name, model): name
                                          for name, model in models.items()}
        for name in list(models)[:bar.jobs]:
            bar.started(name)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                outcomes[futures[future]] = future.result()
                bar.finished(futures[future])
            bar.refresh()
    except BaseException:
        _stop_workers(pool, before)
        raise
    pool.shutdown()
    return outcomes


def _stop_workers(pool: ProcessPoolExecutor, before: set) -> None:
    """Cancel what has not started and end the workers now: SIGTERM, then SIGKILL after 2 s.
    Swept until no child is left that was not there ``before``: the pool's manager thread can
    still be starting a worker while the first ones are stopped."""
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 10.0
    while workers := set(multiprocessing.active_children()) - before:
        for process in workers:
            process.terminate()
        grace = time.monotonic() + 2.0
        for process in workers:
            process.join(max(0.0, grace - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # a worker being started now shows up in the next sweep


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread inside the block (a pending one arrives after it);
    processes and threads started inside inherit the block."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_start(parent: int) -> None:
    """A worker's first act: ignore Ctrl-C (the parent stops its workers itself), and end
    when the parent ends, however it ends (SIGKILL and SIGTERM included): on Linux the kernel
    sends SIGKILL when the parent dies (PR_SET_PDEATHSIG); everywhere a watchdog thread
    exits when the worker's parent is no longer ``parent``. Warnings print as one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="thaw-parent-watch").start()
    warnings.showwarning = _warning_line


def _watch_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _warning_line(message: Any, category: Any, filename: Any, lineno: Any, file: Any = None,
                  line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
