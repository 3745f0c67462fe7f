"""The README's examples work as written: every Python block runs after a bare ``import xred``,
and every cheap ``xred`` example of the shell blocks runs (the expensive ones are listed here
with the reason, so that a new example must be classified)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
XRED = [sys.executable, "-m", "xred"]

#: examples run by the test, with the exit status each must give
CHEAP = {
    "xred models": 0,
    "xred data check": 0,
    "xred eval --model efficientnet-lite0": 0,
    "xred explain --model fmnist-resnet": 0,
    "xred attack --model fmnist-vgg --attack pgd": 0,
    "xred tamper --model fmnist-vgg --technique image": 0,
    "xred inspect --model runs/tampered": 1,  # flagged
    "xred audit --model runs/tampered": 1,  # manipulated
}
#: examples not run, and why
EXPENSIVE = {
    "xred eval --model fmnist-resnet": "the full test set (tests/test_zoo_accuracy.py)",
    "xred eval --model efficientnet-lite0 --image my_cat.jpg": "the user's own photo",
    "xred eval --model resnet50": "needs ImageNet weights and data",
    "xred explain --out runs/explain": "every method at 224 px: minutes",
    "xred train": "trains a model",
    "torchrun": "several processes",
    "xred fool": "fine-tunes a model (tests/test_fool_cli.py)",
    "xred evaluate": "needs the fooled model",
    "xred audit --model runs/fooled": "needs the fooled model",
    "xred run": "a reproduction: tens of minutes",
    "xred attack --model fmnist-resnet --attack adv2": "300 ADV² steps",
    "xred attack --model fmnist-vgg --attack aai --sweep-eps": "a sweep",
    "xred harden": "trains a model (tests/test_harden_cli.py)",
    "xred robustness": "100-step PGD on 1,000 inputs at every ε, and AAI",
    "xred probe": "needs the hardened model (tests/test_harden_cli.py runs a probe)",
    "xred app": "starts a server (tests/test_app_browser.py drives it)",
}


def blocks(language: str | None) -> list[str]:
    text = README.read_text()
    found = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    return [body for lang, body in found if (lang or None) == language]


def shell_examples() -> list[str]:
    lines = []
    for body in blocks(None):
        joined = body.replace("\\\n", " ")
        for line in joined.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if command.startswith(("xred ", "torchrun ")):
                lines.append(" ".join(command.split()))
    return lines


def classify(example: str) -> str | None:
    """The longest prefix of CHEAP or EXPENSIVE that ``example`` starts with (word-wise)."""
    prefixes = [p for p in (*CHEAP, *EXPENSIVE) if example == p or example.startswith(p + " ")]
    return max(prefixes, key=len, default=None)


def test_every_example_is_classified():
    examples = shell_examples()
    assert len(examples) >= 15
    for example in examples:
        assert classify(example), f"classify this README example in tests/test_readme.py: " \
            f"{example}"


@pytest.mark.parametrize("code", blocks("python"), ids=lambda c: c.splitlines()[1][:40])
def test_python_blocks_run(code, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_cheap_shell_examples_run(tmp_path):
    """In one folder, in README order (inspect reads what tamper wrote)."""
    ran = 0
    for example in shell_examples():
        prefix = classify(example)
        if prefix not in CHEAP:
            continue
        args = example.split()[1:]
        done = subprocess.run([*XRED, *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"})
        assert done.returncode == CHEAP[prefix], f"{example}\n{done.stderr[-2000:]}"
        ran += 1
    assert ran == len(CHEAP)
