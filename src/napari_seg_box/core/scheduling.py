"""Running a batch's tasks on a scheduler: in this process (sync, threads), in worker processes, or on
a dask.distributed cluster (``tcp://host:8786``); results come back as tasks finish."""

from __future__ import annotations

from .errors import ConfigError
from .events import check_cancel


def run_tasks(fn, tasks, options, *, scheduler: str, workers: int, cancel=None):
    """Yield (index, ``fn(task, options)``) as tasks finish; at most ``workers`` tasks in flight."""
    if scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")) or scheduler == "distributed":
        from distributed import Client, as_completed

        client = Client(scheduler) if scheduler != "distributed" else Client(processes=False, n_workers=workers)
        try:
            futures = {client.submit(fn, t, options, pure=False): i for i, t in enumerate(tasks)}
            for fut in as_completed(futures):
                check_cancel(cancel)
                yield futures[fut], fut.result()
        finally:
            client.close()
        return
    if scheduler not in ("sync", "threads", "processes"):
        raise ConfigError(f"Unknown scheduler {scheduler!r}: use sync, threads, processes or a tcp:// scheduler address.")
    import dask

    workers = max(1, int(workers))
    # One pool for the whole batch: dask would otherwise start a new one (new processes, each
    # importing this package) for every compute call. A pool of n runs at most n tasks at once, so
    # at most n images are in memory; results are small tables.
    pool = None
    if scheduler == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    elif scheduler == "threads":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers)
    step = 4 * workers  # tasks per compute call: progress and cancel between calls
    try:
        for start in range(0, len(tasks), step):
            check_cancel(cancel)
            part = [dask.delayed(fn)(t, options) for t in tasks[start : start + step]]
            kwargs = {"pool": pool} if pool is not None else {}
            done = dask.compute(*part, scheduler=scheduler, **kwargs)
            for j, res in enumerate(done):
                yield start + j, res
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
