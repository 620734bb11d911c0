"""``ddncodec train``: bit-for-bit resume, kill and SIGTERM safety, bad input, two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ddncodec import checkpoint
from ddncodec.cli import main
from ddncodec.ladder import fallback
from ddncodec.model import DDN, DDNConfig
from ddncodec.modelfile import fingerprint, load, weights_of

BSDS = Path(__file__).parent / "data" / "bsds"
TINY = ["--config", "tiny", "--crop", "64", "--batch", "4", "--quiet"]
# One thread everywhere, so that runs in this process and in subprocesses do the same arithmetic.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def train(out: Path, *args: str, data: Path = BSDS):
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(out), *TINY, *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def spawn(out: Path, *args: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    command = [sys.executable, *launcher, "-m", "ddncodec", "train", "--data", str(BSDS), "--out", str(out), *TINY]
    return subprocess.Popen(
        [*command, *args], env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def log_of(out: Path) -> list[dict]:
    """The complete records of the training log (a running trainer may be writing the last one)."""
    path = out.with_name(out.name + ".log.jsonl")
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]] if path.exists() else []


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(r.get("event") == "checkpoint" and r["step"] >= step for r in log_of(out)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def state(out: Path) -> dict:
    return torch.load(out.with_name(out.name + ".ckpt.pt"), weights_only=True)


def assert_same_training_state(a: Path, b: Path) -> None:
    """Weights, Split-and-Prune counters, Adam moments and RNG states: all bit-identical."""
    sa, sb = state(a), state(b)
    assert sa["step"] == sb["step"]
    assert sa["model"].keys() == sb["model"].keys()
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), name
    assert sa["splits"] == sb["splits"]
    assert all(torch.equal(x, y) for x, y in zip(sa["rng"][0].values(), sb["rng"][0].values(), strict=True))
    adam_a = torch.load(a.with_name(a.name + ".adam.pt"), weights_only=True)
    adam_b = torch.load(b.with_name(b.name + ".adam.pt"), weights_only=True)
    assert adam_a["step"] == adam_b["step"] == sa["step"]
    for key, moments in adam_a["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, adam_b["optimizer"]["state"][key][name]), (key, name)


def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert train(straight, "--steps", "60").exit_code == 0
    assert train(halves, "--steps", "30").exit_code == 0
    assert state(halves)["step"] == 30
    assert train(halves, "--steps", "60", "--resume").exit_code == 0

    assert_same_training_state(straight, halves)
    counters = state(straight)["model"]
    assert sum(state(straight)["splits"]) > 0  # Split-and-Prune ran, so the counters carry real history
    assert counters["layers.0.ddl.hits"].dtype == torch.float64
    # One count per 16 px cell and step, kept through every split and the resume:
    assert float(counters["layers.0.ddl.hits"].sum()) == pytest.approx(60 * 4 * (64 // 16) ** 2, rel=1e-12)

    records = log_of(halves)
    events = [r.get("event") for r in records]
    assert events[0] == "start" and "resume" in events and events[-1] == "stop"
    resumed = records[events.index("resume")]
    assert (resumed["step"], resumed["options"]["steps"]) == (30, "60")  # each phase's options are in the log
    assert events.count("checkpoint") == 2
    model = load(tmp_path / "halves.safetensors")
    assert model.card["steps"] == 60
    assert model.fingerprint == load(tmp_path / "straight.safetensors").fingerprint


@pytest.mark.parametrize(
    ("setup", "args", "culprit"),
    [
        ("empty", [], "data"),
        ("corrupt", [], "data/broken.png"),
        ("truncated", [], "data/cut.png"),
        ("small", [], "data/small.png"),
        ("no-checkpoint", ["--resume"], "m.ckpt.pt"),
        ("bad-checkpoint", ["--resume"], "m.ckpt.pt"),
        ("foreign-checkpoint", ["--resume"], "m.ckpt.pt"),
        ("old-checkpoint", [], "m.ckpt.pt"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, setup: str, args: list[str], culprit: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for p in sorted(BSDS.glob("*.png"))[:2]:
        (data / p.name).write_bytes(p.read_bytes())
    if setup == "empty":
        for p in data.iterdir():
            p.unlink()
    elif setup == "corrupt":
        (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    elif setup == "truncated":
        (data / "cut.png").write_bytes((BSDS / "12074.png").read_bytes()[:3000])
    elif setup == "small":
        Image.open(BSDS / "12074.png").crop((0, 0, 80, 40)).save(data / "small.png")  # under the 64 px crop
    elif setup in ("bad-checkpoint", "old-checkpoint"):
        (tmp_path / "m.ckpt.pt").write_bytes(b"not a checkpoint")
    elif setup == "foreign-checkpoint":
        torch.save({"weights": torch.zeros(3)}, tmp_path / "m.ckpt.pt")
    out = tmp_path / "m"
    result = train(out, "--steps", "2", *args, data=data)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddncodec: error: "), result.stderr
    assert str(tmp_path / culprit) in lines[0]
    assert not (tmp_path / "m.safetensors").exists()


def test_kill_between_the_two_checkpoint_files_still_resumes_exactly(tmp_path: Path) -> None:
    """Killed after the new Adam moments were written but before the state that pairs with
    them: the moments of the checkpointed step, kept aside, are the ones resumed."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    assert train(killed, "--steps", "3").exit_code == 0
    adam = tmp_path / "killed.adam.pt"
    os.replace(adam, tmp_path / "killed.adam.prev.pt")
    newer = torch.load(tmp_path / "killed.adam.prev.pt", weights_only=True)
    newer["step"] = 4
    newer["optimizer"]["state"][0]["exp_avg"] += 1.0
    torch.save(newer, adam)

    assert train(killed, "--steps", "5", "--resume").exit_code == 0
    assert train(straight, "--steps", "5").exit_code == 0
    assert_same_training_state(killed, straight)
    assert not (tmp_path / "killed.adam.prev.pt").exists()


