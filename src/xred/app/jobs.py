"""The app's one background worker: heavy work (explain, attack, compare) runs here, one job at
a time (the machine has 2 cores), with a short waiting line, a per-job time limit, cancellation
and a result cache keyed by (kind, model, image hash, method, options).

Cancellation and the time limit are cooperative: a job's ``progress`` callback raises
:class:`Cancelled` / :class:`TimedOut` when called after a cancel or past the deadline. Explain
calls it between explainers; an attack calls it on every forward pass of the model (see
:func:`counting_passes`), so a long attack stops within one step.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn


class Busy(Exception):
    """Every worker slot and waiting place is taken: the client should retry later (HTTP 503)."""


class Cancelled(Exception):
    """The user cancelled the job."""


class TimedOut(Exception):
    """The job ran past its time limit."""


@dataclass
class Job:
    """One unit of heavy work and what the page polls: state, progress, message, result."""

    id: str
    kind: str
    key: str
    fn: Callable[[Job], Any]
    time_limit: float
    state: str = "queued"  # queued | running | done | error | cancelled
    progress: float = 0.0
    message: str = "waiting for the worker"
    result: Any = None
    error: str | None = None
    status: int = 200  # HTTP status for an error result
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cached: bool = False
    cancel_requested: bool = False
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def report(self, fraction: float, message: str) -> None:
        """The progress callback handed to the services; raises if the job must stop."""
        if self.cancel_requested:
            raise Cancelled()
        if self.started is not None and time.monotonic() - self.started > self.time_limit:
            raise TimedOut()
        self.progress = max(0.0, min(1.0, float(fraction)))
        self.message = message

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = (self.finished or now) - self.started if self.started else 0.0
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "state": self.state,
                               "progress": round(self.progress, 4), "message": self.message,
                               "elapsed": round(elapsed, 3), "cached": self.cached}
        if self.state == "done":
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class JobRunner:
    """A single worker thread with ``queue_size`` waiting places. :meth:`submit` refuses with
    :class:`Busy` when they are all taken, returns the cached result at once when the same work
    was done before, and joins a job already queued or running for the same key."""

    def __init__(self, *, queue_size: int = 2, time_limit: float = 300.0, cache_size: int = 64,
                 keep_jobs: int = 200) -> None:
        self.queue_size = queue_size
        self.time_limit = time_limit
        self.cache_size = cache_size
        self.keep_jobs = keep_jobs
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._active: dict[str, Job] = {}  # key -> queued or running job
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._work, name="xred-app-worker", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- submitting

    def submit(self, kind: str, key: str, fn: Callable[[Job], Any],
               time_limit: float | None = None) -> Job:
        with self._lock:
            job = Job(f"{kind}-{next(self._ids)}", kind, key, fn,
                      time_limit if time_limit is not None else self.time_limit)
            if key in self._cache:
                self._cache.move_to_end(key)
                self._finish(job, "done", result=self._cache[key], cached=True)
                self._remember(job)
                return job
            if key in self._active:
                return self._active[key]
            if len(self._active) >= 1 + self.queue_size:
                running = next((j for j in self._active.values() if j.state == "running"), None)
                what = f"a {running.kind} job" if running else "other jobs"
                raise Busy(f"busy: the server is running {what} and {self.queue_size} more are "
                           "waiting; try again in a few seconds")
            self._active[key] = job
            self._remember(job)
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop: a queued job ends at once, a running one at its next progress."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in ("queued", "running"):
                return job
            job.cancel_requested = True
            if job.state == "queued":
                self._active.pop(job.key, None)
                self._finish(job, "cancelled", error="cancelled", status=409)
        return job

    def busy(self) -> dict[str, Any]:
        with self._lock:
            return {"running": [j.id for j in self._active.values() if j.state == "running"],
                    "waiting": [j.id for j in self._active.values() if j.state == "queued"],
                    "queue_size": self.queue_size, "cached_results": len(self._cache)}

    def close(self) -> None:
        self._queue.put(None)

    # ---------------------------------------------------------------- the worker

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        while len(self._jobs) > self.keep_jobs:
            old_id, old = next(iter(self._jobs.items()))
            if old.state in ("queued", "running"):
                break
            del self._jobs[old_id]

    def _finish(self, job: Job, state: str, *, result: Any = None, error: str | None = None,
                status: int = 200, cached: bool = False) -> None:
        job.state, job.result, job.error, job.status, job.cached = state, result, error, status, \
            cached
        job.finished = time.monotonic()
        if state == "done":
            job.progress, job.message = 1.0, "done"
        elif error:
            job.message = error
        if not job.future.done():
            job.future.set_result(job)

    def _work(self) -> None:
        from xred.errors import XredError

        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != "queued":
                    continue
                job.state, job.started, job.message = "running", time.monotonic(), "starting"
            try:
                result = job.fn(job)
            except Cancelled:
                outcome: tuple[str, Any, str | None, int] = ("cancelled", None, "cancelled", 409)
            except TimedOut:
                outcome = ("error", None, f"stopped: the {job.kind} job ran past its time limit "
                           f"of {job.time_limit:g} s; choose fewer steps or a smaller model", 408)
            except XredError as e:
                outcome = ("error", None, str(e), 400)
            except Exception as e:  # noqa: BLE001 - the page gets one line, never a traceback
                first = (str(e).splitlines() or [""])[0][:200]
                outcome = ("error", None, f"internal error ({type(e).__name__}: {first})", 500)
            else:
                outcome = ("done", result, None, 200)
            with self._lock:
                state, result, error, status = outcome
                if state == "done":
                    self._cache[job.key] = result
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
                self._active.pop(job.key, None)
                self._finish(job, state, result=result, error=error, status=status)


@contextlib.contextmanager
def counting_passes(module: nn.Module, on_pass: Callable[[int], None]) -> Iterator[None]:
    """Call ``on_pass(count)`` before every forward pass of ``module`` (the job's progress and
    its cancel point during an attack); the hook is always removed."""
    count = 0

    def hook(_module: nn.Module, _args: Any) -> None:
        nonlocal count
        count += 1
        on_pass(count)

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
