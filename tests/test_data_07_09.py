"""Lessons 07-09: the shipped corpus, the new data generators, the temperature sampler and
the new plots.

The corpus must load from the *installed* package through ``importlib.resources``; one test
builds a wheel and looks inside it, so a packaging mistake (an asset left out of
``package-data``) fails here rather than on a learner's machine.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import assert_deterministic
from matplotlib.figure import Figure  # noqa: E402

from lstmkit import data, viz, widgets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------- shipped data


def test_corpus_loads_through_importlib_resources():
    text = data.load_corpus()
    expected = resources.files("lstmkit").joinpath("assets", "genesis_kjv.txt").read_text(encoding="utf-8")
    assert text == expected
    assert text.startswith("1:1 In the beginning God created the heaven and the earth.\n")
    assert len(text) == 205_331 and text.count("\n") == 1533
    assert len(set(text)) == 70
    with pytest.raises(ValueError, match="unknown corpus"):
        data.load_corpus("shakespeare")


def test_shipped_data_is_small_and_documented():
    assets = resources.files("lstmkit").joinpath("assets")
    files = [f for f in assets.iterdir() if f.is_file()]
    assert sum(len(f.read_bytes()) for f in files) < 2_000_000
    readme = assets.joinpath("README.md").read_text(encoding="utf-8")
    for name in data.CORPORA.values():
        assert name in readme
    assert "public domain" in readme and "bible-kjv-text" in readme


@pytest.mark.slow
def test_wheel_ships_the_corpus(tmp_path):
    """Build the wheel the way pip would and check the corpus is inside it.

    The build runs on a copy of the package, so no build/ folder is left in the checkout.
    """
    src = tmp_path / "src"
    shutil.copytree(ROOT / "lstmkit", src / "lstmkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("lstmkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lstmkit/assets/genesis_kjv.txt" in names
    assert "lstmkit/assets/README.md" in names
    # Install the wheel into a folder of its own and load the corpus from there, away from the
    # source tree (a checkout's lstmkit/ must not be what answers).
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    code = ("import lstmkit, lstmkit.data as d; print(lstmkit.__file__); "
            "print(len(d.load_corpus()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    where, length = proc.stdout.split()
    assert Path(where).is_relative_to(site) and int(length) == 205_331


# ----------------------------------------------------------------- lesson 07: text


def test_corpus_split_cuts_at_a_line_break():
    text = data.load_corpus()
    train, test = data.corpus_split(text, 0.1)
    assert train + test == text
    assert train.endswith("\n") and re.match(r"\d+:\d+ ", test)
    assert 0.09 < len(test) / len(text) < 0.11
    with pytest.raises(ValueError):
        data.corpus_split(text, 1.5)


def test_char_windows_shapes_shift_and_seed():
    ids = np.arange(1000) % 37
    x, y = data.char_windows(ids, 16, 20, seed=3)
    assert x.shape == y.shape == (16, 20) and x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x one step ahead
    assert ((y - x) % 37 == 1).all()
    assert_deterministic(lambda s: data.char_windows(ids, 8, 10, seed=s))
    with pytest.raises(ValueError):
        data.char_windows(ids[:5], 2, 10)


def test_unigram_perplexity():
    V = 5
    uniform = np.repeat(np.arange(V), 100)
    assert data.unigram_perplexity(uniform, uniform, V) == pytest.approx(V)
    text = data.load_corpus()
    ids, vocab = data.encode_text(text)
    train, _ = data.corpus_split(text)
    ppl = data.unigram_perplexity(ids[:len(train)], ids[len(train):], len(vocab))
    assert 21 < ppl < 25  # the docstring's "about 23"


# ---------------------------------------------------------------- lesson 07: dates


def test_date_pairs_are_correct_translations():
    pairs = data.date_pairs(400, seed=0)
    assert len(pairs) == 400
    months = {m.lower()[:3]: k + 1 for k, m in enumerate(data._MONTHS)}
    for human, iso in pairs:
        d = datetime.date.fromisoformat(iso)
        assert 1950 <= d.year <= 2049
        assert str(d.year) in human
        if re.fullmatch(r"\d\d\.\d\d\.\d{4}", human):
            assert human == f"{d.day:02d}.{d.month:02d}.{d.year}"
        else:
            words = re.findall(r"[A-Za-z]+", human)
            assert any(months.get(w.lower()[:3]) == d.month and len(w) >= 3 for w in words), human
            assert re.search(rf"\b{d.day}(st|nd|rd|th)?\b", human), human
    assert len({re.sub(r"\d", "9", h) for h, _ in pairs}) > 8  # all eight styles, several lengths
    assert data.date_pairs(5, seed=1) == data.date_pairs(5, seed=1) != data.date_pairs(5, seed=2)


def test_encode_and_decode_dates():
    pairs = data.date_pairs(300, seed=4)
    src, tgt = data.encode_dates(pairs)
    src_vocab, tgt_vocab = data.date_vocabularies()
    assert src.shape == (300, 32) and tgt.shape == (300, data.DATE_TARGET_LEN + 1)
    assert src.dtype == tgt.dtype == np.int64
    assert src_vocab[0] == tgt_vocab[0] == data.DATE_PAD and tgt_vocab[1] == data.DATE_START
    assert (tgt[:, 0] == 1).all()
    assert data.decode_dates(tgt) == [iso for _, iso in pairs]
    for row, (human, _) in zip(src, pairs, strict=True):  # left-padded: the text ends the row
        assert "".join(src_vocab[i] for i in row).lstrip(data.DATE_PAD) == human
        assert row[-1] != 0
    with pytest.raises(ValueError, match="longer"):
        data.encode_dates([("x" * 40, "2000-01-01")])


# ------------------------------------------------------------- lesson 08: melodies


def test_melodies_shape_tokens_and_form():
    m = data.melodies(50, seed=0)
    names = data.melody_token_names()
    assert m.shape == (50, 64) and m.dtype == np.int64
    assert len(names) == 2 + len(data.MELODY_PITCHES) and names[2] == "C4" and names[-1] == "C6"
    assert m.min() >= 0 and m.max() < len(names)
    assert (m[:, 0] >= 2).all()  # every melody starts with a note
    np.testing.assert_array_equal(m[:, 16:32], m[:, :16])  # A A B A'
    np.testing.assert_array_equal(m[:, 48:56], m[:, :8])
    for row in m:
        last = [n for n in data.melody_notes(row) if n[0] is not None][-1]
        assert last[0] % 12 == 0  # ends on a C
    assert_deterministic(lambda s: data.melodies(10, seed=s))
    assert data.melodies(3, bars=12).shape == (3, 96)
    with pytest.raises(ValueError):
        data.melodies(3, bars=6)


def test_melody_notes_and_audio():
    tokens = np.array([2, 1, 1, 0, 4, 1, 9, 1])
    assert data.melody_notes(tokens) == [(60, 0, 3), (None, 3, 1), (64, 4, 2), (72, 6, 2)]
    notes = data.melody_notes(data.melodies(1, seed=3)[0])
    assert sum(d for _, _, d in notes) == 64
    wave = data.synthesize_melody(tokens, rate=4000, step_seconds=0.1)
    assert wave.shape == (8 * 400,) and wave.dtype == np.float32
    assert np.abs(wave).max() == pytest.approx(0.9, abs=1e-6)
    assert np.abs(wave[3 * 400:4 * 400]).max() < 1e-6  # the rest is silent
    spectrum = np.abs(np.fft.rfft(wave[:1200]))  # the first note, C4 = 261.6 Hz
    assert abs(np.argmax(spectrum) * 4000 / 1200 - 261.6) < 4
    for bad in ([2, 17], [-1, 2], [[2, 1]]):  # -1 used to be read as the third-last pitch
        with pytest.raises(ValueError, match="token ids 0 .. 16"):
            data.melody_notes(bad)


# --------------------------------------------------------- lesson 08: captioned scenes


def test_captioned_scenes_shapes_and_captions():
    images, captions = data.captioned_scenes(60, seed=0)
    vocab = data.caption_vocabulary()
    assert images.shape == (60, 3, 32, 32) and images.dtype == np.float32
    assert captions.shape == (60, data.CAPTION_LEN) and captions.dtype == np.int64
    assert 0 <= images.min() and images.max() <= 1
    assert (captions[:, 0] == vocab.index("<start>")).all()
    pattern = re.compile(r"a (\w+) (circle|square|triangle) (left of|above) a (\w+) (circle|square|triangle)")
    for img, text in zip(images, data.decode_captions(captions), strict=True):
        match = pattern.fullmatch(text)
        assert match, text
        c1, s1, rel, c2, s2 = match.groups()
        assert (c1, s1) != (c2, s2)
        # both named colours are painted somewhere, the first one on the named side
        where = {}
        for c in (c1, c2):
            rgb = np.array(data.SCENE_COLORS[c], dtype=np.float32)[:, None, None]
            mask = np.all(np.abs(img - rgb) < 1e-6, axis=0)
            assert mask.sum() > 20, (text, c)
            where[c] = np.argwhere(mask).mean(0)
        if c1 != c2:
            axis = 1 if rel == "left of" else 0
            assert where[c1][axis] < where[c2][axis], text
    assert_deterministic(lambda s: data.captioned_scenes(5, seed=s))


def test_captioned_scenes_refuse_a_frame_too_small_for_two_shapes():
    # (below 27 pixels the placement of the two shapes used to retry forever)
    assert data.captioned_scenes(30, size=27)[0].shape == (30, 3, 27, 27)
    with pytest.raises(ValueError, match="size must be at least 27"):
        data.captioned_scenes(1, size=26)


def test_decode_captions_stops_at_end():
    vocab = data.caption_vocabulary()
    ids = [vocab.index(w) for w in ["<start>", "a", "red", "circle", "<end>", "a", "<pad>"]]
    assert data.decode_captions(np.array(ids)) == ["a red circle"]


# --------------------------------------------------------------- the sampler widget


def test_softmax_temperature():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    p1 = widgets.softmax_temperature(logits, 1.0)
    np.testing.assert_allclose(p1, np.exp(logits) / np.exp(logits).sum())
    entropy = lambda p: -(p * np.log(p + 1e-300)).sum()
    assert entropy(widgets.softmax_temperature(logits, 0.5)) < entropy(p1) < entropy(
        widgets.softmax_temperature(logits, 2.0))
    np.testing.assert_array_equal(widgets.softmax_temperature(logits, 0.0), [1, 0, 0, 0])
    big = widgets.softmax_temperature(np.array([1000.0, 0.0]), 0.01)  # no overflow
    assert np.isfinite(big).all() and big[0] == 1.0
    batch = widgets.softmax_temperature(np.zeros((3, 5)), 1.0)
    np.testing.assert_allclose(batch.sum(-1), 1.0)
    with pytest.raises(ValueError, match="temperature must be 0"):
        widgets.softmax_temperature(logits, -0.5)


def _counting_model(V=5):
    """A toy next-token model: strongly prefers (token + 1) % V; the state counts the steps."""
    def step(tok, state):
        logits = np.zeros(V)
        logits[(tok + 1) % V] = 5.0
        return logits, (state or 0) + 1
    return step


def test_sample_sequence_greedy_seeded_and_fed_back():
    step = _counting_model()
    assert widgets.sample_sequence(step, [0], 7, temperature=0) == [1, 2, 3, 4, 0, 1, 2]
    a = widgets.sample_sequence(step, [3, 4], 50, temperature=1.5, seed=1)
    assert a == widgets.sample_sequence(step, [3, 4], 50, temperature=1.5, seed=1)
    assert a != widgets.sample_sequence(step, [3, 4], 50, temperature=1.5, seed=2)
    hot = widgets.sample_sequence(step, [0], 300, temperature=3.0, seed=0)
    cold = widgets.sample_sequence(step, [0], 300, temperature=0.3, seed=0)
    follows = lambda seq: np.mean([(b - a) % 5 == 1 for a, b in zip([0, *seq], seq, strict=False)])
    assert follows(cold) > 0.99 > follows(hot)
    with pytest.raises(ValueError):
        widgets.sample_sequence(step, [], 3)


def test_temperature_sampler_callback():
    calls = []

    def generate(temperature, seed):
        calls.append((temperature, seed))
        return f"T={temperature:.1f} seed={seed} <b>"

    sampler = widgets.TemperatureSampler(generate, temperature=0.8)
    assert calls == [(0.8, 0)] and sampler.text == "T=0.8 seed=0 <b>"
    sampler.controls["temperature"].value = 1.5  # fires the observer synchronously
    assert calls[-1] == (1.5, 0) and sampler.text.startswith("T=1.5")
    sampler.controls["seed"].value = 7
    assert calls[-1] == (1.5, 7)
    assert "&lt;b&gt;" in sampler.html.value and "temperature 1.5" in sampler.html.value
    assert "application/vnd.jupyter.widget-view+json" in sampler._repr_mimebundle_()


# ------------------------------------------------------------------------ the plots


def _labels(ax):
    return ax.get_title(), ax.get_xlabel(), ax.get_ylabel()


def test_benchmark_plot_from_bench_rows():
    rows = [dict(backend=b, mode="forward", batch=16, hidden=h, input=h, seq_len=50, median_ms=ms * h,
                 gflops=1.0, torch_ms=1.0, speedup_vs_torch=1.0, frac_of_sgemm_peak=0.1)
            for b, ms in (("numpy", 3.0), ("numba", 1.0), ("torch", 0.5)) for h in (32, 64, 128)]
    rows.append({**rows[0], "mode": "train"})
    fig = viz.benchmark({"machine": {}, "rows": rows})
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and all(_labels(ax))
    assert "T = 50" in ax.get_title() and "batch 16" in ax.get_title()
    assert [line.get_label() for line in ax.get_lines()] == ["numpy", "numba", "torch"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [32.0, 64.0, 128.0])
    two = viz.benchmark({"machine": {}, "rows": rows + [{**r, "batch": 1} for r in rows]})
    assert len(two.axes[0].get_lines()) == 6


def test_text_activation_plot():
    text = "1:1 In the beginning\n1:2 And the earth"
    values = np.linspace(-1, 1, len(text))
    fig = viz.text_activation(text, values, width=10)
    ax = fig.axes[0]
    assert all(_labels(ax))
    assert len(ax.texts) == len(text)
    assert "\u21b5" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError):
        viz.text_activation(text, values[:-1])


def test_piano_roll_and_captioned_images():
    m = data.melodies(2, seed=0)
    fig = viz.piano_roll({"one": m[0], "two": m[1]}, title="rolls")
    assert len(fig.axes) == 2 and fig.axes[-1].get_xlabel() and fig.axes[0].get_ylabel() == "pitch"
    notes = [n for n in data.melody_notes(m[0]) if n[0] is not None]
    assert len(fig.axes[0].collections) == len(notes)
    single = viz.piano_roll(m[0])
    assert len(single.axes) == 1

    images, captions = data.captioned_scenes(5, seed=0)
    text = data.decode_captions(captions)
    said = [*text[:4], "a red circle above a blue square"]
    fig = viz.captioned_images(images, said, truths=text, ncols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and fig._suptitle.get_text()
    colours = [ax.xaxis.label.get_color() for ax in shown]
    assert colours[:4] == ["black"] * 4 and colours[4] == ("red" if said[4] != text[4] else "black")
    with pytest.raises(ValueError, match="captions must hold one caption per image: 5 images, 4"):
        viz.captioned_images(images, said[:4])
    with pytest.raises(ValueError, match="truths must hold one caption per image"):
        viz.captioned_images(images, said, truths=text[:2])
