"""``ddncodec encode / decode / info``: outputs, stdin/stdout, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from ddncodec import codec, container
from ddncodec.cli import main
from ddncodec.modelfile import CodecModel

KODAK = Path(__file__).parent / "data" / "kodak"


def run(*args: str | Path, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def one_error_line(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ddncodec: error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture()
def model_arg(tiny_model_path: Path) -> str:
    return str(tiny_model_path)


def test_encode_decode_info(model_arg: str, kodak_crop: Path, tmp_path: Path, tiny_model: CodecModel) -> None:
    ddn = tmp_path / "k.ddn"
    result = run("encode", kodak_crop, "-o", ddn, "-q", "8", "--model", model_arg)
    assert result.exit_code == 0, result.stderr
    size = ddn.stat().st_size
    summary = result.stderr.strip()
    assert summary.startswith(f"{kodak_crop} 256x192 -> {ddn}: {size:,} B, {8 * size / (256 * 192):.4f} bpp, ")
    expected = codec.encode(kodak_crop, tiny_model, 8)
    assert f"{expected.psnr:.2f} dB" in summary
    assert ddn.read_bytes() == expected.data

    png = tmp_path / "k.png"
    assert run("decode", ddn, "-o", png, "--model", model_arg).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(png)), expected.pixels)
    coarse = tmp_path / "coarse.png"
    assert run("decode", ddn, "-o", coarse, "--layers", "1", "--model", model_arg, "--quiet").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(coarse)), codec.encode(kodak_crop, tiny_model, layers=1).pixels)

    info = run("info", ddn, "--json")
    assert info.exit_code == 0
    facts = json.loads(info.stdout)
    assert facts["bytes"] == size
    assert facts["format_version"] == ddn.read_bytes()[3] == container.COLOUR_VERSION  # layers and a colour correction
    assert (facts["width"], facts["height"], facts["mode"], facts["layers"]) == (256, 192, "RGB", 3)
    assert facts["model"] == tiny_model.fingerprint[:4].hex()
    assert facts["header_bytes"] + sum(facts["layer_bytes"]) + 4 * 3 == size  # a CRC-32 after every layer
    assert facts["layers_present"] == 3
    assert facts["complete"] is True
    assert facts["table_set"] == codec.table_set(tiny_model, codec.ladder(tiny_model)[7]) == 0
    assert facts["checksums"] == "verified for the 3 layers present, of 3"
    assert "checksum" not in facts
    text = run("info", ddn).stdout
    assert f"{size:,} bytes, format version 10, 256x192 RGB" in text
    assert "complete: 3 layers, every stream's checksum verified" in text
    assert " ".join(map(str, facts["layer_bytes"])) in text

    prefix = tmp_path / "prefix.ddn"
    prefix.write_bytes(ddn.read_bytes()[: facts["header_bytes"] + facts["layer_bytes"][0] + 4])
    cut = json.loads(run("info", prefix, "--json").stdout)
    assert (cut["layers"], cut["layers_present"], cut["complete"]) == (3, 1, False)
    assert cut["checksums"] == "verified for the 1 layers present, of 3"
    assert cut["header_bytes"] == facts["header_bytes"]
    assert cut["layer_bytes"] == facts["layer_bytes"][:1]
    assert "a prefix: 1 of 3 layers" in run("info", prefix).stdout
    flipped = bytearray(prefix.read_bytes())
    flipped[facts["header_bytes"]] ^= 1
    prefix.write_bytes(bytes(flipped))
    assert "checksum mismatch in layer 0" in one_error_line(run("info", prefix), 2)


def test_batch_to_a_folder_with_progress_and_one_line_per_file(model_arg: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    inputs = sorted(KODAK.glob("*.png"))
    result = run("encode", *inputs, "-o", out, "--layers", "2", "--model", model_arg)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [p.stem + ".ddn" for p in inputs]
    assert sum(" -> " in line for line in result.stderr.splitlines()) == 2
    decoded = tmp_path / "decoded"
    result = run("decode", *sorted(out.iterdir()), "-o", decoded, "--model", model_arg, "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert sorted(p.name for p in decoded.iterdir()) == [p.stem + ".png" for p in inputs]


def test_one_input_into_an_existing_folder(model_arg: str, kodak_crop: Path, tmp_path: Path) -> None:
    assert run("encode", kodak_crop, "-o", tmp_path, "--layers", "1", "--model", model_arg).exit_code == 0
    assert (tmp_path / "kodim23_crop.ddn").read_bytes().startswith(b"DDN")


def test_stdin_and_stdout(model_arg: str, kodak_crop: Path, tiny_model: CodecModel) -> None:
    encoded = run("encode", "-", "-o", "-", "--layers", "1", "--model", model_arg, stdin=kodak_crop.read_bytes())
    assert encoded.exit_code == 0
    assert encoded.stdout_bytes == codec.encode(kodak_crop, tiny_model, layers=1).data
    decoded = run("decode", "-", "-o", "-", "--model", model_arg, stdin=encoded.stdout_bytes)
    assert decoded.exit_code == 0
    assert decoded.stdout_bytes.startswith(b"\x89PNG")


def test_existing_output_needs_force_and_the_input_is_never_overwritten(
    model_arg: str, kodak_crop: Path, tmp_path: Path
) -> None:
    ddn = tmp_path / "k.ddn"
    ddn.write_bytes(b"old")
    assert "already exists" in one_error_line(run("encode", kodak_crop, "-o", ddn, "--model", model_arg), 1)
    assert ddn.read_bytes() == b"old"
    assert run("encode", kodak_crop, "-o", ddn, "--layers", "1", "--model", model_arg, "-f").exit_code == 0
    assert ddn.read_bytes().startswith(b"DDN")
    png = tmp_path / "in.png"
    png.write_bytes(kodak_crop.read_bytes())
    line = one_error_line(run("encode", png, "-o", png, "--force", "--model", model_arg), 1)
    assert "refusing to overwrite the input" in line
    assert png.read_bytes() == kodak_crop.read_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-5] + bytes([d[-5] ^ 4]) + d[-4:], "checksum mismatch"),
        (lambda d: b"XYZ" + d[3:], "not a .ddn file"),
        (lambda d: d[:3] + b"\x0c" + d[3 + 1 :], "version 12"),
        (lambda _d: (KODAK / "kodim05_crop.png").read_bytes(), "not a .ddn file"),
    ],
)
def test_bad_files_exit_2_with_one_line_and_no_output(
    model_arg: str, kodak_crop: Path, tmp_path: Path, tiny_model: CodecModel, mutate, message: str
) -> None:
    bad = tmp_path / "bad.ddn"
    bad.write_bytes(mutate(codec.encode(kodak_crop, tiny_model, layers=3).data))
    out = tmp_path / "out.png"
    assert message in one_error_line(run("decode", bad, "-o", out, "--model", model_arg), 2)
    assert list(tmp_path.iterdir()) == [bad]
    assert message in one_error_line(run("info", bad), 2)


def test_another_models_file_and_a_huge_header_exit_2(
    model_arg: str, kodak_crop: Path, tmp_path: Path, tiny_model: CodecModel
) -> None:
    data = codec.encode(kodak_crop, tiny_model, layers=1).data
    parsed = container.unpack(data)
    other = container.Header(b"\0\0\0\0", 256, 192, "RGB", 0, parsed.header.lengths)
    huge = container.Header(parsed.header.fingerprint, 10**6, 10**6, "RGB", 0, parsed.header.lengths)
    for header, message in [(other, "made with another model"), (huge, "over the limit")]:
        bad = tmp_path / "bad.ddn"
        bad.write_bytes(container.pack(header, parsed.streams))
        assert message in one_error_line(run("decode", bad, "-o", tmp_path / "o.png", "--model", model_arg), 2)
        assert not (tmp_path / "o.png").exists()


def test_an_unreadable_image_exits_2_and_a_missing_file_exits_1(model_arg: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    out = tmp_path / "o.ddn"
    line = one_error_line(run("encode", text, "-o", out, "--model", model_arg), 2)
    assert f"{text}: cannot read image" in line
    for command, missing, target in (("encode", "missing.png", "o.ddn"), ("decode", "missing.ddn", "o.png")):
        line = one_error_line(run(command, tmp_path / missing, "-o", tmp_path / target, "--model", model_arg), 1)
        assert line == f"ddncodec: error: {tmp_path / missing}: No such file or directory"
        assert not (tmp_path / target).exists()


def test_a_bad_file_in_a_batch_is_reported_and_the_rest_are_done(model_arg: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    out = tmp_path / "out"
    result = run(
        "encode", KODAK / "kodim05_crop.png", junk, "-o", out, "--layers", "1", "--model", model_arg, "--quiet"
    )
    assert result.exit_code == 2
    assert [p.name for p in out.iterdir()] == ["kodim05_crop.ddn"]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "junk.png" in errors[0]


@pytest.mark.parametrize(
    "args",
    [
        ["encode", "IMG", "-o", "x.ddn", "-q", "3", "--bpp", "0.1"],
        ["encode", "IMG", "-o", "x.ddn", "-q", "9"],
        ["encode", "IMG", "-o", "x.ddn", "--effort", "3"],
        ["encode", "IMG", "IMG", "-o", "-"],
        ["decode", "x.ddn", "-o", "x.unknown"],
        ["decode", "x.ddn", "-o", "x.xbm"],  # Pillow reads XBM but writes it for mode 1 only
        ["decode", "x.ddn", "-o", "x.psd"],  # Pillow has no PSD writer
        ["encode", "IMG"],
        ["encode", "IMG", "-o", "x.jpg"],  # the suffix must fit the command
        ["encode", "IMG", "-o", "noext"],
        ["decode", "x.ddn", "-o", "y.ddn"],  # would silently re-encode
        ["encode", "IMG", "IMG", "-o", "single.ddn"],  # several inputs need a folder
        ["encode", "IMG", "-o", "nonexistent/sub/x.ddn"],  # a missing parent is not created
        ["encode", "IMG", "IMG", "-o", "nonexistent/sub/"],
        ["sample", "--size", "256", "-o", "samples"],
        ["guide", "--task", "colorize", "--condition", "IMG", "-o", "out.xyz"],
    ],
)
def test_usage_errors_exit_1(
    args: list[str], kodak_crop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.ddn").write_bytes(b"")
    one_error_line(run(*[str(kodak_crop) if a == "IMG" else a for a in args]), 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ddn"]  # nothing made, no folders either


def test_effort_2_writes_the_api_s_file(
    model_arg: str, kodak_crop: Path, tmp_path: Path, tiny_model: CodecModel
) -> None:
    ddn = tmp_path / "k.ddn"
    assert run("encode", kodak_crop, "-o", ddn, "-q", "8", "-e", "2", "--model", model_arg).exit_code == 0
    expected = codec.encode(kodak_crop, tiny_model, 8, effort=2)
    assert ddn.read_bytes() == expected.data != codec.encode(kodak_crop, tiny_model, 8).data


def test_a_trailing_slash_means_a_folder_for_one_input_too(model_arg: str, kodak_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    assert run("encode", kodak_crop, "-o", f"{out}/", "--layers", "1", "--model", model_arg).exit_code == 0
    ddn = out / f"{kodak_crop.stem}.ddn"
    assert ddn.is_file()
    back = tmp_path / "back"
    assert run("decode", ddn, "-o", f"{back}/", "--model", model_arg).exit_code == 0
    assert Image.open(back / f"{kodak_crop.stem}.png").size == (256, 192)
    batch = tmp_path / "batch"  # several inputs and a new name without a suffix: a new folder
    result = run("encode", kodak_crop, KODAK / "kodim05_crop.png", "-o", batch, "--layers", "1", "--model", model_arg)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in batch.iterdir()) == ["kodim05_crop.ddn", "kodim23_crop.ddn"]


def test_option_values_out_of_range_for_the_file_exit_1(model_arg: str, kodak_crop: Path, tmp_path: Path) -> None:
    ddn = tmp_path / "k.ddn"
    assert run("encode", kodak_crop, "-o", ddn, "--layers", "2", "--model", model_arg).exit_code == 0
    line = one_error_line(run("decode", ddn, "-o", tmp_path / "k.png", "--layers", "20", "--model", model_arg), 1)
    assert "layers must be 1..2 for this file, got 20" in line


def test_stdout_refuses_a_terminal(kodak_crop: Path, tmp_path: Path) -> None:
    import pty

    parent, child = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ddncodec", "encode", kodak_crop, "-o", "-"],
            stdout=child,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(child)
        os.close(parent)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "ddncodec: error: -o -: refusing to write binary data to a terminal (redirect stdout to a file or a pipe)"
    )


def test_messages_name_stdin_and_the_file(model_arg: str, tmp_path: Path) -> None:
    line = one_error_line(run("encode", "-", "-o", tmp_path / "x.ddn", "--model", model_arg, stdin=b"garbage"), 2)
    assert line.startswith("ddncodec: error: stdin: cannot read image (UnidentifiedImageError")
    bad = tmp_path / "bad.ddn"
    bad.write_bytes(b"DDN" + bytes(40))
    assert one_error_line(run("info", bad), 2).startswith(f"ddncodec: error: {bad}: ")


def test_an_unreachable_bpp_and_a_multi_frame_input_are_reported(
    model_arg: str, kodak_crop: Path, tmp_path: Path
) -> None:
    result = run("encode", kodak_crop, "-o", tmp_path / "x.ddn", "--bpp", "8", "--model", model_arg)
    assert result.exit_code == 0, result.stderr
    got = 8 * (tmp_path / "x.ddn").stat().st_size / (256 * 192)
    assert f"{kodak_crop}: --bpp 8 is out of reach for this image; the closest is {got:.4f} bpp" in result.stderr
    frames = [Image.open(kodak_crop).convert("RGB").rotate(angle) for angle in (0, 90, 180)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    result = run("encode", gif, "-o", tmp_path / "anim.ddn", "--layers", "1", "--model", model_arg)
    assert result.exit_code == 0, result.stderr
    assert f"{gif}: coded frame 1 of 3 (a .ddn file holds one still image)" in result.stderr


@pytest.mark.parametrize("launcher", [["-m", "ddncodec"], [str(Path(__file__).parent.parent / "bin" / "ddncodec")]])
def test_the_command_runs_as_a_module_and_from_bin(launcher: list[str], kodak_crop: Path, tmp_path: Path) -> None:
    """The real process: exit code and a single stderr line, no traceback (bin/ from any folder)."""
    done = subprocess.run(
        [sys.executable, *launcher, "info", str(kodak_crop)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "not a .ddn file" in done.stderr


BIN = str(Path(__file__).parent.parent / "bin" / "ddncodec")
SETUP = 'pip install torch==2.13.0 && pip install -e ".[test,bench,ray]"'
WITHOUT_TORCH = f"import runpy, sys; sys.modules['torch'] = None; sys.argv[:] = sys.argv[1:]; runpy.run_path({BIN!r})"


@pytest.mark.parametrize(
    ("launch", "missing"),
    [
        (["-S", BIN, "--help"], "PIL"),  # no site-packages at all, as a bare system python3
        (["-c", WITHOUT_TORCH, BIN, "encode", "IMG", "-o", "x.ddn"], "torch"),  # a package the command imports
    ],
)
def test_bin_names_a_missing_package_and_the_set_up_in_one_line(
    launch: list[str], missing: str, kodak_crop: Path, tmp_path: Path
) -> None:
    args = [str(kodak_crop) if a == "IMG" else a for a in launch]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"ddncodec: error: {sys.executable} has no package {missing!r}; set up with: {SETUP}\n"
    assert list(tmp_path.iterdir()) == []


def test_help_states_the_default_quality() -> None:
    assert f"default {codec.DEFAULT_QUALITY}." in run("encode", "--help").stdout


def test_jobs_code_a_batch_in_parallel_with_the_same_bytes_in_input_order(
    tmp_path: Path, kodak_crop: Path, tiny_model_path: Path
) -> None:
    photos = []
    for i, box in enumerate([(0, 0, 96, 64), (32, 16, 160, 112), (64, 64, 256, 192), (8, 8, 72, 40)]):
        path = tmp_path / f"p{i}.png"
        Image.open(kodak_crop).crop(box).save(path)
        photos.append(path)
    broken = tmp_path / "p9.png"
    broken.write_bytes(b"not an image")
    outputs = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        result = run(
            "encode",
            *photos[:2],
            broken,
            *photos[2:],
            "-o",
            out,
            "--jobs",
            str(jobs),
            "-q",
            "3",
            "--model",
            tiny_model_path,
        )
        assert result.exit_code == 2  # the broken file; the others are all written
        lines = result.stderr.strip().splitlines()
        named = [line.split()[0] for line in lines if not line.startswith("ddncodec:")]
        assert named == [str(p) for p in photos]  # summaries in input order
        assert any(str(broken) in line for line in lines)
        outputs[jobs] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert len(outputs[1]) == 4
    assert outputs[1] == outputs[2]
