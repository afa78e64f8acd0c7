"""Where independent tasks run: `compute.engine`.

- none (the default): in this process, one after another; nothing to install or start.
- dask: as tasks on a Dask cluster (`make dask` installs the optional extra), its results
  pickled back through futures. `compute.scheduler` null starts a local cluster of
  `compute.workers` processes of one thread each for the length of the run; an address
  tcp://host:port joins a running scheduler.

`open_engine(compute)` is a context manager giving an Engine whose `map(fn, calls, names)` runs
fn(*call) for each call and returns the results in order. A task whose worker dies is one line
naming the task (`names`); the caller has written nothing yet, so rerunning redoes it. Dask is
imported only when the engine is dask.

On the local cluster a task that kills its worker fails the run at once (the scheduler's
allowed-failures is 0 there: a task that ran a worker out of memory would kill the next one
too); a running scheduler's own `distributed.scheduler.allowed-failures` decides how many
workers a task may take down before the run fails.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from netunits.errors import PipelineError
from netunits.params import PARAMS_FILE, Compute

CONNECT_TIMEOUT_S = 10          # how long joining a scheduler at compute.scheduler may take
# Fault injection: a task whose name contains this variable's value ends its worker process
# (os._exit) before it runs; how the tests check that a dead worker fails the run cleanly.
KILL_ENV = "NETUNITS_KILL_WORKER_IN"


class LocalEngine:
    """compute.engine none: each task here, in turn."""
    name = "none"
    remote = False
    workers = 1

    def map(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str]) -> list:
        return [fn(*call) for call in calls]


def _task(fn: Callable, call: tuple, name: str) -> Any:
    """What a worker runs: fn(*call), after the fault-injection check."""
    kill = os.environ.get(KILL_ENV)
    if kill and kill in name:
        os._exit(70)
    return fn(*call)


class DaskEngine:
    """compute.engine dask: each task on the cluster the client is connected to."""
    name = "dask"
    remote = True

    def __init__(self, client: Any, where: str):
        self.client, self.where = client, where

    @property
    def workers(self) -> int:
        """The cluster's worker processes now (at least one)."""
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str]) -> list:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        futures = [self.client.submit(_task, fn, call, name, pure=False) for call, name in zip(calls, names)]
        index = {future.key: i for i, future in enumerate(futures)}
        results = [None] * len(futures)
        try:
            for future in as_completed(futures):
                try:
                    results[index[future.key]] = future.result()
                except KilledWorker:
                    raise PipelineError(f"{names[index[future.key]]}: its worker died ({self.where}); nothing was "
                                        f"written; rerun the stage to redo it") from None
        finally:
            self.client.cancel([future for future in futures if not future.done()])
        return results


def _import_distributed(source: str):
    try:
        import dask
        import distributed
    except ImportError:
        raise PipelineError(f"{source}: 'compute.engine' is 'dask' but dask is not installed; install the optional "
                            f"extra with `make dask` (requirements-dask.txt), or set it to none") from None
    return dask, distributed


@contextlib.contextmanager
def open_engine(compute: Compute, source: str = PARAMS_FILE) -> Iterator[LocalEngine | DaskEngine]:
    """The engine compute.engine names, for the length of the with block."""
    if compute.engine == "none":
        yield LocalEngine()
        return
    dask, distributed = _import_distributed(source)
    if compute.scheduler is None:
        # Dask's nannies set MALLOC_TRIM_THRESHOLD_ in their workers' environment, which turns off
        # glibc's adaptive mmap threshold: every large tensor is then a fresh mmap, zeroed page by
        # page (bench.scale: a one-worker dissect stage took 197 s with it, 140 s without); the
        # local cluster's workers keep glibc's default
        environ = {key: value for key, value in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                   if key != "MALLOC_TRIM_THRESHOLD_"}
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.nanny.pre-spawn-environ": environ}):
            cluster = distributed.LocalCluster(n_workers=compute.workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=logging.CRITICAL)
        with cluster, distributed.Client(cluster) as client:
            yield DaskEngine(client, f"a local cluster of {compute.workers} workers")
        return
    try:
        client = distributed.Client(compute.scheduler, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:       # nothing there (OSError, TimeoutError), or what answered speaks another protocol
        what = f"no Dask scheduler answered there within {CONNECT_TIMEOUT_S} s" \
            if isinstance(exc, (OSError, TimeoutError)) else \
            f"what answered there is not a Dask scheduler ({type(exc).__name__})"
        raise PipelineError(f"{source}: 'compute.scheduler' is {compute.scheduler!r}: {what}; start one (dask "
                            f"scheduler) or set it to null for a local cluster") from None
    with client:
        yield DaskEngine(client, f"scheduler {compute.scheduler}")
