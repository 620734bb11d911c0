"""Training a model's filters on its own decoded output (``ddncodec.filtertrain``): the
post-filter on crops decoded at every rung, the detail filter on detail decodes (resumed
from its checkpoint), and ``ddncodec train-filter --detail``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ddncodec import codec, detail, tune
from ddncodec.cli import main
from ddncodec.codec import Rung
from ddncodec.filtertrain import attach, degrade, train
from ddncodec.modelfile import CodecModel, load
from ddncodec.options import FilterTrainOptions
from ddncodec.postfilter import FilterConfig
from ddncodec.tensors import from_uint8
from ddncodec.tune import load_images

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
BSDS = DATA / "bsds"
DETAIL_LADDER = (
    Rung(1, 1000.0),
    Rung(2, 1000.0),
    Rung(3, 0.0),
    *(Rung(2, 1000.0, step) for step in (100, 66, 37, 20, 8)),
)


def log_of(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "detailfilter.log.jsonl").read_text().splitlines()]


def test_the_post_filter_learns_on_the_tiny_models_decoded_crops(tiny_model: CodecModel, tmp_path: Path) -> None:
    ladder = [codec.Rung(2, 300.0), codec.Rung(3, 0.0)]
    options = FilterTrainOptions(
        model=DATA / "tiny.safetensors",
        data=[DATA / "bsds"],
        val=[DATA / "bsds"],
        work=tmp_path / "work",
        channels=16,
        blocks=1,
        pool_crops=32,
        pool_crop=64,
        batch=8,
        window=32,
        steps=150,
        lr=3e-3,
        val_images=4,
        val_every=150,
        checkpoint_every=150,
        rungs=ladder,
    )
    torch.manual_seed(0)
    net = train(options, tiny_model)
    assert net.config.cells == (16, 8, 4)
    log = [json.loads(line) for line in (options.work / "postfilter.log.jsonl").read_text().splitlines()]
    val = [e for e in log if e["event"] == "val"][-1]
    assert val["gain"] > 0.05, val  # dB over the unfiltered decode, mean over the two rungs
    crops = torch.rand(2, 3, 64, 64) - 0.5
    images, flags = degrade(tiny_model, crops, ladder)
    assert images.shape == (2, 2, 3, 64, 64) and flags.shape == (2, 2, 3, 16, 16)
    assert not flags[:, 1].sum() < flags[:, 0].sum()  # λ = 0 and more layers refine at least as many cells
    filtered = attach(tiny_model, net, options)
    with torch.no_grad():
        out = filtered.postfilter(from_uint8(images[:, 0]), flags[:, 0])
    assert out.shape == (2, 3, 64, 64)
    # A tuned model's card keeps each rung's validation bpp and PSNR: attaching a filter
    # measures them again through it (the rates stay, the PSNRs move).
    stale = [{"quality": q, "bpp": 1.0, "psnr": 1.0} for q in range(1, 9)]
    tuned = tiny_model.replace(
        ladder=tuple([codec.Rung(3, 300.0)] * 8), card={**tiny_model.card, "ladder_on_val": stale}
    )
    attached = attach(tuned, net, options)
    assert attached.network is not tuned.network  # rounded to float16 values on a copy
    expected = tune.measure(attached, load_images(options.val, 16, 256), codec.Rung(3, 300.0))
    points = attached.card["ladder_on_val"]
    assert points[0] == {"quality": 1, "bpp": round(expected.bpp, 4), "psnr": round(expected.psnr, 3)}


@pytest.mark.usefixtures("one_thread")
def test_the_detail_recipe_learns_on_detail_decodes_and_resumes(tiny_model: CodecModel, tmp_path: Path) -> None:
    """On the tiny model's detail decodes of the BSDS crops, the filter gains at the coarse
    steps and gains more the longer it trains; run again, it resumes from its checkpoint."""
    work = tmp_path / "work"
    options = FilterTrainOptions(
        DATA / "tiny.safetensors",
        [BSDS],
        [BSDS],
        work,
        channels=8,
        blocks=1,
        batch=8,
        window=64,
        steps=150,
        lr=3e-3,
        val_images=4,
        val_every=50,
        checkpoint_every=50,
        rungs=[Rung(3, 0.0, 20)],
        detail=True,
    )
    net = train(options, tiny_model)
    assert net.config == FilterConfig(8, 1, (detail.BLOCK,), step=True)
    vals = [e for e in log_of(work) if e["event"] == "val"]
    assert [e["step"] for e in vals] == [50, 100, 150]
    first, last = (np.subtract(e["after"], e["before"]) for e in (vals[0], vals[-1]))
    assert len(last) == 3  # validation steps 100, 37 and 8
    assert (last[:2] > 0.1).all() and (last[:2] > first[:2]).all(), (first, last)
    losses = [e["loss"] for e in log_of(work) if e["event"] == "step"]
    assert losses[-1] < losses[0]

    options.steps = 170
    resumed = train(options, tiny_model)
    events = [e["event"] for e in log_of(work)]
    assert events.count("pool") == 1  # the pool on disk is reused
    assert {"event": "resume", "step": 150} in log_of(work) and log_of(work)[-1]["step"] == 170
    assert not torch.equal(resumed.embed.weight, net.embed.weight)


@pytest.mark.usefixtures("one_thread")
def test_train_filter_detail_writes_a_model_whose_other_files_stay_valid(
    tiny_model: CodecModel, tmp_path: Path
) -> None:
    laddered = tmp_path / "laddered.safetensors"
    tiny_model.replace(ladder=DETAIL_LADDER).save(laddered)
    out, work = tmp_path / "out.safetensors", tmp_path / "work"
    args = ["train-filter", str(laddered), "--detail", "--data", str(BSDS), "--val", str(BSDS), "--work", str(work)]
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--channels", "8", "--blocks", "1", "--steps", "20"])
    assert result.exit_code == 0, result.output
    base, trained = load(laddered), load(out)
    assert trained.detailfilter is not None and trained.detailfilter.config == FilterConfig(8, 1, (8,), step=True)
    assert trained.core_fingerprint == base.fingerprint != trained.fingerprint  # files without the filter stay valid
    assert trained.card["detail_filter"]["steps"] == 20
    state = torch.load(work / "detailfilter.ckpt.pt", weights_only=True)
    assert state["step"] == 20 and set(state) == {"net", "optimizer", "rng", "step"}
    assert torch.equal(trained.detailfilter.embed.weight, state["net"]["embed.weight"].half().float())
    refused = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x.safetensors"), "--distill"])
    assert refused.exit_code == 1 and "does not go with --detail" in refused.output  # a usage error
