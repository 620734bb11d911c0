"""Where a batch's files are coded: engine ``local`` (this process, or forked workers that
inherit the loaded model) and engine ``ray`` (one actor per worker, fed file by file). Each
yields ``(index, outcome)`` pairs; only the driver writes anything."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ddncodec import reading
from ddncodec.batch.coder import Coder, Item, Outcome, Settings, attempt, failure
from ddncodec.batch.progress import TileBar
from ddncodec.errors import DDNError, OptionError

if TYPE_CHECKING:
    from ddncodec.modelfile import CodecModel

ENGINES = ("local", "ray")

# ---------------------------------------------------------------- local: this process or forked workers

_pool_job: tuple[Coder, list[Item]] | None = None  # the running batch, inherited by forked workers


def _in_worker(i: int) -> tuple[int, Outcome]:
    assert _pool_job is not None  # set before the pool forks
    coder, items = _pool_job
    return i, attempt(coder, items[i])


def local_outcomes(coder: Coder, items: list[Item], jobs: int, shown: bool) -> Iterator[tuple[int, Outcome]]:
    """Each item's outcome, in input order: in this process (on every core unless the
    settings say otherwise, each photo with its own progress bar if ``shown``), or in
    ``jobs`` forked workers that inherit the loaded model and share the cores (the bytes
    are the same either way)."""
    global _pool_job
    if jobs < 2 or len(items) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for i, item in enumerate(items):
            bar = TileBar(item.name) if shown else None
            try:
                yield i, attempt(coder, item, bar)
            finally:
                if bar is not None:
                    bar.close()
        return
    workers = min(jobs, len(items))
    threads = coder.settings.threads or max(1, (os.cpu_count() or 1) // workers)
    _pool_job = Coder(replace(coder.settings, threads=threads), coder.model), items
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        yield from pool.imap(_in_worker, range(len(items)))
    except BaseException:  # an error, or the batch given up (GeneratorExit)
        pool.terminate()
        raise
    else:
        pool.close()  # the workers end on their own: a SIGTERM would make Ray's handlers, if loaded, dump stacks
    finally:
        pool.join()
        _pool_job = None


# ---------------------------------------------------------------- ray: one actor per worker


class _Worker:
    """A Ray actor: one model, received once, coding on one torch thread."""

    def __init__(self, settings: Settings, model: CodecModel) -> None:
        import torch

        torch.set_num_threads(1)
        self.coder = Coder(settings, model)

    def code(self, item: Item) -> Outcome:
        return attempt(self.coder, item)


def import_ray() -> Any:
    """Ray, or a one-line error (exit 1) saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        msg = "--engine ray needs Ray, which is not installed: pip install 'ddncodec[ray]'"
        raise OptionError(msg) from exc
    return ray


def ray_outcomes(
    coder: Coder, items: list[Item], workers: int | None, address: str | None
) -> Iterator[tuple[int, Outcome]]:
    """Each item's outcome as it arrives from ``workers`` Ray actors (default: one per CPU
    of the cluster; each reserves one). Joins the cluster at ``address`` ("auto": the one
    ``ray start`` runs here), or the Ray this process already runs, or starts one here for
    the batch. The driver reads each file and
    ships its bytes, so the workers need neither the photos nor the output folder."""
    ray = import_ray()
    if not items:
        return
    started = not ray.is_initialized()
    if started:
        # more workers than cores here: as asked, a Ray with that many CPUs (else some would never start)
        local = address is None and workers is not None and workers > (os.cpu_count() or 1)
        try:
            ray.init(
                address=address or "local",  # not a cluster found by chance ("auto" finds the one here)
                num_cpus=workers if local else None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,  # Ray's notices would bury the batch's own lines
            )
        except (ValueError, ConnectionError, RuntimeError) as exc:
            msg = f"cannot {'join Ray at ' + address if address else 'start Ray'}: {_first_line(exc)}"
            raise OptionError(msg) from exc
    actors: list[Any] = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if workers is None:
            workers = max(cpus, 1)
        elif workers > cpus:  # the actors beyond the CPUs would never start, and the batch would wait forever
            msg = f"--workers {workers}: the Ray cluster has {cpus} CPUs"
            raise OptionError(msg)
        worker = ray.remote(num_cpus=1)(_Worker)
        model = ray.put(coder.model)

        settings = replace(coder.settings, threads=coder.settings.threads or 1)  # one core per actor

        def spawn() -> Any:
            return worker.remote(settings, model)

        actors += [spawn() for _ in range(min(workers, len(items)))]
        yield from _dispatch(ray, actors, spawn, items, coder.settings.max_pixels)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    """Ray's errors run to many lines (tracebacks); a batch's messages are one."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _dispatch(
    ray: Any, actors: list[Any], spawn: Callable[[], Any], items: list[Item], max_pixels: int
) -> Iterator[tuple[int, Outcome]]:
    """Keep every actor busy with one file at a time (none waits behind a file that may
    kill its worker), reading each on the driver as it is sent. When an actor dies (out of
    memory, a lost node), a fresh one takes its place and the file gets one more try."""
    free = list(range(len(actors)))
    pending: dict[Any, tuple[int, int, Any]] = {}  # a call -> its item, its actor's slot, that actor
    queue = deque(range(len(items)))
    retried: set[int] = set()
    while True:
        while free and queue:
            i = queue.popleft()
            try:
                shipped = replace(items[i], source=reading.input_bytes(items[i].source, max_pixels))
            except (DDNError, OSError) as exc:
                yield i, failure(exc)
                continue
            k = free.pop()
            pending[actors[k].code.remote(shipped)] = i, k, actors[k]
        if not pending:
            return
        [done], _ = ray.wait(list(pending), num_returns=1)
        i, k, actor = pending.pop(done)
        free.append(k)
        try:
            outcome = ray.get(done)
        except ray.exceptions.RayError as exc:
            lost = isinstance(exc, ray.exceptions.RayActorError)
            if lost and actors[k] is actor:
                actors[k] = spawn()
            if lost and i not in retried:
                retried.add(i)
                queue.appendleft(i)
                continue
            outcome = (
                1,
                f"{'Ray worker lost' if lost else 'Ray task failed'} ({type(exc).__name__}: {_first_line(exc)})",
            )
        yield i, outcome
