"""Seeded synthetic data sets for the lessons: everything is made in code, nothing is downloaded.

Every generator returns **NumPy arrays** (``float32`` inputs and regression targets, ``int64``
class labels and token ids), is deterministic for a given ``seed``, and states in its
docstring the shapes it returns and the score of the trivial or chance baseline a model has
to beat. Sequence inputs are **batch-first**, ``(N, T, features)``, the layout of
``lstmkit.nn.LSTM(..., batch_first=True)``; turn them into tensors with ``torch.from_numpy``.

==========================  ======================================  =========================
generator                   task                                    baseline
==========================  ======================================  =========================
``adding_problem``          regression, many-to-one                 MSE 1/6 ~ 0.167 (predict 1)
``recall_task``             classification, many-to-one             accuracy 1/n_facts
``labelled_sequences``      classification, many-to-one             accuracy 1/3
``seasonal_series``         forecasting, many-to-many (``windows``)  see ``seasonal_baselines``
``text_snippet``            a few sentences of text (lesson 00)     --
``moving_shape_clip``       a short video, (T, H, W) (lesson 00)    --
==========================  ======================================  =========================
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ADDING_BASELINE_MSE",
    "adding_problem",
    "RECALL_FACTS",
    "RECALL_DISTRACTORS",
    "RECALL_QUERY",
    "recall_task",
    "recall_vocabulary",
    "describe_recall",
    "WAVEFORMS",
    "labelled_sequences",
    "seasonal_series",
    "seasonal_baselines",
    "windows",
    "text_snippet",
    "encode_text",
    "moving_shape_clip",
]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ the adding problem

#: MSE of the best constant prediction (the constant 1) on the modern adding problem.
ADDING_BASELINE_MSE = 1 / 6


def adding_problem(n: int, T: int = 100, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem, modern variant (Le et al. 2015; Arjovsky et al. 2016).

    Each sequence has T steps of two features: a value drawn from U(0, 1) and a marker that
    is 1 at exactly two steps (one in the first half, one in the second half) and 0
    elsewhere. The target is the sum of the two marked values, X1 + X2.

    Returns ``x: (n, T, 2) float32`` (feature 0 the values, feature 1 the markers) and
    ``y: (n, 1) float32``.

    Baseline: a model that ignores the input does best by predicting the mean, E[X1 + X2] = 1;
    its MSE is Var(X1 + X2) = 2 * 1/12 = 1/6 ~ 0.167 (``ADDING_BASELINE_MSE``). The first marker
    can sit anywhere in the first half, so the model must carry it for up to T steps.

    (Hochreiter & Schmidhuber's 1997 original uses values in U[-1, 1], target
    0.5 + (X1 + X2) / 4 and a baseline MSE of 1/24; it is not the variant generated here.)
    """
    if T < 2:
        raise ValueError(f"T must be at least 2, got {T}")
    rng = _rng(seed)
    values = rng.random((n, T))
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    markers = np.zeros((n, T))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


# ------------------------------------------------------------- the long-range recall task

#: The facts to remember (what Mary is allergic to); the class labels of ``recall_task``.
RECALL_FACTS = ("nuts", "milk", "eggs", "fish", "wheat", "soy", "sesame", "celery")
#: Filler words that fill the gap between the fact and the question.
RECALL_DISTRACTORS = ("she", "went", "to", "a", "party", "with", "friends", "and", "they",
                      "danced", "all", "night", "then", "someone", "brought", "cake")
#: The last token of every sequence: the question the model must answer.
RECALL_QUERY = "allergic-to?"


def recall_vocabulary(n_facts: int = 4, n_distractors: int = 8) -> list[str]:
    """The words behind ``recall_task``'s token ids: facts, then distractors, then the query."""
    _check_recall_sizes(n_facts, n_distractors)
    return [*RECALL_FACTS[:n_facts], *RECALL_DISTRACTORS[:n_distractors], RECALL_QUERY]


def _check_recall_sizes(n_facts, n_distractors):
    if not 2 <= n_facts <= len(RECALL_FACTS):
        raise ValueError(f"n_facts must be in [2, {len(RECALL_FACTS)}], got {n_facts}")
    if not 1 <= n_distractors <= len(RECALL_DISTRACTORS):
        raise ValueError(f"n_distractors must be in [1, {len(RECALL_DISTRACTORS)}], "
                         f"got {n_distractors}")


