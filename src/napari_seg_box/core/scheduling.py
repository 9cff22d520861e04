"""Running a batch's tasks on a scheduler: in this process (sync, threads), in worker processes, or on
a dask.distributed cluster (``tcp://host:8786``); results come back as tasks finish.

On a cluster a task that raises is run once more (on any worker), and a worker that dies mid-batch
has its tasks run elsewhere (dask does). A task that still fails is never dropped: it comes back as
a :class:`TaskFailure`, which the caller's ``on_error`` turns into the row of that item. Before any
task is sent, the cluster is checked: that its scheduler answers (:data:`CONNECT_TIMEOUT`), that it
has workers, and that they run the versions of the packages this machine runs
(:func:`version_mismatches`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .events import check_cancel

CLUSTER_PREFIXES = ("tcp://", "tls://", "inproc://", "ucx://")
CONNECT_TIMEOUT = "5s"  # a scheduler that does not answer by then is reported, not waited for
# what must be the same on this machine and the workers: the tasks' code, the network, the arrays and
# how they travel (a worker with another torch or numpy can give other labels, or fail to unpickle)
CHECKED_PACKAGES = ("napari-seg-box", "torch", "segmentation-models-pytorch", "numpy", "dask", "distributed", "cloudpickle")
SCHEDULER_PACKAGES = ("python", "dask", "distributed", "cloudpickle")  # the scheduler runs no task: these only


@dataclass(frozen=True)
class TaskFailure:
    """A task that raised (on a cluster: after its retry), or whose worker died too often."""

    kind: str  # the exception's type name
    message: str

    @classmethod
    def of(cls, err: BaseException) -> TaskFailure:
        return cls(type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


def is_cluster(scheduler: str) -> bool:
    """Whether ``scheduler`` names a dask.distributed cluster (an address, or ``"distributed"``: a local one)."""
    return scheduler == "distributed" or scheduler.startswith(CLUSTER_PREFIXES)


def run_tasks(fn, tasks, options, *, scheduler: str, workers: int, cancel=None, on_error=None, retries: int = 1):
    """Yield (index, ``fn(task, options)``) as tasks finish; at most ``workers`` tasks in flight.

    ``scheduler``: ``sync``, ``threads``, ``processes`` (``workers`` of them), a dask scheduler
    address (``tcp://host:8786``: its workers decide how many run at once) or ``distributed`` (a
    local cluster of ``workers``). On a cluster a task that raises is retried ``retries`` times.
    ``on_error(task, failure)``, given, turns a task that failed (a :class:`TaskFailure`) into the
    result yielded for it; without it the error is raised.
    """
    if is_cluster(scheduler):
        yield from _run_on_cluster(fn, tasks, options, scheduler, workers, cancel, on_error, retries)
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
            if on_error is None:
                part = [dask.delayed(fn)(t, options) for t in tasks[start : start + step]]
            else:
                part = [dask.delayed(_guarded)(fn, t, options) for t in tasks[start : start + step]]
            kwargs = {"pool": pool} if pool is not None else {}
            done = dask.compute(*part, scheduler=scheduler, **kwargs)
            for j, res in enumerate(done):
                yield start + j, on_error(tasks[start + j], res) if isinstance(res, TaskFailure) else res
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _guarded(fn, task, options):
    """``fn(task, options)``, or the :class:`TaskFailure` it raised (one task's error spares the others)."""
    try:
        return fn(task, options)
    except Exception as err:  # noqa: BLE001 - reported to the caller's on_error, never dropped
        return TaskFailure.of(err)


def _run_on_cluster(fn, tasks, options, scheduler: str, workers: int, cancel, on_error, retries: int):
    from distributed import as_completed

    client = connect(scheduler, workers)
    futures: dict = {}
    try:
        check_versions(client, scheduler)
        futures = {client.submit(fn, t, options, pure=False, retries=retries): i for i, t in enumerate(tasks)}
        for fut in as_completed(futures, loop=client.loop):
            check_cancel(cancel)
            i = futures.pop(fut)
            try:
                res = fut.result()
            except Exception as err:  # after its retries (a KilledWorker: its worker died too often)
                if on_error is None:
                    raise
                res = on_error(tasks[i], TaskFailure.of(err))
            yield i, res
    finally:
        if futures:  # cancelled, or an error: the tasks not done yet are withdrawn
            client.cancel(list(futures))
        client.close()


def connect(scheduler: str, workers: int = 1):
    """A dask.distributed ``Client`` of ``scheduler`` (an address; ``"distributed"``: a local cluster
    of ``workers`` threads), with a :class:`ConfigError` that says what to check when none answers
    within :data:`CONNECT_TIMEOUT` or it has no workers."""
    from distributed import Client

    if scheduler == "distributed":
        return Client(processes=False, n_workers=max(1, int(workers)), dashboard_address=None, set_as_default=False)
    hints = {
        "cli": "Start one with `dask scheduler` and workers with `dask worker ADDRESS`, or leave out --scheduler to run here.",
        "gui": "Start the dask scheduler and its workers, or run the batch on this computer.",
    }
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(
            f"No dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT} ({err}). Is `dask scheduler` running at "
            f"{scheduler}? Is the port open from this machine (firewall, the address the scheduler printed)?",
            hints=hints,
        ) from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        client.close()
        raise ConfigError(
            f"The dask scheduler at {scheduler} has no workers ({type(err).__name__} after {CONNECT_TIMEOUT}): start some "
            f"with `dask worker {scheduler}` on the machines that should do the work.",
            hints=hints,
        ) from None
    return client


def check_versions(client, where: str = "the cluster") -> None:
    """Refuse a cluster whose workers run other versions of :data:`CHECKED_PACKAGES` (or another
    Python) than this machine, naming each package and its versions (dask itself only warns)."""
    problems = version_mismatches(client.get_versions(packages=list(CHECKED_PACKAGES)))
    if problems:
        raise ConfigError(
            f"The dask workers of {where} do not run the package versions this machine runs, which can fail or give other "
            f"results: {'; '.join(problems)}. Install the same versions on the workers (and restart them), or run the batch "
            "where they are installed."
        )


def version_mismatches(versions: dict) -> list[str]:
    """What differs between the client and the workers (and, for :data:`SCHEDULER_PACKAGES`, the
    scheduler) in a ``Client.get_versions()`` result: ``["torch 2.14.1 here, 2.13.0 on 1 of 2 worker(s)
    (tcp://...)", ...]``. Python counts by major.minor; a package missing here and on the workers is
    not a difference, one missing on a worker only is for napari-seg-box (its tasks are its code)."""
    here = (versions.get("client") or {}).get("packages") or {}
    places = {addr: (info or {}).get("packages") or {} for addr, info in (versions.get("workers") or {}).items()}
    scheduler = (versions.get("scheduler") or {}).get("packages") or {}
    out = []
    for pkg in ("python", *CHECKED_PACKAGES):
        mine = _version(pkg, here.get(pkg))
        if mine is None:
            continue
        others: dict[str | None, list[str]] = {}
        for addr, pkgs in places.items():
            others.setdefault(_version(pkg, pkgs.get(pkg)), []).append(addr)
        for theirs, addrs in others.items():
            if theirs != mine and (theirs is not None or pkg == "napari-seg-box"):
                shown = ", ".join(addrs[:3]) + (", ..." if len(addrs) > 3 else "")
                out.append(f"{pkg} {mine} here, {theirs or 'not installed'} on {len(addrs)} of {len(places)} worker(s) ({shown})")
        theirs = _version(pkg, scheduler.get(pkg)) if pkg in SCHEDULER_PACKAGES else None
        if theirs is not None and theirs != mine:
            out.append(f"{pkg} {mine} here, {theirs} on the scheduler")
    return out


def _version(pkg: str, version) -> str | None:
    if version is None or version == "MISSING":
        return None
    return ".".join(str(version).split(".")[:2]) if pkg == "python" else str(version)
