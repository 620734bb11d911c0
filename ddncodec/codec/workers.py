"""The threads an encode or decode runs its tiles, strips and bands on, and its progress."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch
from threadpoolctl import threadpool_limits

from ddncodec.errors import OptionError

T = TypeVar("T")
R = TypeVar("R")

Progress = Callable[[int, int | None], None]
"""Called with the tiles and strips done so far and the count expected (None: unknown,
as in a ``--bpp`` search) as each one finishes."""


class _Workers(threading.local):
    """The running encode or decode's workers, per calling thread (None: one at a time)."""

    active = False
    pool: ThreadPoolExecutor | None = None
    progress: Progress | None = None
    done = 0
    total: int | None = None


_workers = _Workers()


def _glibc() -> ctypes.CDLL | None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc has it; another libc named so may not)
        return libc
    return None


_LIBC = _glibc()
_STATM = "/proc/self/statm"
RESIDENT_BUDGET = 1 << 30  # bytes: a tile finished above this hands freed memory back


def _resident() -> int:
    """This process's resident bytes (Linux); 0 where /proc is missing."""
    try:
        with open(_STATM) as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_freed(above: int = 0) -> None:
    """Hand the heap's freed pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing) if more than ``above`` bytes are resident. Freed tensors otherwise stay in
    the heap among live ones: on a 38-megapixel 12-layer decode the peak fell from
    1.21-1.30 to 1.05 GB with one call per tile, at 7 % more time (the pages are faulted
    in again); called by tiles finished above RESIDENT_BUDGET only, 1.09-1.15 GB in the
    time it took before."""
    if _LIBC is not None and (not above or _resident() > above):
        _LIBC.malloc_trim(0)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch on ``count`` threads, then the caller's setting again."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def workers(threads: int | None = None, progress: Progress | None = None) -> Iterator[None]:
    """Run the codec's tiles and strips on ``threads`` workers (None: every core), each
    with torch and numpy's BLAS on one thread, reporting each one done to ``progress``;
    then restore the caller's settings. Nested calls run on the outer call's workers.
    (numpy's OpenBLAS, left to its own threads, ran the detail layer's transforms of two
    bands no faster than of one: a 12-megapixel ``detail.residual_levels`` took 3.2 s on
    one worker and on two, and takes 1.9 s on two with BLAS on one thread.)

    oneDNN picks convolution kernels, and with them the order of float sums, by thread
    count and batch size; a last-bit difference can flip a pixel's 8-bit rounding. One
    thread per op and one tile at a time make the bytes and pixels the same whatever the
    worker count and the caller's thread count, and the decode equal to the encoder's
    reconstruction."""
    if _workers.active:
        yield
        return
    count = (os.cpu_count() or 1) if threads is None else threads
    if count < 1:
        msg = f"threads must be at least 1, got {count}"
        raise OptionError(msg)
    _workers.active, _workers.progress, _workers.done, _workers.total = True, progress, 0, None
    _workers.pool = ThreadPoolExecutor(count, thread_name_prefix="ddncodec") if count > 1 else None
    try:
        with torch_threads(1), torch.inference_mode(), threadpool_limits(1, user_api="blas"):
            yield
    finally:
        pool, _workers.pool, _workers.active, _workers.progress = _workers.pool, None, False, None
        if pool is not None:
            pool.shutdown()


def expect(total: int) -> None:
    """Tell ``progress`` how many tiles and strips the running encode or decode will report."""
    _workers.total = total


def each(work: Callable[[T], R], items: Iterable[T], counted: bool = True) -> list[R]:
    """``work`` over ``items``, results in order, on the running workers if there are
    several; each item one step of ``progress`` if ``counted``."""

    def run(item: T) -> R:
        with torch.inference_mode():  # a thread-local mode: each worker enters it
            return work(item)

    items = list(items)
    pool, progress = _workers.pool, _workers.progress
    results = []
    for result in (map if pool is None or len(items) < 2 else pool.map)(run, items):
        results.append(result)
        if counted:
            _workers.done += 1
            if progress is not None:
                progress(_workers.done, _workers.total)
    return results


def overlapped(work: Callable[[T], object], items: Iterable[T], ahead: int = 2) -> None:
    """``work`` over ``items`` as the caller's thread produces them (a serial decoder, say),
    on the running workers, at most ``ahead`` items waiting: the producing and the work
    overlap, and what the items hold stays bounded."""
    pool = _workers.pool
    if pool is None:
        for item in items:
            work(item)
        return
    pending: collections.deque[Future] = collections.deque()
    for item in items:
        pending.append(pool.submit(work, item))
        while len(pending) > ahead:
            pending.popleft().result()
    for future in pending:
        future.result()


def aside(work: Callable[[], R]) -> Callable[[], R]:
    """Start ``work`` on one of the running workers while the caller goes on (at once, in
    the caller's thread, where there is one worker); call the result to wait for its value.
    For serial Python work (an entropy coder) beside the caller's network work, which the
    other workers run meanwhile."""
    pool = _workers.pool
    if pool is None:
        value = work()
        return lambda: value
    return pool.submit(work).result


def ahead(items: Iterator[T], budget: int, size: Callable[[T], int]) -> Iterator[T]:
    """``items`` drawn on one of the running workers while the caller goes on, until
    ``budget`` bytes of them (by ``size``) are held; iterating the result yields those,
    then draws the rest in the caller's thread. For a serial decoder whose output waits
    for other work: the detail stream during the walk (a 12-megapixel decode on two
    threads, 10.2 -> 9.5 s). Where there is one worker, ``items`` as they are."""
    pool = _workers.pool
    if pool is None:
        return items
    drawn: collections.deque[T] = collections.deque()

    def draw() -> None:
        held = 0
        for item in items:
            drawn.append(item)
            held += size(item)
            if held >= budget:
                return

    finished = pool.submit(draw)

    def rest() -> Iterator[T]:
        finished.result()  # the drawing's error, if any, is raised here
        while drawn:
            yield drawn.popleft()
        yield from items

    return rest()


def bands(work: Callable[[T], R], items: list[T]) -> list[R]:
    """The detail layer's bands on the workers (not steps of ``progress``: they are quick)."""
    return each(work, items, counted=False)
