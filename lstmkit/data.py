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
``windowed_parity``         parity of recent bits (lesson 04)       accuracy 1/2
``cloze_task``              fill a blank from a later cue (05)      accuracy 1/4 (past only)
``tagged_sentences``        a tag per word (lesson 05)              ~0.67 on ambiguous words
``motion_clips``            direction of motion in clips (06)       accuracy 1/4
``moving_glyphs``           next-frame prediction (lesson 06)       ``copy_last_frame_mse``
``load_corpus``             shipped public-domain text (07)         ``unigram_perplexity``
``date_pairs``              dates to ISO format (lesson 07)         exact match ~0
``melodies``                note sequences (lesson 08)              perplexity ~5.6 (unigram)
``captioned_scenes``        images with captions (lesson 08)        see its docstring
==========================  ======================================  =========================

Lessons 04-08 add their generators in sections of their own below, each extending ``__all__``.
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
    if period <= 0:
        raise ValueError(f"period must be positive (steps per cycle), got {period}")
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
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
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

__all__ += ["windowed_parity", "CLOZE_ANSWERS", "CLOZE_CUES", "cloze_vocabulary", "cloze_task", "TAGS",
            "AMBIGUOUS_WORDS", "tagging_vocabulary", "tagged_sentences", "MOTIONS", "motion_clips",
            "DIGIT_FONT", "glyph", "moving_glyphs", "copy_last_frame_mse"]


# ---------------------------------------------------------------- lesson 04: windowed parity


