"""Data sets and plots of lessons 04-06: shapes, determinism under a seed, stated baselines."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import assert_deterministic
from matplotlib.figure import Figure  # noqa: E402

from lstmkit import data, viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("name", ["windowed_parity", "cloze_task", "tagged_sentences",
                                  "motion_clips", "moving_glyphs"])
def test_docstrings_state_shapes_and_baseline(name):
    doc = getattr(data, name).__doc__
    assert "Returns" in doc and "(" in doc and "baseline" in doc.lower()


# ------------------------------------------------------------------ windowed parity


def test_windowed_parity_shapes_and_targets():
    x, y = data.windowed_parity(20, T=15, window=4, seed=3)
    assert x.shape == (20, 15, 1) and x.dtype == np.float32
    assert y.shape == (20, 15) and y.dtype == np.int64
    bits = x[..., 0].astype(int)
    for t in range(15):
        np.testing.assert_array_equal(y[:, t], bits[:, max(0, t - 3):t + 1].sum(1) % 2)
    assert_deterministic(lambda s: data.windowed_parity(5, seed=s))


def test_windowed_parity_window_longer_than_sequence_and_bad_window():
    x, y = data.windowed_parity(4, T=5, window=9)
    np.testing.assert_array_equal(y, np.cumsum(x[..., 0].astype(int), 1) % 2)
    with pytest.raises(ValueError, match="window"):
        data.windowed_parity(4, window=0)


def test_windowed_parity_baseline_is_one_half():
    x, y = data.windowed_parity(4000, T=20, window=3, seed=1)
    assert abs(y.mean() - 0.5) < 0.01
    # the target is independent of the bits before the window: P(y = 1 | older bit) ~ 1/2
    older = x[:, 10:, 0] == 1
    shifted = y[:, 13:][:, :7]
    assert abs(shifted[older[:, :7]].mean() - 0.5) < 0.02


# ----------------------------------------------------------------------- cloze task


def test_cloze_task_shapes_and_cue():
    tokens, blank, y = data.cloze_task(200, T=16, distance=(2, 6), seed=0)
    assert tokens.shape == (200, 16) and tokens.dtype == np.int64
    assert blank.shape == y.shape == (200,) and y.min() >= 0 and y.max() <= 3
    vocab = data.cloze_vocabulary()
    assert len(vocab) == 18 and tokens.max() < len(vocab)
    n_fill = len(data.CLOZE_FILLERS)
    for row, p, label in zip(tokens, blank, y, strict=True):
        assert vocab[row[p]] == "____" and (row == row[p]).sum() == 1
        cue = np.flatnonzero(row >= n_fill)
        cue = cue[row[cue] != row[p]]
        assert len(cue) == 1 and 2 <= cue[0] - p <= 6 and row[cue[0]] - n_fill == label
    assert_deterministic(lambda s: data.cloze_task(10, seed=s))


def test_cloze_task_fixed_distance_and_errors():
    tokens, blank, y = data.cloze_task(50, T=10, distance=9)
    assert (blank == 0).all()
    np.testing.assert_array_equal(tokens[:, 9], y + len(data.CLOZE_FILLERS))
    with pytest.raises(ValueError, match="distance"):
        data.cloze_task(5, T=10, distance=10)


def test_cloze_task_past_says_nothing():
    """Chance 1/4: the best guess from the words up to the blank is no better than 1/4."""
    tokens, blank, y = data.cloze_task(20000, T=12, distance=(1, 4), seed=2)
    assert abs(np.bincount(y, minlength=4) / len(y) - 0.25).max() < 0.015
    before = tokens[np.arange(len(y)), np.maximum(blank - 1, 0)]  # the word before the blank
    best = sum(np.bincount(y[before == w], minlength=4).max() for w in np.unique(before))
    assert best / len(y) < 0.28


# ----------------------------------------------------------------- tagged sentences


def test_tagged_sentences_grammar():
    tokens, tags, amb = data.tagged_sentences(300, seed=0)
    assert tokens.shape == tags.shape == amb.shape == (300, 12)
    vocab = data.tagging_vocabulary()
    assert ((tokens == 0) == (tags == -1)).all()
    for row, tag in zip(tokens, tags, strict=True):
        n = int((tag >= 0).sum())
        assert (tag[n:] == -1).all() and tag[0] == 0 and tag[n - 1] in (2, 3)
        for t in range(n):
            word = vocab[row[t]]
            if word in data.AMBIGUOUS_WORDS:  # ADJ before ADJ/NOUN, NOUN before VERB or the end
                follows = tag[t + 1] if t + 1 < n else 3
                assert tag[t] == (1 if follows in (1, 2) else 2)
    assert amb.any() and (tags[amb] >= 1).all()
    assert_deterministic(lambda s: data.tagged_sentences(20, seed=s))


def test_tagged_sentences_past_only_baseline():
    """The docstring's 0.67: the best past-only guess on ambiguous words (majority tag given
    the number of words since the last determiner)."""
    tokens, tags, amb = data.tagged_sentences(20000, seed=5)
    det_ids = [data.tagging_vocabulary().index(w) for w in ("the", "a", "every")]
    since = np.zeros_like(tokens)
    for t in range(1, tokens.shape[1]):
        since[:, t] = np.where(np.isin(tokens[:, t], det_ids), 0, since[:, t - 1] + 1)
    keys, labels = since[amb], tags[amb]
    best = sum(np.bincount(labels[keys == k]).max() for k in np.unique(keys)) / len(labels)
    assert 0.65 < best < 0.69


# ---------------------------------------------------------------------- motion clips


def test_motion_clips_move_in_the_labelled_direction():
    x, y = data.motion_clips(40, T=6, size=12, noise=0.0, seed=0)
    assert x.shape == (40, 6, 1, 12, 12) and x.dtype == np.float32 and y.dtype == np.int64
    steps = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}
    for clip, label in zip(x, y, strict=True):
        assert all(f.sum() == 9 for f in clip[:, 0])  # the 3 x 3 square, wrapped around the edges
        for t in range(1, 6):
            np.testing.assert_array_equal(clip[t, 0], np.roll(clip[t - 1, 0], steps[int(label)], axis=(0, 1)))
    assert_deterministic(lambda s: data.motion_clips(4, seed=s))
    with pytest.raises(ValueError, match="blob"):
        data.motion_clips(2, size=3, blob=3)


def test_motion_clips_baseline_one_frame_says_nothing():
    """Chance 1/4: labels balanced, and any single frame looks the same for every direction."""
    x, y = data.motion_clips(4000, T=8, size=16, noise=0.0, seed=1)
    assert abs(np.bincount(y) / len(y) - 0.25).max() < 0.02
    for t in (0, 7):
        for k in range(4):  # the average frame t of each class is flat: no position gives it away
            mean_frame = x[y == k, t, 0].mean(0)
            assert abs(mean_frame - 9 / 256).max() < 0.025


# -------------------------------------------------------------------- moving glyphs


def test_font_and_glyph():
    assert sorted(data.DIGIT_FONT) == list("0123456789")
    assert all(len(rows) == 7 and all(len(r) == 5 for r in rows) for rows in data.DIGIT_FONT.values())
    g = data.glyph("1", scale=2)
    assert g.shape == (14, 10) and set(np.unique(g)) == {0.0, 1.0}
    assert len({data.glyph(d).tobytes() for d in "0123456789"}) == 10  # all distinct


def test_moving_glyphs_shapes_range_and_seed():
    f = data.moving_glyphs(6, T=8, size=32, n_glyphs=2, seed=0)
    assert f.shape == (6, 8, 1, 32, 32) and f.dtype == np.float32
    assert f.min() == 0.0 and f.max() == 1.0
    ink = f.sum((2, 3, 4))
    assert (ink > 0).all() and (ink <= 2 * 70 * 4).all()
    assert_deterministic(lambda s: data.moving_glyphs(3, seed=s))
    with pytest.raises(ValueError, match="fit"):
        data.moving_glyphs(1, size=12, scale=2)
    with pytest.raises(ValueError, match="char must be one of the digits"):
        data.glyph("a")


@pytest.mark.parametrize("size", [15, 16, 32])
def test_moving_glyphs_at_the_largest_speed_allowed_stay_in_the_frame(size):
    """A bounce moves a digit back by its speed, which must land inside the frame: the largest
    speed allowed is (size - 14 + 1) // 2 at scale 2, and one more is refused, not drawn wrong."""
    fastest = (size - 14 + 1) // 2
    f = data.moving_glyphs(40, T=20, size=size, max_speed=fastest, seed=1)
    ink = f.sum((2, 3, 4))
    assert (ink == ink[:, :1]).all()  # every frame holds the whole digit
    for bad in (0, fastest + 1):
        with pytest.raises(ValueError, match=f"max_speed must be between 1 and {fastest}"):
            data.moving_glyphs(1, size=size, max_speed=bad)


