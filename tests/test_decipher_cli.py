"""``xred decipher``: one-line errors for bad input, and small runs of both modes that write the
graph (valid against its schema), the figures and metrics.json."""

import json

import pytest

from xred.cli import main

pytestmark = pytest.mark.usefixtures("fashion_mnist_available")


@pytest.fixture
def fashion_mnist_available() -> None:
    from xred.data import load_dataset
    from xred.errors import XredError

    try:
        load_dataset("fashion-mnist", "test")
    except XredError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("argv, message", [
    (["--benign", "Boot", "--target", "Sandal"], "benign class 'Boot' does not exist; classes: "
     "0=T-shirt/top"),
    (["--benign", "Sneaker", "--target", "10"], "target class 10 does not exist; classes:"),
    (["--benign", "7", "--target", "Sneaker"], "target class equals the benign class"),
    (["--benign", "Sneaker", "--target", "Sandal", "--eps", "0.05", "0.02"],
     "strictly increasing"),
    (["--benign", "Sneaker", "--target", "Sandal", "--layers", "features.99"],
     "unknown layer 'features.99'; valid layers: normalize, features"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message) -> None:
    code = main(["decipher", *argv, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_pathways_command_writes_a_valid_graph(tmp_path, capsys) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "p"
    code = main(["decipher", "--benign", "Sneaker", "--target", "Sandal", "--count", "20",
                 "--eps", "0.03", "0.08", "--steps", "3", "--examples", "2",
                 "--ablation-eps", "0.03", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    graph = json.loads((out / "graph.json").read_text())
    jsonschema.validate(graph, json.loads((out / "graph.schema.json").read_text()))
    assert graph["benign"]["name"] == "Sneaker" and graph["attack"]["eps"] == [0.03, 0.08]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ablation"]["eps"] == 0.03
    assert (out / "pathways.png").stat().st_size > 10_000
    assert any("examples" in n for n in graph["nodes"]) == (out / "patches.png").exists()


def test_explain_adversarial_command(tmp_path, capsys) -> None:
    out = tmp_path / "e"
    code = main(["decipher", "--explain-adversarial", "--count", "12", "--attacks", "fgsm",
                 "--explainer", "guided_backprop", "enhanced_guided_backprop", "--fractions",
                 "0.02", "0.1", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    entry = metrics["attacks"]["fgsm"]
    assert set(entry["methods"]) == {"guided_backprop", "enhanced_guided_backprop"}
    assert len(entry["methods"]["guided_backprop"]["recovery"]["clean"]["successful"]) == 2
    assert (out / "recovery.png").exists() and (out / "maps.png").exists()
