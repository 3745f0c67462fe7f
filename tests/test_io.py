"""Safe files: nested training state round-trips through safetensors + JSON; bad files fail
clearly."""

from __future__ import annotations

import pytest
import torch

from xred.errors import XredError
from xred.io import load_state, load_tensors, save_state, save_tensors


def test_nested_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(4, 3)).sum().backward()
    opt.step()
    state = {"step": 7, "opt": opt.state_dict(), "hist": [{"loss": 0.5}], "name": "x", "n": None}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 7 and back["hist"] == [{"loss": 0.5}] and back["n"] is None
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["opt"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k])


def test_corrupt_file_is_one_line_error(tmp_path):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(XredError, match="not a valid safetensors") as err:
        load_tensors(bad)
    assert "\n" not in str(err.value)


def test_atomic_write_leaves_no_temporaries(tmp_path):
    save_tensors(tmp_path / "a.safetensors", {"w": torch.ones(2)})
    save_tensors(tmp_path / "a.safetensors", {"w": torch.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
    assert torch.equal(load_tensors(tmp_path / "a.safetensors")[0]["w"], torch.zeros(2))
