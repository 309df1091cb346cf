import pytest
import torch

from model.data import SYNTHETIC_CLASSES, SYNTHETIC_FEATURES, DataError, load_csv, make_synthetic, split


def test_synthetic_is_deterministic_per_seed():
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_synthetic_shape_and_names():
    d = make_synthetic()
    assert d.x.shape == (1000, 10) and d.x.dtype == torch.float32
    assert d.feature_names == SYNTHETIC_FEATURES and d.class_names == SYNTHETIC_CLASSES
    assert sorted(torch.bincount(d.y).tolist()) == [333, 333, 334]


def test_synthetic_classes_overlap():
    """A nearest-centroid rule must get some rows wrong, or the task would be trivial."""
    d = make_synthetic()
    z = (d.x - d.x.mean(0)) / d.x.std(0)
    centres = torch.stack([z[d.y == k].mean(0) for k in range(3)])
    nearest = torch.cdist(z, centres).argmin(1)
    accuracy = (nearest == d.y).float().mean().item()
    assert 0.6 < accuracy < 0.99


def test_split_partitions_rows_without_overlap():
    d = make_synthetic()
    s = split(d)
    assert (len(s.train), len(s.validation), len(s.test)) == (700, 150, 150)
    rows = torch.cat([s.train.x, s.validation.x, s.test.x])
    assert torch.unique(rows, dim=0).shape[0] == 1000


def test_load_csv_names_come_from_the_data(tmp_path):
    path = tmp_path / "d.csv"
    lines = ["a,label,b"] + [f"{i},{'yes' if i % 2 else 'no'},{i * 2}" for i in range(20)]
    path.write_text("\n".join(lines) + "\n")
    d = load_csv(path, "label")
    assert d.feature_names == ("a", "b") and d.class_names == ("no", "yes")
    assert d.x.shape == (20, 2) and d.y.tolist()[:3] == [0, 1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,label\n1,x\n", "at least 10"),
        ("a,label\n" + "1,x\n" * 12, "fewer than 2 distinct"),
        ("a,label\n" + "1,x\n2,y\n" * 5 + "oops,x\n", "'oops' is not a number"),
        ("a,label\n" + "1,x\n2,y\n" * 5 + "1\n", "expected 2 fields"),
        ("a,b\n1,2\n", "no column 'label'"),
    ],
)
def test_load_csv_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_csv(path, "label")