def test_moving_glyphs_single_glyph_keeps_its_ink():
    f = data.moving_glyphs(20, T=12, size=32, n_glyphs=1, seed=4)
    ink = f.sum((2, 3, 4))
    assert (ink == ink[:, :1]).all()  # one glyph never leaves the frame: it bounces


def test_copy_last_frame_baseline():
    f = data.moving_glyphs(50, T=6, seed=1)
    manual = np.mean([(f[:, t] - f[:, t - 1]) ** 2 for t in range(1, 6)])
    assert data.copy_last_frame_mse(f) == pytest.approx(manual)
    assert data.copy_last_frame_mse(f) > 0
    still = np.repeat(f[:, :1], 6, axis=1)
    assert data.copy_last_frame_mse(still) == 0.0


# -------------------------------------------------------------------------- plots


def assert_labelled(ax):
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_curves_at():
    fig = viz.curves_at([50, 100, 150], {"1 layer": [0.5, 0.6, 0.7], "2 layers": [0.5, 0.7, 0.9]},
                        xlabel="training step", ylabel="validation accuracy", title="Depth",
                        baseline=0.5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert_labelled(ax)
    assert len(ax.lines) == 3 and len(ax.get_legend().get_texts()) == 3
    fig = viz.curves_at([1, 2, 4, 8], {"a": [1, 1, 1, 1]}, xlabel="d", ylabel="acc", title="t",
                        logx=True)
    assert fig.axes[0].get_xscale() == "log"


def test_frame_grid():
    frames = np.random.default_rng(0).random((5, 8, 8))
    fig = viz.frame_grid({"true": frames, "predicted": frames * 0.5}, title="Next frames",
                         first_step=5)
    assert fig.get_suptitle() == "Next frames"
    assert len(fig.axes) == 10
    assert fig.axes[0].get_ylabel() == "true" and fig.axes[5].get_ylabel() == "predicted"
    assert fig.axes[9].get_xlabel() == "t = 9"
    w, h = fig.get_size_inches()
    assert w <= 9 and h <= 4 and fig.dpi <= 100
    with pytest.raises(ValueError, match="same number"):
        viz.frame_grid({"a": frames, "b": frames[:3]})
    with pytest.raises(ValueError, match="at least one row"):
        viz.frame_grid({})