def test_sigkill_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    """The killed run checkpointed after every step, the straight one never: same result."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = spawn(killed, "--steps", "1000", "--checkpoint-minutes", "0")
    wait_for_checkpoint(killed, proc, step=3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    last = state(killed)["step"]
    assert 3 <= last < 1000

    assert train(killed, "--steps", str(last + 4), "--resume").exit_code == 0
    assert train(straight, "--steps", str(last + 4)).exit_code == 0
    assert_same_training_state(killed, straight)


def test_sigterm_stops_after_the_step_and_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "m"
    proc = spawn(out, "--steps", "1000", "--checkpoint-minutes", "0")
    wait_for_checkpoint(out, proc, step=2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    records = log_of(out)
    stopped = [r for r in records if r.get("event") == "stopped"]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM"
    assert records[-1]["event"] == "stop"
    final = state(out)["step"]
    assert final == stopped[0]["step"] == records[-1]["step"] < 1000
    assert load(tmp_path / "m.safetensors").card["steps"] == final


def test_split_and_prune_stops_at_split_until(tmp_path: Path) -> None:
    assert train(tmp_path / "m", "--steps", "60", "--split-until", "20").exit_code == 0
    counts = [r["splits"] for r in log_of(tmp_path / "m") if "splits" in r]
    assert sum(counts[-1]) > 0  # it ran before step 20 ...
    ran = state(tmp_path / "m")["splits"]
    assert train(tmp_path / "m", "--steps", "90", "--resume", "--split-until", "20").exit_code == 0
    assert state(tmp_path / "m")["splits"] == ran  # ... and never after it, resumed or not


def test_two_processes_keep_identical_replicas(tmp_path: Path) -> None:
    out = tmp_path / "m"
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    proc = spawn(out, "--steps", "12", launcher=launcher)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr

    records = log_of(out)
    assert records[0]["world"] == 2
    checkpoint = [r for r in records if r.get("event") == "checkpoint"][-1]
    ckpt = state(out)
    network = DDN(DDNConfig.from_json(ckpt["config"]))
    network.load_state_dict(ckpt["model"])
    rank0 = fingerprint(weights_of(network)).hex()
    assert checkpoint["replica_weights"] == [rank0, rank0]  # rank 1 ended with rank 0's weights, bit for bit
    assert sum(records[-1]["splits"]) >= 1
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["sampler"], ckpt["rng"][1]["sampler"])
    assert load(tmp_path / "m.safetensors").card["batch"] == 8


def test_per_image_rate_pricing_matches_the_encoders_choice() -> None:
    """One batch priced at three λ: 0 is the nearest choice, a huge one takes the cheapest
    symbol everywhere, and each image's choice is the one the single-image encoder makes."""
    from ddncodec.codec import rate_aware
    from ddncodec.model import nearest

    model = load(Path(__file__).parent / "data" / "tiny.safetensors")
    torch.manual_seed(0)
    target = torch.rand(3, 3, 64, 64) - 0.5
    lams = torch.tensor([0.0, 1e9, 300.0])
    batch = [
        idx for idx, _ in model.network.walk((3, 64, 64), rate_aware(target, model, lams, torch.tensor([0, 0, 0])))
    ]
    alone = [
        [idx for idx, _ in model.network.walk((1, 64, 64), rate_aware(target[i : i + 1], model, float(lam)))]
        for i, lam in enumerate(lams)
    ]
    plain = [idx for idx, _ in model.network.walk((1, 64, 64), nearest(target[:1]))]
    for layer, idx in enumerate(batch):
        assert torch.equal(idx[0], plain[layer][0])
        assert len(idx[1].unique()) <= 2  # the cheapest symbol of each parent context
        for i in range(3):
            assert torch.equal(idx[i], alone[i][layer][0]), (layer, i)
    assert batch[-1][2].any() and not torch.equal(batch[-1][2], plain[-1][0])