def recall_task(n: int, lag: int, *, n_facts: int = 4, n_distractors: int = 8, seed: int = 0,
                one_hot: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Long-range recall: a fact stated at the start must be recalled ``lag`` steps later.

    The idea of "Mary is allergic to nuts. [... a long story ...] Can she eat the peanut
    cake?" made synthetic. Step 0 holds the fact (one of ``n_facts`` tokens, e.g. "nuts"),
    steps 1 .. lag-1 hold distractor words drawn uniformly from ``n_distractors`` fillers, and
    step ``lag`` holds the question token. The label is the fact. Between the fact and the
    step where the answer is read there are exactly ``lag`` steps.

    Token ids: facts 0 .. n_facts-1, distractors n_facts .. n_facts+n_distractors-1, the
    question last; ``recall_vocabulary`` gives the words. V = n_facts + n_distractors + 1.

    Returns ``x`` and ``y: (n,) int64`` (the fact's id, 0 .. n_facts-1), where ``x`` is
    ``(n, lag + 1, V) float32`` one-hot vectors, or with ``one_hot=False`` the token ids
    ``(n, lag + 1) int64``.

    Baseline: the facts are drawn uniformly, and nothing after step 0 says anything about
    the fact, so a model that does not remember step 0 scores chance, 1 / n_facts
    (0.25 for the default four facts).
    """
    _check_recall_sizes(n_facts, n_distractors)
    if lag < 1:
        raise ValueError(f"lag must be at least 1, got {lag}")
    rng = _rng(seed)
    facts = rng.integers(0, n_facts, n)
    tokens = np.empty((n, lag + 1), dtype=np.int64)
    tokens[:, 0] = facts
    tokens[:, 1:lag] = rng.integers(n_facts, n_facts + n_distractors, (n, lag - 1))
    tokens[:, lag] = n_facts + n_distractors
    y = facts.astype(np.int64)
    if not one_hot:
        return tokens, y
    V = n_facts + n_distractors + 1
    return np.eye(V, dtype=np.float32)[tokens], y


def describe_recall(tokens: np.ndarray, *, n_facts: int = 4, n_distractors: int = 8,
                    max_words: int = 12) -> str:
    """One recall sequence (token ids, shape (T,)) as words, eliding the middle if long."""
    words = recall_vocabulary(n_facts, n_distractors)
    text = [words[int(t)] for t in np.asarray(tokens)]
    text[0] = f"Mary is allergic to {text[0].upper()}."
    if len(text) > max_words:
        head, tail = max_words // 2, max_words - max_words // 2 - 1
        text = [*text[:head], f"... ({len(text) - head - tail} more words) ...", *text[-tail:]]
    return " ".join(text)


# -------------------------------------------------------------- labelled sequences

#: Class names of ``labelled_sequences``, in label order.
WAVEFORMS = ("sine", "square", "sawtooth")


def labelled_sequences(n: int, T: int = 50, *, noise: float = 0.3, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Noisy waveforms to classify by shape: sine, square or sawtooth (``WAVEFORMS``).

    Each sequence has a random period (8 to 20 steps), phase and amplitude (0.5 to 1.5), plus
    Gaussian noise of standard deviation ``noise``, so no single step gives the class away:
    the shape only shows over several steps, which makes it a many-to-one task for a
    recurrent network that reads the whole sequence and answers at the end.

    Returns ``x: (n, T, 1) float32`` and ``y: (n,) int64`` in {0, 1, 2}.

    Baseline: labels are balanced (each class n // 3 or n // 3 + 1 times, in a shuffled
    order), so chance and the majority-class guess both score 1/3.
    """
    rng = _rng(seed)
    y = rng.permutation(np.arange(n) % len(WAVEFORMS)).astype(np.int64)
    period = rng.uniform(8, 20, (n, 1))
    phase = rng.uniform(0, 1, (n, 1))
    amp = rng.uniform(0.5, 1.5, (n, 1))
    cycles = np.arange(T)[None, :] / period + phase  # position in cycles
    frac = cycles % 1.0
    shapes = np.stack([
        np.sin(2 * np.pi * cycles),  # sine
        np.where(frac < 0.5, 1.0, -1.0),  # square
        2 * frac - 1,  # sawtooth
    ])
    wave = shapes[y, np.arange(n)]
    x = amp * wave + noise * rng.standard_normal((n, T))
    return x[..., None].astype(np.float32), y


# --------------------------------------------------------------- seasonal time series


def _seasonal_signal(t: np.ndarray, period: int, phase: float) -> np.ndarray:
    w = 2 * np.pi / period
    return np.sin(w * t + phase) + 0.5 * np.sin(2 * w * t + 2 * phase + 1.0)


def seasonal_series(n_steps: int = 1200, *, period: int = 24, noise: float = 0.1,
                    seed: int = 0) -> np.ndarray:
    """A seasonal signal with noise, for forecasting: think hourly readings with a daily cycle.

    y_t = sin(w t + p) + 0.5 sin(2 w t + 2 p + 1) + noise * e_t, with w = 2 pi / period,
    a random phase p and e_t ~ N(0, 1) independent.

    Returns ``y: (n_steps,) float32``. Cut it into training windows with ``windows``.

    Baselines for predicting the next value (see ``seasonal_baselines`` for the numbers):
    the noise cannot be predicted, so no model beats MSE ``noise**2`` (0.01 by default);
    the seasonal-naive forecast y_{t-period} scores 2 * noise**2 (0.02); persistence,
    y_t for y_{t+1}, scores about 0.088 with the defaults.
    """
    rng = _rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(n_steps, dtype=np.float64)
    y = _seasonal_signal(t, period, phase) + noise * rng.standard_normal(n_steps)
    return y.astype(np.float32)


def seasonal_baselines(*, period: int = 24, noise: float = 0.1) -> dict[str, float]:
    """Expected one-step-ahead MSE of the trivial forecasts of ``seasonal_series``.

    Returns ``{"noise_floor": noise**2, "seasonal_naive": 2 noise**2, "persistence": ...}``.
    For a sinusoid A sin(w t), the mean square of its one-step difference is A^2 (1 - cos w),
    and the two harmonics are orthogonal, so persistence scores
    (1 - cos w) + 0.25 (1 - cos 2w) + 2 noise**2.
    """
    w = 2 * np.pi / period
    drift = (1 - math.cos(w)) + 0.25 * (1 - math.cos(2 * w))
    return {"noise_floor": noise**2, "seasonal_naive": 2 * noise**2,
            "persistence": drift + 2 * noise**2}


def windows(series: np.ndarray, length: int, *, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cut a 1-D series into many-to-many training pairs: predict the next value at every step.

    Window k starts at s = k * stride; its input is ``series[s : s + length]`` and its target
    the same window shifted one step ahead, ``series[s + 1 : s + length + 1]``.

    Returns ``x, y: (N, length, 1)`` in the series' dtype, N = (len(series) - length - 1)
    // stride + 1. For many-to-one forecasting, use ``y[:, -1]``, the value after the window.
    """
    series = np.asarray(series)
    if series.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {series.shape}")
    if length < 1 or len(series) < length + 1:
        raise ValueError(f"need 1 <= length < len(series), got length={length} for "
                         f"{len(series)} values")
    starts = np.arange(0, len(series) - length, stride)
    idx = starts[:, None] + np.arange(length)[None, :]
    return series[idx][..., None], series[idx + 1][..., None]


# ------------------------------------------------------------------- lesson 00 samples


_TEXT = ("Mary is allergic to nuts. She went to a party with her friends, and they danced "
         "all night. Then someone brought a peanut cake, and Mary did not eat any of it.")


def text_snippet() -> str:
    """A short text whose ending depends on its beginning: the "Mary ... peanut cake" story."""
    return _TEXT


def encode_text(text: str) -> tuple[np.ndarray, list[str]]:
    """Characters to ids: returns ``ids: (len(text),) int64`` and the sorted vocabulary,
    so that ``"".join(vocab[i] for i in ids) == text``."""
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    return np.array([index[ch] for ch in text], dtype=np.int64), vocab


def moving_shape_clip(T: int = 12, size: int = 24, *, square: int = 5, seed: int = 0
                      ) -> np.ndarray:
    """A short video: a bright square bouncing around a dark frame.

    Returns ``frames: (T, size, size) float32`` with values in [0, 1]: the square is 1, the
    background a faint noise. The start position and the velocity come from ``seed``; the
    square bounces off the walls, so where it is next depends on where it was before.
    """
    if not 1 <= square < size:
        raise ValueError(f"square must be between 1 and size - 1, got {square} for size {size}")
    rng = _rng(seed)
    top = size - square
    pos = rng.integers(0, top + 1, 2).astype(np.int64)
    vel = rng.choice([-3, -2, 2, 3], 2)
    frames = (0.1 * rng.random((T, size, size))).astype(np.float32)
    for t in range(T):
        r, c = pos
        frames[t, r : r + square, c : c + square] = 1.0
        for k in range(2):
            nxt = pos[k] + vel[k]
            if nxt < 0 or nxt > top:  # bounce off the wall
                vel[k] = -vel[k]
                nxt = pos[k] + vel[k]
            pos[k] = nxt
    return frames


# ================================================================ lessons 04-06 data sets


# ================================================================ lessons 07-08 data sets
