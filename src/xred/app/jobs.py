"""The app's one worker: a single slot for heavy work (the machine has 2 cores), per-job time
limits, live progress, cancellation, and a bounded cache of finished results.

Short work (an explanation) runs in the request's thread while it holds the slot; long work (an
attack) runs in a worker thread that the page polls. When the slot is taken, a new request gets a
:class:`Busy` answer (HTTP 503) at once instead of queueing behind it.

Progress and cancellation reach inside the library without changing it: while a job runs, a
forward pre-hook on the job's model counts the model's evaluations (the attack's steps), reports
them, and stops the job by raising :class:`Cancelled` when the user cancels or the time limit
passes. The hook is removed when the job ends.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from xred.errors import XredError


class Busy(Exception):
    """The worker is running another job."""


class Cancelled(Exception):
    """A job was cancelled by the user or hit its time limit."""


@dataclass
class Job:
    """One unit of heavy work and what the page shows of it."""

    id: str
    kind: str
    time_limit: float
    expected_calls: int = 0
    status: str = "running"  # running, done, error, cancelled
    progress: float = 0.0
    message: str = "starting"
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    calls: int = 0
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        end = self.finished or time.monotonic()
        return {"id": self.id, "kind": self.kind, "status": self.status,
                "progress": round(self.progress, 4), "message": self.message,
                "seconds": round(end - self.started, 3), "result": self.result,
                "error": self.error}

    def check(self) -> None:
        """Raise :class:`Cancelled` if the user cancelled or the time limit passed."""
        if self.cancel_event.is_set():
            raise Cancelled("cancelled")
        if time.monotonic() - self.started > self.time_limit:
            raise Cancelled(f"stopped at the time limit of {self.time_limit:g} s; lower the "
                            "steps or pick a smaller model")

    def report(self, fraction: float, message: str) -> None:
        self.progress = max(self.progress, min(1.0, fraction))
        self.message = message
        self.check()


@contextlib.contextmanager
def watch(module: nn.Module, job: Job) -> Iterator[None]:
    """While inside: every forward pass of ``module`` counts toward the job's progress and
    checks for cancellation (the hook is always removed)."""

    def hook(_module: nn.Module, _args: Any) -> None:
        job.calls += 1
        if job.expected_calls:
            job.progress = max(job.progress, min(0.99, job.calls / job.expected_calls))
            job.message = f"{job.calls} of ~{job.expected_calls} model evaluations"
        job.check()

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class Worker:
    """One slot for heavy work; recent jobs and results are kept (bounded)."""

    def __init__(self, time_limit: float = 180.0, keep_jobs: int = 16,
                 keep_results: int = 64) -> None:
        self.time_limit = time_limit
        self.keep_jobs = keep_jobs
        self.keep_results = keep_results
        self._slot = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- result cache
    @staticmethod
    def key(*parts: Any) -> str:
        return json.dumps(parts, sort_keys=True, default=str)

    def cached(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        return None

    def remember(self, key: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.keep_results:
                self._cache.popitem(last=False)

    # ---------------------------------------------------------------- running
    def _take(self, what: str) -> None:
        if not self._slot.acquire(blocking=False):
            raise Busy(f"busy: the server is running another job (one at a time on this "
                       f"machine); try the {what} again in a few seconds")

    def run(self, kind: str, fn: Callable[[Job], dict[str, Any]], *,
            cache_key: str | None = None) -> dict[str, Any]:
        """Run ``fn(job)`` now, in this thread, holding the slot; its result (cached)."""
        if cache_key and (hit := self.cached(cache_key)) is not None:
            return hit
        self._take(kind)
        job = Job(uuid.uuid4().hex[:12], kind, self.time_limit)
        try:
            result = fn(job)
        except Cancelled as e:
            raise XredError(f"{kind} {e}") from None
        finally:
            self._slot.release()
        if cache_key:
            self.remember(cache_key, result)
        return result

    def submit(self, kind: str, fn: Callable[[Job], dict[str, Any]], *,
               cache_key: str | None = None, expected_calls: int = 0) -> Job:
        """Start ``fn(job)`` in a worker thread holding the slot; the job to poll."""
        job = Job(uuid.uuid4().hex[:12], kind, self.time_limit, expected_calls)
        hit = self.cached(cache_key) if cache_key else None
        if hit is not None:
            job.status, job.progress, job.message, job.result = "done", 1.0, "cached", hit
            job.finished = job.started
            self._keep(job)
            return job
        self._take(kind)
        self._keep(job)

        def work() -> None:
            try:
                result = fn(job)
                if cache_key:
                    self.remember(cache_key, result)
                job.result, job.status, job.progress, job.message = result, "done", 1.0, "done"
            except Cancelled as e:
                job.status, job.error = "cancelled", f"{kind} {e}"
            except XredError as e:
                job.status, job.error = "error", str(e)
            except Exception as e:  # noqa: BLE001 - the page gets one line, never a traceback
                first = (str(e).splitlines() or [""])[0][:200]
                job.status, job.error = "error", f"internal error ({type(e).__name__}: {first})"
            finally:
                job.finished = time.monotonic()
                self._slot.release()

        threading.Thread(target=work, name=f"xred-job-{job.id}", daemon=True).start()
        return job

    def _keep(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep_jobs:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status == "running":
                    break
                self._jobs.popitem(last=False)

    def job(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(job_id)
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        job = self.job(job_id)
        job.cancel_event.set()
        return job

    @property
    def busy(self) -> bool:
        return self._slot.locked()