def test_rate_aware_training_logs_the_coders_rate_and_quality(tmp_path: Path) -> None:
    from ddncodec.options import TrainOptions
    from ddncodec.train import train as run

    tiny = Path(__file__).parent / "data" / "tiny.safetensors"
    out = tmp_path / "rate.safetensors"
    options = TrainOptions(
        [BSDS], out, val=[BSDS], config="tiny", steps=20, batch=4, crop=64, val_every=10, val_images=4, val_crop=64
    )
    options.grow_from = options.rate_from = tiny
    options.quiet = True
    run(options)
    vals = [r for r in log_of(tmp_path / "rate") if r.get("event") == "val"]
    pricing = load(tiny)
    rungs = [r for r in (pricing.ladder or fallback(len(pricing.config.layers))) if r.lam > 0]
    assert len(vals) >= 2
    for record in vals:
        points = record["rate_points"]
        assert len(points) == len(rungs)
        assert all(0 < bpp < 8 and 8 < quality < 60 for bpp, quality in points)
    assert load(out).config == pricing.config


def test_a_checkpoint_stores_float16_valued_weights_in_half_the_bytes(tmp_path: Path) -> None:
    files = checkpoint.RunFiles(tmp_path / "m.safetensors")
    frozen = torch.randn(64, 64).half().float()  # a layer grown from a float16 model
    trained = torch.randn(64, 64)
    counts = torch.arange(8, dtype=torch.float64)
    state = {
        "config": "{}",
        "model": {"frozen": frozen, "trained": trained, "hits": counts},
        "step": 3,
        "elapsed": 1.0,
        "rng": {},
    }
    checkpoint.save(files, state, {"state": {}})
    stored = torch.load(files.state, weights_only=True)["model"]
    assert stored["frozen"].dtype == torch.float16 and torch.equal(stored["frozen"].float(), frozen)
    assert stored["trained"].dtype == torch.float32 and torch.equal(stored["trained"], trained)
    assert stored["hits"].dtype == torch.float64
    restored = torch.nn.Linear(64, 64, bias=False)
    restored.load_state_dict({"weight": stored["frozen"]})
    assert restored.weight.dtype == torch.float32 and torch.equal(restored.weight.detach(), frozen)


def test_no_research_command_spells_anything_q_which_is_the_encoders_quality() -> None:
    research = ("train", "train-filter", "tune", "bench", "sample", "guide", "tree")
    for name in research:
        options = [opt for param in main.commands[name].params for opt in param.opts]
        assert "-q" not in options, name
    assert "--quiet" in [opt for param in main.commands["train"].params for opt in param.opts]
    refused = CliRunner().invoke(main, ["train", "--data", str(BSDS), "--out", "m", "-q"])
    assert refused.exit_code == 1 and "No such option '-q'" in refused.output