def windowed_parity(n: int, T: int = 40, *, window: int = 3, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Random bits in, the parity (XOR) of the last ``window`` bits out, at every step.

    A many-to-many task that needs a computation on top of a memory: the network must keep
    the last ``window`` bits and combine them with XOR, a function no single weighted sum
    can express. Used in lesson 04 to compare one, two and three stacked LSTM layers.

    Returns ``x: (n, T, 1) float32`` (bits 0.0 / 1.0) and ``y: (n, T) int64``, where
    ``y[:, t]`` is the parity of ``x[:, max(0, t - window + 1) : t + 1]``.

    Baseline: the bits are fair coin flips, so every target is 0 or 1 with probability 1/2
    whatever came before, and a model that does not compute the parity scores 1/2 per step.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    bits = _rng(seed).integers(0, 2, (n, T))
    csum = np.cumsum(bits, axis=1)
    shifted = np.zeros_like(csum)
    shifted[:, window:] = csum[:, :-window] if window < T else 0
    y = ((csum - shifted) % 2).astype(np.int64)
    return bits[..., None].astype(np.float32), y


# ------------------------------------------------------------------ lesson 05: cloze task

#: Words of ``cloze_task``: the answers (what fills the blank), their cues, and the rest.
CLOZE_ANSWERS = ("school", "work", "church", "hospital")
CLOZE_CUES = ("pupils", "office", "choir", "patients")
CLOZE_FILLERS = ("they", "go", "to", "and", "come", "out", "of", "the", "every", "day",
                 "with", "many", "later")
CLOZE_BLANK = "____"


def cloze_vocabulary() -> list[str]:
    """The words behind ``cloze_task``'s token ids: fillers, then cues, then the blank."""
    return [*CLOZE_FILLERS, *CLOZE_CUES, CLOZE_BLANK]


def cloze_task(n: int, T: int = 24, *, distance: int | tuple[int, int] = 4, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill in the blank from a word that comes *later*: "they go to ____ ... pupils ...".

    Each sequence is T filler words with one blank at a random position p and one cue word at
    p + d, d = ``distance`` steps later (an int, or a range (lo, hi) with d drawn uniformly
    from lo .. hi inclusive). The cue decides the answer: cue k ("pupils", "office", ...)
    means answer k ("school", "work", ...). Nothing before the blank says anything about it.

    Token ids: fillers 0 .. 12, cues 13 .. 16, the blank 17 (``cloze_vocabulary``), V = 18.

    Returns ``tokens: (n, T) int64``, ``blank: (n,) int64`` (the blank's position p) and
    ``y: (n,) int64`` (the answer, 0 .. 3, ``CLOZE_ANSWERS``).

    Baseline: answers are uniform and independent of everything up to the blank, so a model
    that reads only the past (a unidirectional LSTM answering at the blank) scores chance,
    1/4. A model that sees d steps ahead can score 1.
    """
    lo, hi = (distance, distance) if isinstance(distance, int) else distance
    if not 1 <= lo <= hi <= T - 1:
        raise ValueError(f"distance must lie in 1 .. T - 1 = {T - 1}, got {distance!r}")
    rng = _rng(seed)
    n_fill, n_cue = len(CLOZE_FILLERS), len(CLOZE_CUES)
    tokens = rng.integers(0, n_fill, (n, T))
    d = rng.integers(lo, hi + 1, n)
    blank = (rng.random(n) * (T - d)).astype(np.int64)  # p in 0 .. T - 1 - d
    y = rng.integers(0, n_cue, n).astype(np.int64)
    rows = np.arange(n)
    tokens[rows, blank] = n_fill + n_cue
    tokens[rows, blank + d] = n_fill + y
    return tokens.astype(np.int64), blank, y


# ----------------------------------------------------- lesson 05: tagged sentences

#: Part-of-speech tags of ``tagged_sentences``, in label order.
TAGS = ("DET", "ADJ", "NOUN", "VERB")
_DETS = ("the", "a", "every")
_ADJS = ("old", "small", "red", "quiet")
_NOUNS = ("dog", "boat", "child", "river")
_VERBS = ("sees", "stops", "likes", "shines")
#: Words that are an adjective before a noun and a noun before a verb ("the light boat" /
#: "the light shines"): only the next word tells which.
AMBIGUOUS_WORDS = ("light", "fast", "cold", "round")
_PAD = "<pad>"


def tagging_vocabulary() -> list[str]:
    """The words behind ``tagged_sentences``'s token ids (id 0 is the padding)."""
    return [_PAD, *_DETS, *_ADJS, *_NOUNS, *_VERBS, *AMBIGUOUS_WORDS]


def tagged_sentences(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sentences from a small grammar with a part-of-speech tag per word.

    Grammar: S -> NP VERB [NP];  NP -> DET ADJ{0..2} NOUN. An adjective or a noun is one of
    ``AMBIGUOUS_WORDS`` with probability 1/2 (1/3 in object noun phrases too), and such a word
    is tagged ADJ when another adjective or a noun follows and NOUN when a verb or the end
    follows: its tag depends on the next word, never on the past.

    Returns ``tokens: (n, 12) int64`` (ids into ``tagging_vocabulary``, 0 = padding after the
    sentence), ``tags: (n, 12) int64`` (index into ``TAGS``, -1 at padding, the
    ``ignore_index`` of ``F.cross_entropy``) and ``ambiguous: (n, 12) bool`` (where the word
    is one of ``AMBIGUOUS_WORDS``).

    Baseline: on the unambiguous words the tag follows from the word alone (accuracy 1); on
    the ambiguous ones a model that reads only the past can do no better than guess from the
    left context, about 0.67 (measured on 20,000 sentences in the tests: the majority tag
    given the number of words since the determiner); a model that also reads the next word
    can reach 1.
    """
    rng = _rng(seed)
    vocab = {w: i for i, w in enumerate(tagging_vocabulary())}
    L = 12
    tokens = np.zeros((n, L), dtype=np.int64)
    tags = np.full((n, L), -1, dtype=np.int64)

    def pick(words):
        return words[int(rng.integers(len(words)))]

    for s in range(n):
        sent: list[tuple[str, int]] = []
        for role in ("subject", "object"):
            if role == "object":
                sent.append((pick(_VERBS), 3))
                if rng.random() < 0.5:
                    break
            sent.append((pick(_DETS), 0))
            for _ in range(int(rng.integers(0, 3))):
                sent.append((pick(AMBIGUOUS_WORDS) if rng.random() < 0.5 else pick(_ADJS), 1))
            sent.append((pick(AMBIGUOUS_WORDS) if rng.random() < 0.5 else pick(_NOUNS), 2))
        for t, (word, tag) in enumerate(sent):
            tokens[s, t] = vocab[word]
            tags[s, t] = tag
    ambiguous = np.isin(tokens, [vocab[w] for w in AMBIGUOUS_WORDS])
    return tokens, tags, ambiguous


# ------------------------------------------------- lesson 06: motion clips and glyphs

#: Directions of ``motion_clips``, in label order, as (row, column) steps per frame.
MOTIONS = ("up", "down", "left", "right")
_MOTION_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def motion_clips(n: int, T: int = 8, size: int = 16, *, blob: int = 3, speed: int = 1,
                 noise: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Short clips of a square moving in a straight line: classify the direction.

    A ``blob`` x ``blob`` square of brightness 1 starts at a uniformly random position and
    moves ``speed`` pixels per frame up, down, left or right (``MOTIONS``). The frame wraps
    around like a torus (a square leaving on the right comes back on the left), so the square's
    position in any single frame is uniform whatever the direction. Gaussian noise of standard
    deviation ``noise`` is added to every pixel.

    Returns ``x: (n, T, 1, size, size) float32`` (batch, time, channel, height, width, the
    layout of a batch-first ConvLSTM) and ``y: (n,) int64`` in {0, 1, 2, 3}.

    Baseline: the four directions are equally likely and every single frame is independent of
    the direction, so a model that sees one frame (any one) scores 1/4; the direction is only
    in the change from frame to frame.
    """
    if not 1 <= blob < size:
        raise ValueError(f"blob must be between 1 and size - 1, got {blob} for size {size}")
    rng = _rng(seed)
    y = rng.integers(0, len(MOTIONS), n).astype(np.int64)
    start = rng.integers(0, size, (n, 2))
    x = noise * rng.standard_normal((n, T, 1, size, size))
    square = np.zeros((size, size))
    square[:blob, :blob] = 1.0
    for s in range(n):
        dr, dc = _MOTION_STEPS[y[s]]
        for t in range(T):
            shift = (start[s, 0] + dr * speed * t, start[s, 1] + dc * speed * t)
            x[s, t, 0] += np.roll(square, shift, axis=(0, 1))
    return x.astype(np.float32), y


#: A 5 x 7 bitmap font for the digits 0-9, drawn for this project ("#" = ink).
DIGIT_FONT = {
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
}


def glyph(char: str, scale: int = 1) -> np.ndarray:
    """The bitmap of one digit from ``DIGIT_FONT``: ``(7 scale, 5 scale) float32`` of 0 / 1."""
    if char not in DIGIT_FONT:
        raise ValueError(f"char must be one of the digits '0' .. '9' (DIGIT_FONT), got {char!r}")
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    rows = DIGIT_FONT[char]
    bitmap = np.array([[ch == "#" for ch in row] for row in rows], dtype=np.float32)
    return np.kron(bitmap, np.ones((scale, scale), dtype=np.float32))


def moving_glyphs(n: int, T: int = 10, size: int = 32, *, n_glyphs: int = 1, scale: int = 2,
                  max_speed: int = 2, seed: int = 0) -> np.ndarray:
    """A Moving-MNIST-like data set: digits from ``DIGIT_FONT`` bouncing in a square frame.

    Each clip shows ``n_glyphs`` random digits, each ``glyph(d, scale)`` (14 x 10 pixels at
    scale 2), starting at a random position with a random velocity of 1 .. ``max_speed``
    pixels per frame in each direction (random signs); a digit bounces off the walls.
    Overlapping digits combine by maximum, so pixels stay in [0, 1].

    Returns ``frames: (n, T, 1, size, size) float32`` (batch, time, channel, height, width).

    Baseline for next-frame prediction: copy the last frame (``copy_last_frame_mse``). Its
    error is the pixels that changed; a model must beat it to have learned any motion.
    """
    rng = _rng(seed)
    h, w = 7 * scale, 5 * scale
    if h >= size or w >= size:
        raise ValueError(f"glyphs of {h} x {w} pixels do not fit a {size} x {size} frame")
    # A digit that hits a wall moves back by its speed: from anywhere within the free room
    # of size - h pixels, that lands inside the frame while 2 * speed <= size - h + 1.
    if not 1 <= max_speed <= (size - h + 1) // 2:
        raise ValueError(f"max_speed must be between 1 and {(size - h + 1) // 2} for glyphs of {h} x {w} "
                         f"pixels in a {size} x {size} frame, got {max_speed}")
    frames = np.zeros((n, T, 1, size, size), dtype=np.float32)
    for s in range(n):
        for _ in range(n_glyphs):
            g = glyph(str(int(rng.integers(10))), scale)
            pos = np.array([rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)])
            vel = rng.integers(1, max_speed + 1, 2) * rng.choice([-1, 1], 2)
            top = np.array([size - h, size - w])
            for t in range(T):
                r, c = pos
                np.maximum(frames[s, t, 0, r:r + h, c:c + w], g, out=frames[s, t, 0, r:r + h, c:c + w])
                nxt = pos + vel
                for k in range(2):
                    if nxt[k] < 0 or nxt[k] > top[k]:  # bounce off the wall
                        vel[k] = -vel[k]
                        nxt[k] = pos[k] + vel[k]
                pos = nxt
    return frames


def copy_last_frame_mse(frames: np.ndarray) -> float:
    """MSE of predicting every frame t >= 1 of ``frames: (n, T, ...)`` by frame t - 1."""
    frames = np.asarray(frames, dtype=np.float64)
    return float(np.mean((frames[:, 1:] - frames[:, :-1]) ** 2))


# ================================================================ lessons 07-08 data sets

__all__ += [
    "CORPORA",
    "load_corpus",
    "corpus_split",
    "char_windows",
    "unigram_perplexity",
    "DATE_PAD",
    "DATE_START",
    "DATE_TARGET_LEN",
    "date_pairs",
    "date_vocabularies",
    "encode_dates",
    "decode_dates",
]

# ----------------------------------------------------- lesson 07: a text corpus, dates

#: The texts shipped in ``lstmkit/assets`` (see its README.md for sources and licences).
CORPORA = {"genesis": "genesis_kjv.txt"}


def load_corpus(name: str = "genesis") -> str:
    """A public-domain text shipped with the package, read with ``importlib.resources``.

    "genesis": the Book of Genesis in the King James Version (translated 1611; modern standard
    spelling), one verse per line as ``chapter:verse text`` (205,331 characters, 1,533 lines,
    70 distinct characters).
    """
    from importlib import resources

    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; available: {', '.join(CORPORA)}")
    return resources.files("lstmkit").joinpath("assets", CORPORA[name]).read_text(encoding="utf-8")


def corpus_split(text: str, test_fraction: float = 0.1) -> tuple[str, str]:
    """Split a text into a training part and a held-out end, cut at a line break.

    Returns ``(train, test)`` with ``train + test == text``; the test part is the last
    ``test_fraction`` of the text, moved forward to the start of a line.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    cut = int(len(text) * (1 - test_fraction))
    newline = text.find("\n", cut)
    cut = cut if newline < 0 else newline + 1
    return text[:cut], text[cut:]


def char_windows(ids: np.ndarray, n: int, length: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random windows of a token sequence for next-token prediction.

    ids: (L,) int token ids (e.g. from ``encode_text``). Returns ``x, y: (n, length) int64``
    where y is x shifted one step ahead: ``y[k, t]`` is the token that follows ``x[k, t]``.

    Baseline: a model that ignores the context and predicts the characters' frequencies
    scores the unigram perplexity (``unigram_perplexity``, about 23 for ``load_corpus()``);
    guessing uniformly over V characters scores V.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if length < 1 or len(ids) < length + 1:
        raise ValueError(f"need 1 <= length < len(ids), got length={length} for {len(ids)} ids")
    starts = _rng(seed).integers(0, len(ids) - length, n)
    idx = starts[:, None] + np.arange(length)[None, :]
    return ids[idx], ids[idx + 1]


def unigram_perplexity(train_ids: np.ndarray, test_ids: np.ndarray, vocab_size: int) -> float:
    """Perplexity on ``test_ids`` of the context-free model p(c) = frequency of c in ``train_ids``.

    Add-one smoothing, so unseen characters get a small probability. Perplexity is
    exp(mean negative log-likelihood per character): the number of equally likely choices a
    model is as unsure as. A language model has to beat this number to have learnt anything
    beyond letter frequencies.
    """
    counts = np.bincount(np.asarray(train_ids), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[np.asarray(test_ids)].mean()))


#: Padding id of both date vocabularies (index 0), and the decoder's start token.
DATE_PAD, DATE_START = "_", "^"
#: Length of an ISO date, YYYY-MM-DD: the decoder always writes this many characters.
DATE_TARGET_LEN = 10
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _ordinal(d: int) -> str:
    suffix = "th" if 11 <= d % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suffix}"


_DATE_FORMATS = (
    lambda d, m, y, w: f"{d} {_MONTHS[m]} {y}",               # 3 March 1987
    lambda d, m, y, w: f"{_MONTHS[m]} {d}, {y}",              # March 3, 1987
    lambda d, m, y, w: f"{d} {_MONTHS[m][:3]} {y}",           # 3 Mar 1987
    lambda d, m, y, w: f"{_MONTHS[m][:3].lower()} {d} {y}",   # mar 3 1987
    lambda d, m, y, w: f"{_WEEKDAYS[w]}, {_MONTHS[m]} {d}, {y}",  # Tuesday, March 3, 1987
    lambda d, m, y, w: f"the {_ordinal(d)} of {_MONTHS[m]} {y}",  # the 3rd of March 1987
    lambda d, m, y, w: f"{d:02d}.{m + 1:02d}.{y}",            # 03.03.1987 (day first)
    lambda d, m, y, w: f"{_MONTHS[m].upper()} {d} {y}",       # MARCH 3 1987
)


def date_pairs(n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """Dates written by humans, and their ISO 8601 form: a toy translation task.

    Dates are drawn uniformly from 1950-01-01 to 2049-12-31 and written in one of eight
    formats, e.g. "3 March 1987", "Tuesday, March 3, 1987", "the 3rd of March 1987",
    "03.03.1987" (day first). Returns a list of n ``(human, iso)`` pairs, iso = "1987-03-03".

    Baseline: the target has 10 characters; always answering the most common date of the
    training set is right for about 1 date in 36,500, so exact-match accuracy starts at 0.
    """
    import datetime

    rng = _rng(seed)
    first = datetime.date(1950, 1, 1).toordinal()
    last = datetime.date(2049, 12, 31).toordinal()
    days = rng.integers(first, last + 1, n)
    fmts = rng.integers(0, len(_DATE_FORMATS), n)
    pairs = []
    for day, k in zip(days, fmts, strict=True):
        d = datetime.date.fromordinal(int(day))
        pairs.append((_DATE_FORMATS[k](d.day, d.month - 1, d.year, d.weekday()), d.isoformat()))
    return pairs


def date_vocabularies() -> tuple[list[str], list[str]]:
    """(source, target) vocabularies of ``encode_dates``: lists of characters, index = token id.

    Both start with the padding character ``DATE_PAD`` (id 0); the target vocabulary has the
    start token ``DATE_START`` (id 1), then "-" and the digits.
    """
    chars = set("0123456789 ,.")
    for m in _MONTHS + _WEEKDAYS:
        chars |= set(m) | set(m.lower()) | set(m.upper())
    chars |= set("thestndrdof")
    return [DATE_PAD, *sorted(chars)], [DATE_PAD, DATE_START, "-", *"0123456789"]


def encode_dates(pairs: list[tuple[str, str]], *, src_len: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Token ids for ``date_pairs``: returns ``src: (n, src_len)`` and ``tgt: (n, 11)``, int64.

    The source is left-padded with id 0, so every sentence ends at the encoder's last step.
    The target is the start token followed by the 10 characters of the ISO date: feed
    ``tgt[:, :-1]`` to the decoder and predict ``tgt[:, 1:]`` (teacher forcing).
    """
    src_vocab, tgt_vocab = date_vocabularies()
    s_index = {c: i for i, c in enumerate(src_vocab)}
    t_index = {c: i for i, c in enumerate(tgt_vocab)}
    src = np.zeros((len(pairs), src_len), dtype=np.int64)
    tgt = np.zeros((len(pairs), DATE_TARGET_LEN + 1), dtype=np.int64)
    for r, (human, iso) in enumerate(pairs):
        if len(human) > src_len:
            raise ValueError(f"{human!r} is longer than src_len={src_len}")
        src[r, src_len - len(human):] = [s_index[c] for c in human]
        tgt[r] = [t_index[DATE_START], *(t_index[c] for c in iso)]
    return src, tgt


def decode_dates(ids: np.ndarray) -> list[str]:
    """Target token ids (n, L) back to strings (the start token and padding dropped)."""
    _, tgt_vocab = date_vocabularies()
    skip = {0, 1}
    return ["".join(tgt_vocab[int(i)] for i in row if int(i) not in skip) for row in np.atleast_2d(ids)]

__all__ += [
    "MELODY_REST",
    "MELODY_HOLD",
    "MELODY_PITCHES",
    "MELODY_STEPS_PER_BAR",
    "melody_token_names",
    "melodies",
    "melody_notes",
    "synthesize_melody",
    "SCENE_COLORS",
    "SCENE_SHAPES",
    "CAPTION_LEN",
    "caption_vocabulary",
    "captioned_scenes",
    "decode_captions",
]

# -------------------------------------------------------------------- lesson 08: melodies

#: Token ids of a melody grid: a rest, "hold the previous note", then one id per pitch.
MELODY_REST, MELODY_HOLD = 0, 1
#: The pitches (MIDI note numbers) of ``melodies``: two octaves of C major, C4 (60) to C6 (84).
MELODY_PITCHES = (60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79, 81, 83, 84)
#: A melody is a grid of eighth notes: 8 steps per bar of 4/4.
MELODY_STEPS_PER_BAR = 8
_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Rhythms of one bar, in eighth notes; the last bar of a phrase uses _CADENCES.
_RHYTHMS = ((2, 2, 2, 2), (1, 1, 2, 2, 2), (2, 1, 1, 2, 2), (2, 2, 1, 1, 2), (4, 2, 2), (2, 2, 4),
            (3, 1, 2, 2), (1, 1, 1, 1, 2, 2))
_CADENCES = ((2, 2, 4), (4, 4), (2, 6), (8,))
# Melodic motion in scale degrees, and how likely each is.
_STEPS = (-2, -1, 1, 2, 0, 3, -3, 4)
_STEP_P = (0.12, 0.22, 0.22, 0.12, 0.14, 0.08, 0.06, 0.04)


def melody_token_names() -> list[str]:
    """Names of the melody tokens, index = id: "rest", "hold", then "C4", "D4", ..., "C6"."""
    return ["rest", "hold", *(f"{_NOTE_NAMES[p % 12]}{p // 12 - 1}" for p in MELODY_PITCHES)]


def _phrase(rng, bars: int, start: int) -> list[int]:
    """One phrase as scale degrees (index into MELODY_PITCHES) per eighth note, -1 = hold/rest."""
    grid: list[int] = []
    deg = start
    for bar in range(bars):
        last = bar == bars - 1
        rhythm = _CADENCES[rng.integers(len(_CADENCES))] if last else _RHYTHMS[rng.integers(len(_RHYTHMS))]
        for k, dur in enumerate(rhythm):
            if last and k == len(rhythm) - 1:
                deg = 7 * int(round(deg / 7))  # end on the nearest tonic: C4, C5 or C6
            else:
                step = _STEPS[rng.choice(len(_STEPS), p=_STEP_P)]  # mostly steps, a few leaps
                deg = int(np.clip(deg + step, 0, len(MELODY_PITCHES) - 1))
            grid.append(deg)
            grid.extend([-1] * (dur - 1))
    return grid


def melodies(n: int, *, bars: int = 8, seed: int = 0) -> np.ndarray:
    """Melodies from a simple grammar: AABA' form, stepwise motion, cadences on the tonic.

    Each melody has ``bars`` bars of 4/4 (a multiple of 4) on a grid of eighth notes: phrase A
    (bars/4 bars) is drawn as a random walk on the C major scale (mostly steps of one or two
    scale degrees) with rhythms from a small set of one-bar patterns, ending on a long tonic;
    then A again, a new phrase B, and A once more with its last bar redrawn (A').

    Returns ``tokens: (n, bars * 8) int64``: ``MELODY_REST`` (0), ``MELODY_HOLD`` (1: the note
    before goes on) or 2 + k for pitch ``MELODY_PITCHES[k]`` (``melody_token_names`` names them).
    A note is one pitch token followed by its hold tokens.

    Baseline for next-token prediction: token frequencies (``unigram_perplexity``) score a
    perplexity of about 5.6; bars 3-4 and bar 7 (24 of the 64 steps) repeat bars 1-2 and
    bar 1 exactly, which a model with a memory can learn to use.
    """
    if bars < 4 or bars % 4:
        raise ValueError(f"bars must be a positive multiple of 4, got {bars}")
    rng = _rng(seed)
    pb = bars // 4
    out = np.empty((n, bars * MELODY_STEPS_PER_BAR), dtype=np.int64)
    for r in range(n):
        a = _phrase(rng, pb, int(rng.integers(2, 10)))
        b = _phrase(rng, pb, int(rng.integers(4, 12)))
        a_end = _phrase(rng, 1, a[-MELODY_STEPS_PER_BAR * 2] if a[-MELODY_STEPS_PER_BAR * 2] >= 0 else 4)
        grid = a + a + b + a[:-MELODY_STEPS_PER_BAR] + a_end
        out[r] = [MELODY_HOLD if d < 0 else 2 + d for d in grid]
    return out


def melody_notes(tokens) -> list[tuple[int | None, int, int]]:
    """A token grid (T,) as notes: a list of ``(midi_pitch or None for a rest, start, steps)``."""
    tokens = np.asarray(tokens)
    V = 2 + len(MELODY_PITCHES)
    if tokens.ndim != 1 or tokens.size and not (0 <= tokens.min() and tokens.max() < V):
        got = f" with ids {int(tokens.min())} .. {int(tokens.max())}" if tokens.size else ""
        raise ValueError(f"tokens must be a 1-D grid of token ids 0 .. {V - 1} (melody_token_names), "
                         f"got shape {tokens.shape}{got}")
    notes: list[list] = []
    for t, tok in enumerate(tokens.tolist()):
        if tok == MELODY_HOLD and notes:
            notes[-1][2] += 1
        elif tok == MELODY_HOLD or tok == MELODY_REST:
            notes.append([None, t, 1])
        else:
            notes.append([MELODY_PITCHES[tok - 2], t, 1])
    return [tuple(x) for x in notes]


def synthesize_melody(tokens, *, rate: int = 8000, step_seconds: float = 0.15) -> np.ndarray:
    """A token grid as audio: one decaying sine (plus a soft octave) per note; no synthesiser.

    Returns ``wave: (T * step_seconds * rate,) float32`` in [-1, 1]; play it in a notebook
    with ``IPython.display.Audio(wave, rate=rate)``. Rests are silent.
    """
    steps = len(np.asarray(tokens))
    step = int(round(step_seconds * rate))
    wave = np.zeros(steps * step, dtype=np.float64)
    for pitch, start, dur in melody_notes(tokens):
        if pitch is None:
            continue
        n = dur * step
        t = np.arange(n) / rate
        f = 440.0 * 2 ** ((pitch - 69) / 12)
        env = np.exp(-3.0 * t) * np.minimum(1.0, np.arange(n) / (0.01 * rate))  # attack, decay
        env *= np.minimum(1.0, (n - np.arange(n)) / (0.02 * rate))  # release: no clicks
        tone = np.sin(2 * np.pi * f * t)
        if 2 * f < rate / 2:  # a soft octave above, where the sample rate can carry it
            tone += 0.3 * np.sin(4 * np.pi * f * t)
        wave[start * step:start * step + n] += env * tone
    peak = np.abs(wave).max()
    return (wave / peak * 0.9 if peak > 0 else wave).astype(np.float32)


# ------------------------------------------------------- lesson 08: captioned scenes

#: Colours (name -> RGB) and shapes of ``captioned_scenes``.
SCENE_COLORS = {"red": (0.9, 0.15, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.3, 0.95),
                "yellow": (0.95, 0.85, 0.1)}
SCENE_SHAPES = ("circle", "square", "triangle")
#: Tokens per caption: <start>, up to 8 words, <end> (padded with <pad> after <end>).
CAPTION_LEN = 10


def caption_vocabulary() -> list[str]:
    """The caption words, index = token id: "<pad>", "<start>", "<end>", then the words."""
    return ["<pad>", "<start>", "<end>", "a", *SCENE_COLORS, *SCENE_SHAPES, "left", "of", "above"]


def _shape_mask(shape: str, size: int, r: int, c: int, s: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = r + (s - 1) / 2, c + (s - 1) / 2
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= (s / 2) ** 2
    if shape == "square":
        return (yy >= r) & (yy < r + s) & (xx >= c) & (xx < c + s)
    # triangle, apex up: the half-width grows linearly from the top row to the bottom row
    half = (yy - r + 1) / s * (s / 2)
    return (yy >= r) & (yy < r + s) & (np.abs(xx - cx) <= half)


_SCENE_OBJECT_PIXELS = (10, 13)  # the sides of a scene's shapes, smallest and largest


def captioned_scenes(n: int, *, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Small images of two coloured shapes, each with a caption such as "a red circle left of
    a blue square".

    Two objects (colour from ``SCENE_COLORS``, shape from ``SCENE_SHAPES``, not both the same)
    of 10 to 13 pixels are placed without overlap on a dark, slightly noisy background. The
    caption names the left object first with "left of" when they are further apart across
    than up and down, otherwise the upper object first with "above", so every scene has
    exactly one correct caption.

    Returns ``images: (n, 3, size, size) float32`` in [0, 1] (channels first, as torch's Conv2d
    wants; ``size`` >= 27, room for both shapes side by side) and
    ``captions: (n, CAPTION_LEN) int64`` token ids (``caption_vocabulary``):
    <start>, the words, <end>, then <pad>. ``decode_captions`` turns ids back into text.

    Baseline: a caption has 5 free choices (two colours, two shapes, the relation), about
    1,000 combinations; guessing the most common word at each slot gets every choice right
    with probability under 1/500.
    """
    small, large = _SCENE_OBJECT_PIXELS
    if size < 2 * large + 1:  # two of the largest shapes, a pixel apart, must fit side by side
        raise ValueError(f"size must be at least {2 * large + 1} pixels, got {size}")
    rng = _rng(seed)
    vocab = {w: i for i, w in enumerate(caption_vocabulary())}
    colors = list(SCENE_COLORS)
    images = (0.08 * rng.random((n, 3, size, size))).astype(np.float32)
    captions = np.zeros((n, CAPTION_LEN), dtype=np.int64)
    for k in range(n):
        while True:
            objs = [(colors[rng.integers(4)], SCENE_SHAPES[rng.integers(3)],
                     int(rng.integers(small, large + 1))) for _ in range(2)]
            if objs[0][:2] == objs[1][:2]:
                continue
            pos = [(int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))) for *_, s in objs]
            (r0, c0), (r1, c1) = pos
            s0, s1 = objs[0][2], objs[1][2]
            if r0 + s0 + 1 <= r1 or r1 + s1 + 1 <= r0 or c0 + s0 + 1 <= c1 or c1 + s1 + 1 <= c0:
                break  # the bounding boxes do not touch
        centres = [(r + s / 2, c + s / 2) for (r, c), (*_, s) in zip(pos, objs, strict=True)]
        for (color, shape, s), (r, c) in zip(objs, pos, strict=True):
            mask = _shape_mask(shape, size, r, c, s)
            images[k][:, mask] = np.array(SCENE_COLORS[color], dtype=np.float32)[:, None]
        dy, dx = centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]
        if abs(dx) >= abs(dy):
            (a, b), rel = (0, 1) if dx > 0 else (1, 0), ["left", "of"]
        else:
            (a, b), rel = (0, 1) if dy > 0 else (1, 0), ["above"]
        words = ["a", objs[a][0], objs[a][1], *rel, "a", objs[b][0], objs[b][1]]
        ids = [vocab["<start>"], *(vocab[w] for w in words), vocab["<end>"]]
        captions[k, :len(ids)] = ids
    return images, captions


def decode_captions(ids) -> list[str]:
    """Caption token ids (n, L) to text, stopping at <end> and leaving out <start> and <pad>."""
    vocab = caption_vocabulary()
    out = []
    for row in np.atleast_2d(np.asarray(ids)):
        words = []
        for i in row.tolist():
            if vocab[i] == "<end>":
                break
            if vocab[i] not in ("<pad>", "<start>"):
                words.append(vocab[i])
        out.append(" ".join(words))
    return out
