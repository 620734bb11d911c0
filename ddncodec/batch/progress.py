"""A photo's own progress bar, for a batch coded file by file in this process."""

from __future__ import annotations

import sys
from typing import Any


class TileBar:
    """A photo's own progress bar on stderr (tiles and pieces done, time left), shown once
    the photo has taken two seconds: small images never flash one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(desc=self.name, unit="tile", delay=2, file=sys.stderr, leave=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
