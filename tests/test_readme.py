"""The README's Python blocks run as written (from a folder holding the test photo the
first one names), against the shipped default model."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    photo = Path(__file__).parent / "data" / "kodak" / "kodim23_crop.png"
    (tmp_path / "tests/data/kodak").mkdir(parents=True)
    shutil.copy(photo, tmp_path / "tests/data/kodak" / photo.name)
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})
    written = {p.name for p in tmp_path.iterdir()}
    assert written - {"tests"}, "a README block should leave its outputs behind"
