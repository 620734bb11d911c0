"""Batches of folders and lists (``ddncodec.batch``): the Ray engine writes the local
engine's bytes, a killed batch resumes without recoding what it finished, a bad file
fails alone, and a missing Ray is one line. One local Ray (2 CPUs) serves the module."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from ddncodec import batch, codec
from ddncodec.cli import main
from ddncodec.modelfile import CodecModel

DATA = Path(__file__).parent / "data"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / batch.MANIFEST).read_text().splitlines()]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    """Ten photos, two of them a folder down."""
    src = tmp_path / "photos"
    (src / "2019").mkdir(parents=True)
    for photo in sorted((DATA / "bsds").glob("*.png")):
        shutil.copy(photo, src / photo.name)
    for photo in sorted((DATA / "kodak").glob("*.png")):
        shutil.copy(photo, src / "2019" / photo.name)
    return src


def expected(library: Path, model: CodecModel) -> dict[str, bytes]:
    """Each photo's file as ``ddncodec encode`` writes it alone, by its place in the output."""
    return {
        p.relative_to(library).with_suffix(".ddn").as_posix(): codec.encode(p, model, 3).data
        for p in library.rglob("*.png")
    }


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.ddn")}


@pytest.mark.slow
def test_ray_writes_the_local_engines_bytes_in_the_librarys_layout(
    ray_cluster: None, library: Path, tmp_path: Path, tiny_model: CodecModel, tiny_model_path: Path
) -> None:
    common = ("--model", tiny_model_path, "-q", "3")
    local = run("encode", library, "-o", tmp_path / "local", "--engine", "local", "--jobs", "1", *common)
    assert local.exit_code == 0, local.stderr
    on_ray = run("encode", library, "-o", tmp_path / "ray", "--engine", "ray", "--workers", "2", *common)
    assert on_ray.exit_code == 0, on_ray.stderr
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local") == expected(library, tiny_model)
    assert "10 inputs: 10 coded, 0 done before, 0 failed" in on_ray.stderr
    assert sorted(r["output"] for r in records(tmp_path / "ray")) == sorted(expected(library, tiny_model))

    decoded = run("decode", tmp_path / "ray", "-o", tmp_path / "png", "--engine", "ray", "--model", tiny_model_path)
    assert decoded.exit_code == 0, decoded.stderr
    ddn = tmp_path / "ray" / "2019" / "kodim23_crop.ddn"
    pixels = np.asarray(Image.open(tmp_path / "png" / "2019" / "kodim23_crop.png"))
    assert np.array_equal(pixels, np.asarray(codec.decode(ddn.read_bytes(), tiny_model)))
    assert len(list((tmp_path / "png").rglob("*.png"))) == 10


# Run in a subprocess: ``ddncodec encode`` that is killed (SIGKILL) right after the
# manifest records its third file, before that file's output is renamed into place.
KILLED_AFTER_3 = """
import os, signal, sys
from ddncodec import batch
from ddncodec.cli import main
add = batch.Manifest.add
def add_then_die(self, *args, **kwargs):
    add(self, *args, **kwargs)
    if len(self.path.read_text().splitlines()) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
batch.Manifest.add = add_then_die
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_a_killed_batch_reruns_without_recoding_its_finished_files(
    ray_cluster: None, library: Path, tmp_path: Path, tiny_model: CodecModel, tiny_model_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["encode", library, "-o", out, "--model", tiny_model_path, "-q", "3"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_3, *map(str, args), "--engine", "local", "-j", "1", "--quiet"],
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    first = records(out)
    assert len(first) == 3
    want = expected(library, tiny_model)
    written = outputs(out)
    assert sorted(written) == sorted(r["output"] for r in first[:2])  # the third was in flight
    assert all(written[name] == want[name] for name in written)  # nothing partial
    assert list(out.glob(".*.tmp*"))  # the killed write's temporary file, never renamed

    rerun = run(*args, "--engine", "ray", "--workers", "2")
    assert rerun.exit_code == 0, rerun.stderr
    assert "10 inputs: 8 coded, 2 done before, 0 failed" in rerun.stderr
    assert outputs(out) == want
    assert not list(out.glob(".*.tmp*"))
    coded = Counter(r["output"] for r in records(out) if r["status"] == "ok")
    assert [coded[r["output"]] for r in first] == [1, 1, 2]  # two kept, the one in flight redone
    assert sum(coded.values()) == 11

    again = run(*args, "--engine", "ray")
    assert "10 inputs: 0 coded, 10 done before, 0 failed" in again.stderr
    other = run(*args[:-1], "5")  # other options: the old outputs are not this run's
    assert other.exit_code == 1
    assert "10 outputs exist that the manifest does not vouch for" in other.stderr
    assert outputs(out) == want


@pytest.mark.slow
def test_a_corrupt_photo_fails_alone_and_is_retried_on_the_next_run(
    ray_cluster: None, library: Path, tmp_path: Path, tiny_model_path: Path
) -> None:
    (library / "2019" / "broken.png").write_bytes(b"not a photo")
    out = tmp_path / "out"
    args = ["encode", library, "-o", out, "--model", tiny_model_path, "-q", "3", "--quiet"]
    for engine, done_before in (("ray", 0), ("local", 10)):
        result = run(*args, "--engine", engine)
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith(f"ddncodec: error: {library / '2019' / 'broken.png'}: cannot read image")
        assert f"11 inputs: {10 - done_before} coded, {done_before} done before, 1 failed" in lines[1]
        assert len(lines) == 2
    assert len(outputs(out)) == 10
    assert not (out / "2019" / "broken.ddn").exists()
    failed = [r for r in records(out) if r["status"] == "failed"]
    assert [r["output"] for r in failed] == ["2019/broken.ddn"] * 2
    assert failed[0]["error"].endswith("cannot read image (UnidentifiedImageError: not a format Pillow can read)")


def test_a_list_keeps_each_entrys_place_and_a_folder_its_layout(
    library: Path, tmp_path: Path, tiny_model: CodecModel, tiny_model_path: Path
) -> None:
    listing = library / "picked.txt"
    listing.write_text(f"# picked\n2019\n\n100075.png\n{DATA / 'kodak' / 'kodim05_crop.png'}\nmissing.png\n")
    out = tmp_path / "out"
    result = run("encode", f"@{listing}", "-o", out, "--model", tiny_model_path, "-q", "3", "-j", "2", "--quiet")
    assert result.exit_code == 1  # the missing file, alone
    assert result.stderr.startswith(f"ddncodec: error: {library / 'missing.png'}: No such file or directory\n")
    assert sorted(outputs(out)) == ["100075.ddn", "2019/kodim05_crop.ddn", "2019/kodim23_crop.ddn", "kodim05_crop.ddn"]
    assert outputs(out)["kodim05_crop.ddn"] == codec.encode(DATA / "kodak" / "kodim05_crop.png", tiny_model, 3).data

    clash = run("encode", library / "2019", DATA / "kodak", "-o", tmp_path / "clash", "--model", tiny_model_path)
    assert clash.exit_code == 1
    assert "would both be written to" in clash.stderr
    assert not (tmp_path / "clash").exists()


def test_engine_ray_without_ray_installed_is_one_line(
    monkeypatch: pytest.MonkeyPatch, library: Path, tmp_path: Path, tiny_model_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = run("encode", library, "-o", tmp_path / "out", "--engine", "ray", "--model", tiny_model_path)
    assert result.exit_code == 1
    assert result.stderr == (
        "ddncodec: error: --engine ray needs Ray, which is not installed: pip install 'ddncodec[ray]'\n"
    )
    assert not (tmp_path / "out").exists()
