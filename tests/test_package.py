"""The package as a user installs it: a wheel in a fresh virtual environment, run from a
folder that has no source tree, with the default model that ships inside the wheel."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

ROOT = Path(__file__).resolve().parents[1]
CROP = ROOT / "tests" / "data" / "kodak" / "kodim23_crop.png"

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A venv holding only the built wheel; torch and the other dependencies come from this
    interpreter's site-packages through a .pth line (which, unlike a site dir, runs none
    of the .pth files there: the editable install of the checkout stays out)."""
    work = tmp_path_factory.mktemp("wheel")
    build = _run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(work)],
        work,
        dict(os.environ),
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = work.glob("ddncodec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ddncodec/models/default.safetensors" in names
    assert "ddncodec/models/v9.safetensors" in names  # with the default, whose tensors it shares: v9's files decode
    assert "ddncodec/models/v10.safetensors" in names  # the same for version 10's files
    assert "ddncodec/models/v11.safetensors" in names  # and for version 11's
    assert "ddncodec/models/v12.safetensors" in names  # and 12's
    assert "ddncodec/bench/published/kodak/bmshj2018-factorized.json" in names
    assert "ddncodec/level_priors.npz" in names  # the detail levels' first counts: format version 8
    assert "ddncodec/level_priors_11.npz" in names  # and version 11

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        work,
        dict(os.environ),
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "DDNCODEC_MODELS"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return venv, env


def test_wheel_encodes_decodes_and_reports_with_the_shipped_model(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    ddncodec = str(venv / "bin" / "ddncodec")
    shutil.copy(CROP, tmp_path / "photo.png")
    where = _run([str(venv / "bin" / "python"), "-c", "import ddncodec; print(ddncodec.__file__)"], tmp_path, env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout

    # q5, the default: a detail layer, so the levels' coder and its packaged first counts run
    encoded = _run([ddncodec, "encode", "photo.png", "-o", "photo.ddn", "-q", "5"], tmp_path, env)
    assert encoded.returncode == 0, encoded.stderr
    assert (tmp_path / "photo.ddn").read_bytes()[3] == 11  # format version 11: its own packaged first counts
    decoded = _run([ddncodec, "decode", "photo.ddn", "-o", "back.png"], tmp_path, env)
    assert decoded.returncode == 0, decoded.stderr
    info = _run([ddncodec, "info", "photo.ddn"], tmp_path, env)
    assert info.returncode == 0, info.stderr
    assert "256x192" in info.stdout

    original = np.asarray(Image.open(CROP).convert("RGB"))
    back = np.asarray(Image.open(tmp_path / "back.png").convert("RGB"))
    psnr = peak_signal_noise_ratio(original, back, data_range=255)
    assert psnr > 28, psnr


def test_wheel_benches_with_the_packaged_stand_in(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    shutil.copytree(CROP.parent, tmp_path / "photos")
    result = _run(
        [str(venv / "bin" / "ddncodec"), "bench", "photos", "--out", "report", "--quick", "--codecs", "jpeg,standin"],
        tmp_path,
        env,
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "stand-in" in report
