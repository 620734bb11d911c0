"""Sampling (``generate``) and the generation commands (sample, guide, tree) on the tiny
test model; guided generation itself: test_guided.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps

from ddncodec import generate
from ddncodec.cli import main
from ddncodec.errors import OptionError
from ddncodec.model import Chooser, nearest
from ddncodec.modelfile import CodecModel

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stderr


# ---------------------------------------------------------------- samplers


def neighbour_agreement(model: CodecModel, choose) -> list[float]:
    """Per layer, the share of horizontally adjacent cells that took the same symbol."""
    with torch.no_grad():
        maps = [idx for idx, _ in model.network.walk((1, 128, 128), choose)]
    return [float((m[..., 1:] == m[..., :-1]).float().mean()) for m in maps]


def test_context_sampling_draws_coherent_maps_and_is_reproducible(tiny_model):
    def context(seed: int, temperature: float = 1.0):
        return generate.context_chooser(tiny_model, torch.Generator().manual_seed(seed), temperature)

    independent = neighbour_agreement(tiny_model, generate.random_chooser(tiny_model, "learned", torch.Generator()))
    coherent = neighbour_agreement(tiny_model, context(0))
    colder = neighbour_agreement(tiny_model, context(0, 0.5))
    # Measured, fine layers (8 px, 4 px): independent 0.49 / 0.25, context 0.67 / 0.39, T = 0.5: 0.99 / 0.94.
    assert coherent[1] > independent[1] + 0.1 and coherent[2] > independent[2] + 0.1
    assert colder[1] > coherent[1] + 0.1 and colder[2] > coherent[2] + 0.1
    a, b, c = (np.asarray(next(generate.sample(tiny_model, 1, 64, 48, seed=s))) for s in (3, 3, 4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(OptionError, match="temperature"):
        next(generate.sample(tiny_model, 1, 64, 48, temperature=0))


def first_map(model: CodecModel, choose: Chooser, height: int, width: int) -> torch.Tensor:
    """The index map ``choose`` picks for the first layer of a walk."""
    with torch.no_grad():
        idx, _ = next(model.network.walk((1, height, width), choose, 1))
    return idx


def test_learned_prior_draws_symbols_at_the_models_frequencies(tiny_model):
    learned = generate.random_chooser(tiny_model, "learned", torch.Generator().manual_seed(0))
    drawn = first_map(tiny_model, learned, 1024, 1024)  # 4096 cells of 16 px
    k = tiny_model.config.layers[0].k
    counts = torch.bincount(drawn.flatten(), minlength=k).double()
    expected = torch.from_numpy(tiny_model.priors.probabilities(0)) * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3  # the 0.999 quantile of chi-square with K - 1 = 7 degrees of freedom
    uniform = generate.random_chooser(tiny_model, "uniform", torch.Generator().manual_seed(0))
    drawn = first_map(tiny_model, uniform, 1024, 1024)
    assert torch.bincount(drawn.flatten(), minlength=k).min() > 4096 / k * 0.8


# ---------------------------------------------------------------- the command line: sample, guide, tree


def test_sample_writes_n_images_of_the_asked_size_reproducibly(tiny_model, tiny_model_path, tmp_path):
    args = ["sample", "-n", "2", "--size", "40x24", "--model", str(tiny_model_path)]
    assert run_cli(*args, "-o", str(tmp_path / "a"))[0] == 0
    assert run_cli(*args, "-o", str(tmp_path / "b"), "--seed", "0", "--prior", "uniform")[0] == 0
    assert run_cli(*args[:2], "1", *args[3:], "-o", str(tmp_path / "c"), "--seed", "7")[0] == 0
    a = [np.asarray(Image.open(tmp_path / "a" / f"sample_{i:04d}.png")) for i in range(2)]
    assert [im.shape for im in a] == [(24, 40, 3)] * 2
    assert not np.array_equal(a[0], a[1])
    assert np.array_equal(a[0], np.asarray(next(generate.sample(tiny_model, 1, 40, 24))))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["sample_0000.png", "sample_0001.png"]
    assert not np.array_equal(a[0], np.asarray(Image.open(tmp_path / "b" / "sample_0000.png")))
    assert not np.array_equal(a[0], np.asarray(Image.open(tmp_path / "c" / "sample_0000.png")))


@pytest.mark.parametrize(
    ("task", "extra", "size"),
    [
        ("superres", [], (200, 120)),
        ("superres", ["--scale", "3"], (150, 90)),
        ("colorize", [], (50, 30)),
        ("inpaint", ["--mask", "MASK"], (50, 30)),
    ],
)
def test_guide_writes_an_image_of_the_right_size(tiny_model_path, kodak_crop, tmp_path, task, extra, size):
    condition = tmp_path / "cond.png"
    Image.open(kodak_crop).convert("RGB").reduce(4).crop((0, 0, 50, 30)).save(
        condition
    )  # not a multiple of the unit (16) nor of 3
    mask = Image.new("L", (50, 30), 0)
    mask.paste(255, (16, 8, 40, 24))
    mask.save(tmp_path / "mask.png")
    extra = [str(tmp_path / "mask.png") if a == "MASK" else a for a in extra]
    out = tmp_path / "out.png"
    code, _ = run_cli(
        "guide", "--task", task, "--condition", str(condition), *extra, "-o", str(out), "--model", str(tiny_model_path)
    )
    assert code == 0
    assert Image.open(out).size == size


def test_tree_draws_each_levels_chosen_node_amid_its_children(tiny_model, tiny_model_path, kodak_crop, tmp_path):
    out = tmp_path / "tree.png"
    assert run_cli("tree", str(kodak_crop), "-o", str(out), "--model", str(tiny_model_path))[0] == 0
    figure = Image.open(out).convert("RGB")
    # K = 8: a 3x3 ring of 48x36 children per level plus a 16 px caption; 3 panels, 8 px apart.
    assert figure.size == (3 * 144 + 2 * 8, 36 * 3 + 16)
    target = generate.from_image(Image.open(kodak_crop))
    with torch.no_grad():
        steps = list(tiny_model.network.walk((1, 192, 256), nearest(target)))
    for level, (_, image) in enumerate(steps):
        centre = ImageOps.contain(generate.to_image(image), (48, 36), Image.BOX)
        left, top = level * 152 + 48, 16 + 36
        drawn = figure.crop((left, top, left + centre.width, top + centre.height))
        assert np.array_equal(np.asarray(drawn), np.asarray(centre))


def test_generated_outputs_are_kept_unless_forced(tiny_model_path, kodak_crop, tmp_path):
    """Like encode and decode: an existing output is refused (exit 1, untouched), --force overwrites it."""
    (tmp_path / "s").mkdir()
    commands = {
        tmp_path / "g.png": [
            "guide",
            "--task",
            "colorize",
            "--condition",
            str(kodak_crop),
            "-o",
            str(tmp_path / "g.png"),
        ],
        tmp_path / "t.png": ["tree", str(kodak_crop), "--levels", "1", "-o", str(tmp_path / "t.png")],
        tmp_path / "s" / "sample_0001.png": ["sample", "-n", "2", "--size", "32x32", "-o", str(tmp_path / "s")],
    }
    for existing, args in commands.items():
        existing.write_bytes(b"keep me")
        code, err = run_cli(*args, "--model", str(tiny_model_path))
        assert (code, err.strip()) == (1, f"ddncodec: error: {existing}: already exists (use --force to overwrite)")
        assert existing.read_bytes() == b"keep me"
        assert not (tmp_path / "s" / "sample_0000.png").exists()  # refused before writing anything
        assert run_cli(*args, "--model", str(tiny_model_path), "--force")[0] == 0
        assert Image.open(existing).size[0] > 0


def test_bad_inputs_and_options_fail_with_one_line_and_their_exit_code(tiny_model_path, kodak_crop, tmp_path):
    model = ["--model", str(tiny_model_path)]
    condition = tmp_path / "cond.png"
    condition.write_bytes(kodak_crop.read_bytes())  # 256x192
    Image.new("L", (256, 192)).save(tmp_path / "mask.png")
    Image.new("L", (128, 96)).save(tmp_path / "small_mask.png")
    out = tmp_path / "out.png"
    cases = [
        ["guide", "--task", "colorize", "--condition", str(tmp_path / "missing.png"), "-o", str(out)],
        [
            "guide",
            "--task",
            "inpaint",
            "--condition",
            str(condition),
            "--mask",
            str(tmp_path / "small_mask.png"),
            "-o",
            str(out),
        ],
        ["guide", "--task", "inpaint", "--condition", str(condition), "-o", str(out)],
        [
            "guide",
            "--task",
            "colorize",
            "--condition",
            str(condition),
            "--mask",
            str(tmp_path / "mask.png"),
            "-o",
            str(out),
        ],
        ["guide", "--task", "colorize", "--condition", str(condition), "-o", str(condition)],
        ["guide", "--task", "colorize", "--condition", str(condition), "-o", str(tmp_path / "out.xyz")],
        ["sample", "--size", "64", "-o", str(tmp_path / "s")],
        ["sample", "--size", "0x64", "-o", str(tmp_path / "s")],
        ["sample", "--size", "99999x64", "-o", str(tmp_path / "s")],
        ["tree", str(tmp_path / "missing.png"), "-o", str(out)],
        ["tree", str(condition), "-o", str(condition)],
        ["tree", str(condition), "-o", str(tmp_path / "out.xyz")],
        ["tree", str(condition), "-o", str(tmp_path / "out.xbm")],  # a format Pillow reads but cannot write RGB in
    ]
    bad_input = {1}  # the mask of the wrong size; the rest are missing files or option and usage errors
    for i, args in enumerate(cases):
        code, err = run_cli(*args, *model)
        expected = 2 if i in bad_input else 1
        assert (code, err.count("\n"), err.startswith("ddncodec: error: ")) == (expected, 1, True), (args, err)
        if args[-1] == str(condition):
            assert "refusing to overwrite an input" in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cond.png", "mask.png", "small_mask.png"]
