"""The training engine: exact resume after a kill, DDP under torchrun, eval-mode training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from process_helpers import torchrun
from xred.data.base import ArrayDataset
from xred.engine import TrainConfig, classification, epoch_batches, fit, flip_and_shift
from xred.errors import XredError
from xred.io import load_state, load_tensors

ROOT = Path(__file__).resolve().parents[1]


def tiny_data(n: int = 96) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()
    return ArrayDataset(x, y, ["a", "b", "c", "d"], "tiny")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.2), nn.Flatten(), nn.Linear(4 * 64, 4))


class Interrupt(Exception):
    pass


def interrupting(objective, at_step: int):
    calls = {"n": 0}

    def wrapped(model, batch):
        calls["n"] += 1
        if calls["n"] == at_step + 1:
            raise Interrupt
        return objective(model, batch)

    return wrapped


def test_resume_in_process_is_bit_identical(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=16, optimizer="adam", lr=1e-2, checkpoint_every=4,
                      progress=False)
    objective = classification(flip_and_shift(1))
    full = tiny_model()
    fit(full, objective, tiny_data(), cfg, tmp_path / "full")
    broken = tiny_model()
    with pytest.raises(Interrupt):  # dies after step 10; the last checkpoint is at step 8
        fit(broken, interrupting(objective, 10), tiny_data(), cfg, tmp_path / "resumed")
    assert load_state(tmp_path / "resumed" / "checkpoint.safetensors")["step"] == 8
    resumed = tiny_model()
    result = fit(resumed, objective, tiny_data(), cfg, tmp_path / "resumed")
    assert result.resumed_from == 8 and result.steps == 18
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # a run of a different seed does not give the same weights (the comparison can fail)
    other = tiny_model()
    fit(other, objective, tiny_data(), TrainConfig(**{**cfg.__dict__, "seed": 1}))
    assert not torch.equal(other[0].weight, full[0].weight)


@pytest.mark.slow
def test_killed_process_resumes_to_identical_weights(tmp_path):
    args = ["train", "--model", "fmnist-resnet", "--limit", "3000", "--epochs", "2",
            "--batch-size", "32", "--checkpoint-every", "10", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "xred", *args]
    uninterrupted = subprocess.run([*cmd, "--out", str(tmp_path / "a")], env=env,
                                   capture_output=True, text=True, timeout=900)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "b")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "b" / "checkpoint.safetensors"
    deadline = time.time() + 600
    while not ckpt.exists() or load_state(ckpt)["step"] < 30:
        assert proc.poll() is None and time.time() < deadline, "finished before it was killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = load_state(ckpt)["step"]
    assert 30 <= step_at_kill < 186
    resumed = subprocess.run([*cmd, "--out", str(tmp_path / "b")], env=env,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    a = load_tensors(tmp_path / "a" / "model.safetensors")[0]
    b = load_tensors(tmp_path / "b" / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_config_is_refused(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False)
    fit(tiny_model(), classification(), tiny_data(), cfg, tmp_path)
    with pytest.raises(XredError, match="different config .*lr"):
        other = TrainConfig(epochs=1, batch_size=16, lr=0.5, progress=False)
        fit(tiny_model(), classification(), tiny_data(), other, tmp_path)


def test_eval_mode_training_freezes_batchnorm_and_restores_mode():
    model = tiny_model()
    model.train()
    before = model[1].running_mean.clone()
    fit(model, classification(), tiny_data(), TrainConfig(epochs=1, batch_size=16, eval_mode=True,
                                                           progress=False))
    assert torch.equal(model[1].running_mean, before) and model.training
    fit(model, classification(), tiny_data(), TrainConfig(epochs=1, batch_size=16,
                                                           progress=False))
    assert not torch.equal(model[1].running_mean, before)


def test_diverging_loss_is_one_clear_error():
    with pytest.raises(XredError, match="lower the learning rate"):
        fit(tiny_model(), lambda m, b: (m(b[0]).sum() * float("nan"), {}), tiny_data(),
            TrainConfig(epochs=1, batch_size=16, progress=False))


def test_epoch_batches_deal_the_permutation_to_ranks():
    one = epoch_batches(100, 8, seed=3, epoch=2)
    r0 = epoch_batches(100, 4, seed=3, epoch=2, rank=0, world=2)
    r1 = epoch_batches(100, 4, seed=3, epoch=2, rank=1, world=2)
    assert sorted(torch.cat([r0[0], r1[0]]).tolist()) == sorted(one[0].tolist())
    assert not torch.equal(one[0], epoch_batches(100, 8, seed=3, epoch=3)[0])


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from xred.data.base import ArrayDataset
    from xred.engine import TrainConfig, classification, fit
    from xred.io import save_tensors
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 6, generator=g)
    data = ArrayDataset(x, (x.sum(1) > 3).long(), ["lo", "hi"], "toy")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    fit(model, classification(), data, TrainConfig(epochs=3, batch_size=int(sys.argv[1]),
        optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, progress=False))
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    save_tensors(f"{sys.argv[2]}/rank{rank}.safetensors", model.state_dict())
""")


def test_torchrun_two_processes_equal_one_process_with_double_batch(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = torchrun([str(script), "8", str(tmp_path / "ddp")], env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = subprocess.run([sys.executable, str(script), "16", str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    r0 = load_tensors(tmp_path / "ddp" / "rank0.safetensors")[0]
    r1 = load_tensors(tmp_path / "ddp" / "rank1.safetensors")[0]
    one = load_tensors(tmp_path / "single" / "rank0.safetensors")[0]
    init = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.allclose(r0[k], one[k], atol=1e-5), k
    assert not torch.allclose(one["0.weight"], init[0].weight, atol=1e-3)


def test_cli_train_under_torchrun(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = torchrun(["-m", "xred", "train", "--model", "fmnist-vgg", "--limit", "512", "--epochs",
                     "1", "--quiet", "--out", str(tmp_path)], env=env, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "metrics.json").is_file()
