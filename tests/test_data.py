"""lstmkit.data: shapes, dtypes, determinism under a seed, and every stated baseline."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_deterministic

from lstmkit import data

# ------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("name", ["adding_problem", "recall_task", "labelled_sequences",
                                  "seasonal_series", "windows", "moving_shape_clip"])
def test_docstrings_state_shapes(name):
    doc = getattr(data, name).__doc__
    assert doc and "Returns" in doc and "(" in doc


@pytest.mark.parametrize("name", ["adding_problem", "recall_task", "labelled_sequences",
                                  "seasonal_series"])
def test_docstrings_state_a_baseline(name):
    assert "baseline" in getattr(data, name).__doc__.lower()


# ------------------------------------------------------------------ adding problem


def test_adding_problem_shapes_and_targets():
    x, y = data.adding_problem(50, T=30, seed=3)
    assert x.shape == (50, 30, 2) and x.dtype == np.float32
    assert y.shape == (50, 1) and y.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(markers)) <= {0.0, 1.0}
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :15].sum(1) == 1).all() and (markers[:, 15:].sum(1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(1), rtol=1e-6)


def test_adding_problem_is_deterministic():
    assert_deterministic(lambda s: data.adding_problem(20, T=10, seed=s))


def test_adding_problem_baseline_is_one_sixth():
    # The best constant is the mean, 1; its MSE is Var(X1 + X2) = 1/6.
    _, y = data.adding_problem(200_000, T=4, seed=0)
    y = y[:, 0].astype(np.float64)
    assert abs(y.mean() - 1.0) < 0.005
    mse = np.mean((y - 1.0) ** 2)
    assert abs(mse - 1 / 6) < 0.002  # standard error ~ 0.0004
    assert data.ADDING_BASELINE_MSE == pytest.approx(0.1667, abs=1e-4)
    # and no other constant does better
    for c in (0.9, 1.1):
        assert np.mean((y - c) ** 2) > mse


def test_adding_problem_rejects_tiny_T():
    with pytest.raises(ValueError):
        data.adding_problem(3, T=1)


# --------------------------------------------------------------------- recall task


def test_recall_task_structure():
    lag, n_facts, n_distractors = 12, 4, 8
    ids, y = data.recall_task(40, lag, seed=1, one_hot=False)
    assert ids.shape == (40, lag + 1) and ids.dtype == np.int64
    assert y.shape == (40,) and y.dtype == np.int64
    np.testing.assert_array_equal(ids[:, 0], y)  # the fact comes first
    assert ((y >= 0) & (y < n_facts)).all()
    middle = ids[:, 1:lag]
    assert ((middle >= n_facts) & (middle < n_facts + n_distractors)).all()
    assert (ids[:, lag] == n_facts + n_distractors).all()  # the question comes last

    x, y2 = data.recall_task(40, lag, seed=1)
    V = n_facts + n_distractors + 1
    assert x.shape == (40, lag + 1, V) and x.dtype == np.float32
    np.testing.assert_array_equal(x.sum(-1), 1.0)
    np.testing.assert_array_equal(x.argmax(-1), ids)
    np.testing.assert_array_equal(y, y2)


def test_recall_task_is_deterministic():
    assert_deterministic(lambda s: data.recall_task(10, 7, seed=s))


@pytest.mark.parametrize("n_facts", [2, 4, 8])
def test_recall_task_chance_baseline(n_facts):
    # Facts are uniform and independent of everything after step 0, so any predictor that
    # ignores step 0 (e.g. the majority class) scores 1 / n_facts.
    ids, y = data.recall_task(100_000, 3, n_facts=n_facts, seed=2, one_hot=False)
    freq = np.bincount(y, minlength=n_facts) / len(y)
    assert np.abs(freq - 1 / n_facts).max() < 0.01
    # the first distractor says nothing about the fact
    for d in np.unique(ids[:, 1]):
        sub = y[ids[:, 1] == d]
        assert np.abs(np.bincount(sub, minlength=n_facts) / len(sub) - 1 / n_facts).max() < 0.03


def test_recall_vocabulary_and_description():
    words = data.recall_vocabulary(4, 8)
    assert len(words) == 13 and words[-1] == data.RECALL_QUERY and words[0] == "nuts"
    ids, _ = data.recall_task(1, 30, seed=0, one_hot=False)
    text = data.describe_recall(ids[0])
    assert text.startswith("Mary is allergic to ") and text.endswith(data.RECALL_QUERY)
    assert "more words" in text
    short = data.describe_recall(data.recall_task(1, 3, seed=0, one_hot=False)[0][0])
    assert "more words" not in short


@pytest.mark.parametrize("kw", [{"n_facts": 1}, {"n_facts": 9}, {"n_distractors": 0},
                                {"n_distractors": 17}])
def test_recall_task_rejects_bad_sizes(kw):
    with pytest.raises(ValueError):
        data.recall_task(2, 5, **kw)


def test_recall_task_rejects_bad_lag():
    with pytest.raises(ValueError):
        data.recall_task(2, 0)


# -------------------------------------------------------------- labelled sequences


def test_labelled_sequences_shapes_and_balance():
    x, y = data.labelled_sequences(100, T=40, seed=0)
    assert x.shape == (100, 40, 1) and x.dtype == np.float32
    assert y.shape == (100,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=3)
    assert set(counts) <= {33, 34} and counts.sum() == 100
    # chance and majority-class accuracy are both 1/3 (up to rounding of n / 3)
    assert counts.max() / 100 <= 1 / 3 + 1 / 100


def test_labelled_sequences_is_deterministic():
    assert_deterministic(lambda s: data.labelled_sequences(12, seed=s))


def test_labelled_sequences_classes_differ_in_shape():
    # Without noise, a square wave takes only two values per sequence, the others many.
    x, y = data.labelled_sequences(30, T=60, noise=0.0, seed=4)
    for seq, label in zip(x[..., 0], y, strict=True):
        n_values = len(np.unique(np.round(seq, 5)))
        assert (n_values <= 2) == (data.WAVEFORMS[label] == "square")


# ---------------------------------------------------------------- seasonal series


def test_seasonal_series_shape_and_determinism():
    s = data.seasonal_series(500, seed=0)
    assert s.shape == (500,) and s.dtype == np.float32
    assert_deterministic(lambda seed: data.seasonal_series(100, seed=seed))
    with pytest.raises(ValueError, match="period must be positive"):
        data.seasonal_series(100, period=0)


def test_seasonal_baselines_are_right():
    s = data.seasonal_series(200_000, period=24, noise=0.1, seed=5).astype(np.float64)
    b = data.seasonal_baselines(period=24, noise=0.1)
    assert b["noise_floor"] == pytest.approx(0.01)
    assert b["seasonal_naive"] == pytest.approx(0.02)
    assert b["persistence"] == pytest.approx(0.088, abs=0.001)  # the number in the docstring
    persistence = np.mean((s[1:] - s[:-1]) ** 2)
    seasonal_naive = np.mean((s[24:] - s[:-24]) ** 2)
    assert persistence == pytest.approx(b["persistence"], rel=0.02)
    assert seasonal_naive == pytest.approx(b["seasonal_naive"], rel=0.03)


def test_seasonal_noise_floor():
    # Two series with the same seed differ only in the noise scale, so their difference is
    # pure noise: its variance shows the floor a perfect forecaster would be left with.
    a = data.seasonal_series(100_000, noise=0.1, seed=2).astype(np.float64)
    b = data.seasonal_series(100_000, noise=0.0, seed=2).astype(np.float64)
    assert np.mean((a - b) ** 2) == pytest.approx(0.01, rel=0.03)


def test_windows():
    s = np.arange(20, dtype=np.float32)
    x, y = data.windows(s, 5)
    assert x.shape == (15, 5, 1) and y.shape == (15, 5, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(y[..., 0], x[..., 0] + 1)  # the target is one step ahead
    np.testing.assert_array_equal(x[3, :, 0], np.arange(3, 8))
    x2, y2 = data.windows(s, 5, stride=5)
    assert x2.shape == (3, 5, 1)
    np.testing.assert_array_equal(x2[:, 0, 0], [0, 5, 10])
    assert y2[-1, -1, 0] == 15


@pytest.mark.parametrize("length", [0, 20, 25])
def test_windows_rejects_bad_length(length):
    with pytest.raises(ValueError):
        data.windows(np.arange(20.0), length)


def test_windows_rejects_2d():
    with pytest.raises(ValueError):
        data.windows(np.zeros((4, 4)), 2)


@pytest.mark.parametrize("stride", [0, -1])
def test_windows_rejects_a_stride_below_one(stride):
    with pytest.raises(ValueError, match="stride must be at least 1"):
        data.windows(np.arange(20.0), 5, stride=stride)


# -------------------------------------------------------------- lesson 00 samples


def test_text_round_trip():
    text = data.text_snippet()
    assert "allergic to nuts" in text and "peanut cake" in text
    ids, vocab = data.encode_text(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert "".join(vocab[i] for i in ids) == text
    assert vocab == sorted(vocab)


def test_moving_shape_clip():
    clip = data.moving_shape_clip(T=10, size=20, square=4, seed=3)
    assert clip.shape == (10, 20, 20) and clip.dtype == np.float32
    assert clip.min() >= 0 and clip.max() <= 1
    positions = []
    for frame in clip:
        rows, cols = np.nonzero(frame == 1.0)
        assert len(rows) == 16  # the whole square is inside the frame
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
        positions.append((rows.min(), cols.min()))
    assert len(set(positions)) > 1  # it moves
    assert_deterministic(lambda s: data.moving_shape_clip(T=4, seed=s))


def test_moving_shape_clip_rejects_bad_square():
    with pytest.raises(ValueError):
        data.moving_shape_clip(size=8, square=8)
