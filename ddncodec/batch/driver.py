"""The driver of a batch: it runs the items on an engine, finishes (writes) each coded
file as it arrives, reports failures one line each, and shows the batch's progress bar."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ddncodec.batch.coder import Coded, Coder, Item, failure
from ddncodec.batch.engines import ENGINES, local_outcomes, ray_outcomes
from ddncodec.errors import DDNError, OptionError


@dataclass
class Summary:
    """What a batch did."""

    total: int
    coded: int = 0
    skipped: int = 0  # finished by an earlier run (a tree's manifest vouches for them)
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # input, exit code, one-line message
    seconds: float = 0.0
    manifest: Path | None = None

    @property
    def exit_code(self) -> int:
        """0, or the worst failure's code (the CLI's one rule)."""
        return max((code for _, code, _ in self.failed), default=0)


def run(
    coder: Coder,
    items: list[Item],
    finish: Callable[[int, Coded], None],
    *,
    failed: Callable[[int, str], None] | None = None,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    quiet: bool = False,
    sizes: Sequence[int] | None = None,
    skipped: int = 0,
) -> Summary:
    """Code ``items`` on ``engine`` and ``finish(i, coded)`` each on the driver as it
    arrives (writing it; an error there fails that file alone). A failed file gets one
    line naming it on stderr (and ``failed(i, line)``), the batch goes on. A progress bar
    (files, MB/s of ``sizes``, ETA) on a terminal unless ``quiet``; the summary lines too."""
    from tqdm import tqdm

    if engine not in ENGINES:
        msg = f"engine must be one of {', '.join(ENGINES)}, got {engine!r}"
        raise OptionError(msg)
    if engine == "local" and address is not None:
        msg = "--address is for --engine ray"
        raise OptionError(msg)
    summary = Summary(total=len(items) + skipped, skipped=skipped)
    start = time.perf_counter()
    shown = not quiet and sys.stderr.isatty()
    if engine == "ray":
        results = ray_outcomes(coder, items, workers, address)
    else:
        results = local_outcomes(coder, items, workers or os.cpu_count() or 1, shown)
    shown = shown and summary.total > 1
    bar = tqdm(total=summary.total, initial=skipped, disable=not shown, unit="file", file=sys.stderr, leave=False)
    done_bytes = 0
    with bar, contextlib.closing(results):
        for i, outcome in results:
            item = items[i]
            if isinstance(outcome, Coded):
                try:
                    finish(i, outcome)
                except (DDNError, OSError) as exc:  # writing fails that file alone too
                    outcome = failure(exc)
            if isinstance(outcome, Coded):
                summary.coded += 1
                for line in [] if quiet else outcome.lines:
                    bar.write(line, file=sys.stderr)
            else:
                code, text = outcome
                named = text if text.startswith(item.name) else f"{item.name}: {text}"
                summary.failed.append((item.name, code, named))
                if failed is not None:
                    failed(i, named)
                bar.write(f"ddncodec: error: {named}", file=sys.stderr)
            done_bytes += sizes[i] if sizes else 0
            bar.set_postfix_str(f"{done_bytes / 1e6 / (time.perf_counter() - start):.2f} MB/s", refresh=False)
            bar.update(1)
    summary.seconds = time.perf_counter() - start
    return summary
