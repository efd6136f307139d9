"""lstmkit.grading without kernels: the registry, check(), the wire format, the builder.

The sandboxed batch grader is tested in test_grading_batch.py, nbgrader's view of the notebooks
in test_grading_nbgrader.py.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstmkit.grading import EXERCISES, TASKS, _wire, check, tasks_of
from lstmkit.grading.batch import analyse, identify_exercise, read_notebook
from lstmkit.grading.builder import (
    BuildError,
    build_exercises,
    dumps,
    exercise_from_solution,
    replace_regions,
)
from lstmkit.grading.instant import LocalEnvironment
from lstmkit.grading.registry import compare, run_task, task_rng
from lstmkit.grading.report import CheckView, feedback_markdown, md_text

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
LESSON_NAMES = ["01_rnns_and_vanishing_gradients", "02_lstm_gates_and_cell_state", "03_vanilla_lstm",
                "04_stacked_lstm", "05_bidirectional_lstm", "06_cnn_lstm_and_convlstm",
                "09_under_the_hood_numba_and_cuda"]


def solution_namespace(name: str) -> dict:
    """Run a solution notebook's code cells in a fresh namespace (with check() silenced)."""
    nb = json.loads((ROOT / "solutions" / f"{name}.ipynb").read_text())
    ns: dict = {}
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or cell["metadata"].get("nbgrader", {}).get("grade"):
            continue
        if cell["metadata"].get("nbgrader", {}).get("solution") or "import" in src.split("\n")[0]:
            exec(compile(src, name, "exec"), ns)
    return ns


def run(task_id: str, ns: dict, seed=3):
    return run_task(TASKS[task_id], LocalEnvironment(ns, {}), task_rng(task_id, seed))


# ------------------------------------------------------------------------- registry


def test_every_lesson_has_an_exercise_and_its_solution():
    assert list(EXERCISES) == LESSON_NAMES
    assert [p.stem for p in SOLUTIONS] == LESSON_NAMES
    for name in LESSON_NAMES:
        assert tasks_of(name), name
        assert (ROOT / "exercises" / f"{name}.ipynb").exists()


def test_exercise_times_and_points_agree_everywhere_they_are_stated():
    """The registry's minutes and points are what each exercise's heading and the README say."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, ex in EXERCISES.items():
        cells = json.loads((ROOT / "solutions" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
        heading = " ".join("".join(cells[1]["source"]).split())
        points = sum(t.points for t in tasks_of(name))
        assert f"About {ex.minutes} minutes. {points} points." in heading, name
        assert f"[exercise {name[:2]}](exercises/{name}.ipynb) ({ex.minutes} min)" in readme, name


def test_task_ids_function_names_and_points():
    assert len({t.function for t in TASKS.values()}) == len(TASKS)
    for t in TASKS.values():
        assert t.points > 0 and t.checks and t.title
        # two hints: a nudge that gives no code away, then the method
        assert t.hint and t.method and t.hint != t.method, t.id
        assert "np." not in t.hint and " @ " not in t.hint, t.id
        assert len(set(t.checks)) == len(t.checks)
    assert sum(t.points for t in TASKS.values()) == 48


@pytest.mark.parametrize("name", LESSON_NAMES)
def test_reference_solutions_pass_every_task_on_many_seeds(name):
    ns = solution_namespace(name)
    for task in tasks_of(name):
        for seed in (0, 1, 2):
            r = run(task.id, ns, seed)
            assert r.status == "passed", (task.id, seed, r.message)
            assert r.points == r.max_points


def test_run_is_deterministic_for_a_seed():
    ns = solution_namespace("01_rnns_and_vanishing_gradients")
    calls = []
    ns_spy = dict(ns, rnn_step_forward=lambda *a: calls.append(a[0].copy()) or ns["rnn_step_forward"](*a))
    run("rnn_step_forward", ns_spy, seed=11)
    first = [c.copy() for c in calls]
    calls.clear()
    run("rnn_step_forward", ns_spy, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(first, calls))
    calls.clear()
    run("rnn_step_forward", ns_spy, seed=12)
    assert not np.array_equal(first[0], calls[0])


# ------------------------------------------------------------ feedback on mistakes


def _ns02(**overrides):
    ns = solution_namespace("02_lstm_gates_and_cell_state")
    ns.update(overrides)
    return ns


def test_gate_order_mistake_is_named():
    sol = _ns02()

    def swapped(x, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
        H = h_prev.shape[1]
        perm = np.r_[0:H, 2 * H:3 * H, H:2 * H, 3 * H:4 * H]  # read the blocks as i, g, f, o
        return sol["lstm_step_forward"](x, h_prev, c_prev, W_ih[perm], W_hh[perm], b_ih[perm], b_hh[perm])

    r = run("lstm_step_forward", _ns02(lstm_step_forward=swapped))
    assert r.status == "failed"
    assert "order i, g, f, o" in r.checks[0].message


def test_partial_credit_and_messages():
    sol = _ns02()

    def no_dc(dh, dc, cache):
        return sol["lstm_step_backward"](dh, 0 * dc, cache)

    r = run("lstm_step_backward", _ns02(lstm_step_backward=no_dc))
    assert r.status in ("failed", "partial")
    assert "ignore dc" in " ".join(c.message for c in r.checks)


def test_wrong_shape_transposed_and_not_attempted():
    def transposed(x, h_prev, W_ih, W_hh, b_ih, b_hh):
        h = np.tanh(x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh).T
        return h, (x, h_prev, W_ih, W_hh, h)

    r = run("rnn_step_forward", {"rnn_step_forward": transposed})
    assert r.status == "partial" and "transposed?" in r.checks[0].message
    assert r.points == 1.0  # the cache is right: one of two checks

    def todo(*args):
        raise NotImplementedError()

    r = run("rnn_step_forward", {"rnn_step_forward": todo})
    assert r.status == "not attempted" and r.points == 0
    r = run("rnn_step_forward", {})
    assert r.status == "missing" and r.points == 0


def test_hints_show_only_after_an_attempt_that_fell_short():
    """The method, shown before a first try, would give the task away; after one, the nudge
    shows first and the method stays folded (HTML) or comes second (text)."""
    hint, method = TASKS["rnn_step_forward"].hint, TASKS["rnn_step_forward"].method

    def todo(*args):
        raise NotImplementedError()

    def right(x, h_prev, W_ih, W_hh, b_ih, b_hh):
        h = np.tanh(x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)
        return h, (x, h_prev, W_ih, W_hh, h)

    def zeros(x, h_prev, W_ih, W_hh, b_ih, b_hh):
        return 0 * right(x, h_prev, W_ih, W_hh, b_ih, b_hh)[0], None

    shown = {}
    for fn in (todo, None, zeros, right):
        r = run("rnn_step_forward", {} if fn is None else {"rnn_step_forward": fn})
        view = CheckView(r, "rnn_step_forward", "t")
        text, page = repr(view), view._repr_html_()
        shown[r.status] = (hint in text, method in text, html.escape(hint) in page,
                           html.escape(method) in page)
        if r.status == "failed":
            assert text.index(hint) < text.index(method)
            folded = page[page.index(html.escape(hint)):].split("<details", 1)[1]
            assert folded.startswith(" style") and html.escape(method) in folded  # closed: no "open"
    assert shown == {"not attempted": (False,) * 4, "missing": (False,) * 4,
                     "failed": (True,) * 4, "passed": (False,) * 4}


def test_learner_exception_is_reported_with_the_line():
    def broken(x, h_prev, W_ih, W_hh, b_ih, b_hh):
        return np.tanh(x @ W_ih + h_prev @ W_hh.T)  # W_ih not transposed

    r = run("rnn_step_forward", {"rnn_step_forward": broken})
    assert r.points == 0
    assert "raised ValueError" in r.message and "in broken, line" in r.message


def test_unsendable_return_value_fails_like_in_the_batch_grader():
    r = run("clip_grad_norm", {"clip_grad_norm": lambda grads, max_norm: (object(), 1.0)})
    assert r.points == 0 and "cannot be compared" in r.message


def test_compare_messages():
    ok, msg = compare(np.zeros((2, 3)), np.zeros((3, 2)), layout="(B, H)")
    assert not ok and "transposed?" in msg and "(B, H)" in msg
    ok, msg = compare([[np.nan]], [[1.0]])
    assert not ok and "NaN" in msg
    ok, msg = compare(None, [1.0])
    assert not ok and "forget `return`" in msg
    ok, _ = compare(np.ones(3) + 1e-9, np.ones(3))
    assert ok


# ------------------------------------------------------------------ check() itself


def test_check_shows_not_attempted_and_never_raises(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)

    def sigmoid(x):
        raise NotImplementedError()

    assert check("sigmoid", sigmoid) is None
    out = capsys.readouterr()
    assert "not attempted yet" in out.out and out.err == ""


def test_check_finds_the_function_by_name_and_catches_warnings(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)

    def sigmoid(x):  # the naive formula: right values, by luck, and overflow warnings
        return 1 / (1 + np.exp(-x))

    globals()["sigmoid"] = sigmoid
    try:
        assert check("sigmoid") is None
    finally:
        del globals()["sigmoid"]
    out = capsys.readouterr()
    # a warning is a note, and an overflow fails the one check that is about it
    assert "2 of 3 checks passed" in out.out and "note: sigmoid caused a RuntimeWarning" in out.out
    assert "✘ extreme inputs: the values are right, but computing them overflowed (RuntimeWarning" in out.out
    assert out.err == ""


def test_check_under_nbgrader_raises_returns_partial_points_or_none(capsys, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    ns = solution_namespace("01_rnns_and_vanishing_gradients")

    def todo(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not attempted"):
        check("rnn_step_forward", todo)

    def transposed(x, h_prev, W_ih, W_hh, b_ih, b_hh):
        h, _ = ns["rnn_step_forward"](x, h_prev, W_ih, W_hh, b_ih, b_hh)
        return h.T, (x, h_prev, W_ih, W_hh, h.T)

    assert check("rnn_step_forward", transposed) == 1.0
    assert check("rnn_step_forward", ns["rnn_step_forward"]) is None
    assert capsys.readouterr().err == ""


def test_check_rejects_unknown_tasks():
    with pytest.raises(ValueError, match="unknown task"):
        check("no_such_task", print)
    with pytest.raises(ValueError, match=r"'rnn_step_foward' \(did you mean 'rnn_step_forward'\?\)"):
        check("rnn_step_foward", print)


def test_views_escape_learner_text():
    def raises(*args):
        raise ValueError("<b>x</b>|y")

    r = run("rnn_step_forward", {"rnn_step_forward": raises})
    html = CheckView(r, "rnn_step_forward", "t")._repr_html_()
    assert "<b>x</b>" not in html and "&lt;b&gt;" in html
    md = feedback_markdown("a|b", "", [r], 0, 2, "ok", ["<script>"], {})
    assert "<script>" not in md and "<b>" not in md
    assert md_text("a|b*c") == "a\\|b\\*c"


# ------------------------------------------------------------------- wire format


def test_wire_roundtrip_of_everything_a_task_uses():
    rng = np.random.default_rng(5)
    value = (np.arange(6, dtype=np.float32).reshape(2, 3), {"W": np.eye(2), "n": [1, 2.5, None, True]},
             float("nan"), 2**70, "text", np.float64(3.5), np.random.default_rng(9))
    back = _wire.roundtrip(value)
    assert back[0].dtype == np.float32 and np.array_equal(back[0], value[0])
    assert np.array_equal(back[1]["W"], np.eye(2)) and back[1]["n"] == [1, 2.5, None, True]
    assert np.isnan(back[2]) and back[3] == 2**70 and back[4] == "text"
    assert back[5] == 3.5
    specials = _wire.roundtrip([np.float64(np.inf), np.float64(-np.inf), np.float64(np.nan),
                                np.float32(np.inf)])
    assert specials[:2] == [np.inf, -np.inf] and np.isnan(specials[2]) and specials[3] == np.inf
    assert back[6].random() == np.random.default_rng(9).random()  # same generator state
    assert rng is not None


@pytest.mark.parametrize("bad", [
    {"__nd__": ["|O", [1], "AAAAAAAAAAA="]},  # object dtype
    {"__nd__": ["<f8", [2], "AAAAAAAAAAA="]},  # size does not match the shape
    {"__nd__": ["<f8", [-1], ""]},
    {"__pickle__": "gASVAAAAAAAAAAB9lC4="},
    {"__tuple__": [1], "__dict__": []},
    {"__int__": "9" * 5000},
])
def test_wire_refuses_malformed_or_dangerous_values(bad):
    with pytest.raises(_wire.WireError):
        _wire.decode(bad)


def test_wire_refuses_unsendable_values_and_deep_nesting():
    with pytest.raises(_wire.WireError, match="cannot be compared"):
        _wire.encode(lambda: 0)
    deep: list = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(_wire.WireError):
        _wire.encode(deep)
    with pytest.raises(_wire.WireError):
        _wire.parse(b"[" * 100_000)
    with pytest.raises(_wire.WireError):
        _wire.unpack_length(b"XXXX\x00\x00\x00\x01")


# ---------------------------------------------------------------- the builder


def test_replace_regions_follows_nbgrader():
    src = "def f():\n    x = 1\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    stub = ["# YOUR CODE HERE", "raise NotImplementedError()"]
    out, found = replace_regions(src, "BEGIN SOLUTION", "END SOLUTION", stub, "t")
    assert found and out == "def f():\n    x = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    hidden = "a\n### BEGIN HIDDEN TESTS\nsecret\n### END HIDDEN TESTS\nb"
    out, _ = replace_regions(hidden, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", None, "t")
    assert out == "a\nb"
    with pytest.raises(BuildError, match="without"):
        replace_regions("### BEGIN SOLUTION\nx", "BEGIN SOLUTION", "END SOLUTION", [], "t")


def test_builder_matches_nbgrader_clear_solutions():
    import nbformat
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    for sol in SOLUTIONS:
        ours = exercise_from_solution(json.loads(sol.read_text()), sol.stem, sol)
        nb = nbformat.read(sol, as_version=4)
        nb, res = ClearSolutions().preprocess(nb, {})
        nb, res = ClearHiddenTests().preprocess(nb, res)
        theirs = [c.source for c in nb.cells]
        assert [c["source"] for c in ours["cells"]] == theirs, sol.name


def test_exercises_are_up_to_date_with_solutions():
    report = build_exercises(ROOT, check=True)
    assert not report.stale, f"run `lstmkit exercises build`: {[p.name for p in report.stale]}"
    assert not report.extra


def test_build_check_detects_a_stale_exercise_and_rebuilds(tmp_path):
    (tmp_path / "solutions").mkdir()
    src = ROOT / "solutions" / "04_stacked_lstm.ipynb"
    (tmp_path / "solutions" / src.name).write_text(src.read_text())
    cli = [sys.executable, "-m", "lstmkit", "exercises", "build", "--root", str(tmp_path)]
    assert subprocess.run([*cli, "--check"], capture_output=True).returncode == 1  # missing
    assert subprocess.run(cli, capture_output=True).returncode == 0
    assert subprocess.run([*cli, "--check"], capture_output=True).returncode == 0
    nb = json.loads((tmp_path / "solutions" / src.name).read_text())
    nb["cells"][1]["source"] = "# Changed title"
    (tmp_path / "solutions" / src.name).write_text(json.dumps(nb))
    res = subprocess.run([*cli, "--check"], capture_output=True, text=True)
    assert res.returncode == 1 and "out of date" in res.stdout


def test_exercise_notebooks_have_no_answers_and_valid_nbgrader_metadata():
    for sol in SOLUTIONS:
        ex = json.loads((ROOT / "exercises" / sol.name).read_text())
        assert ex["metadata"]["lstmkit"]["exercise"] == sol.stem
        grade_ids, points = [], {}
        for cell in ex["cells"]:
            assert "BEGIN SOLUTION" not in cell["source"] and "HIDDEN TESTS" not in cell["source"]
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None
            meta = cell["metadata"].get("nbgrader")
            if meta:
                assert set(meta) <= {"schema_version", "grade", "solution", "locked", "grade_id", "points",
                                     "task", "checksum"}
                assert meta["schema_version"] == 3
                grade_ids.append(meta["grade_id"])
                if meta["grade"]:
                    points[meta["grade_id"]] = meta["points"]
                    assert meta["locked"] and cell["metadata"]["editable"] is False
        assert len(grade_ids) == len(set(grade_ids))
        assert points == {t.id: t.points for t in tasks_of(sol.stem)}


def test_builder_rejects_inconsistent_solutions(tmp_path):
    nb = json.loads(SOLUTIONS[0].read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade"):
            cell["metadata"]["nbgrader"]["points"] = 99
            break
    with pytest.raises(BuildError, match="lstmkit/grading/tasks.py, says"):
        exercise_from_solution(nb, SOLUTIONS[0].stem, SOLUTIONS[0])
    nb = json.loads(SOLUTIONS[0].read_text())
    nb["cells"] = [c for c in nb["cells"] if not c["metadata"].get("nbgrader", {}).get("grade")]
    with pytest.raises(BuildError, match="no grade cell"):
        exercise_from_solution(nb, SOLUTIONS[0].stem, SOLUTIONS[0])
    nb = json.loads(SOLUTIONS[0].read_text())
    nb["cells"][0]["metadata"]["nbgrader"]["mine"] = 1
    with pytest.raises(BuildError, match="may only hold"):
        exercise_from_solution(nb, SOLUTIONS[0].stem, SOLUTIONS[0])


def test_builder_output_is_deterministic():
    sol = SOLUTIONS[2]
    a = dumps(exercise_from_solution(json.loads(sol.read_text()), sol.stem, sol))
    b = dumps(exercise_from_solution(json.loads(sol.read_text()), sol.stem, sol))
    assert a == b and a.endswith("\n")


# ---------------------------------------------------------- reading submissions


def test_read_notebook_never_raises(tmp_path):
    bad = tmp_path / "x.ipynb"
    bad.write_bytes(b"\xff\xfe not utf-8")
    assert read_notebook(bad)[2].startswith("invalid notebook")
    bad.write_text("[1, 2]")
    assert read_notebook(bad)[2] == "invalid notebook: no list of cells"
    bad.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["  "]}]}))
    assert read_notebook(bad)[2].startswith("no code cells: nothing to run")


def test_identify_exercise_by_metadata_name_folder_or_checks():
    assert identify_exercise({"metadata": {"lstmkit": {"exercise": "03_vanilla_lstm"}}}, Path("x.ipynb"),
                             []) == "03_vanilla_lstm"
    assert identify_exercise(None, Path("alice/05_bidir (1).ipynb"), []) == "05_bidirectional_lstm"
    assert identify_exercise(None, Path("04_stacked_lstm/alice.ipynb"), []) == "04_stacked_lstm"
    assert identify_exercise(None, Path("x.ipynb"), ['check("conv2d_same", f)']) == "06_cnn_lstm_and_convlstm"
    assert identify_exercise(None, Path("x.ipynb"), []) is None


def test_static_analysis_of_the_source():
    info = analyse(["from numba import njit\n@njit\ndef a(x):\n    return x",
                    "import numba\n@numba.njit(cache=True)\ndef b(x):\n    return x\nc = numba.njit(b)",
                    "%timeit a(1)\ndef plain(x):\n    return x", "def broken(:"])
    assert info["compiled"] == {"a", "b", "c"} and not info["redefines_check"]
    assert analyse(["check = print"])["redefines_check"]
    assert analyse(["from mymod import check"])["redefines_check"]
    assert not analyse(["from lstmkit.grading import check"])["redefines_check"]


def test_grading_modules_stay_importable_without_heavy_dependencies():
    # The child loads _wire.py by path before it locks down: it must not import lstmkit.
    tree = ast.parse((ROOT / "lstmkit" / "grading" / "_wire.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "lstmkit" not in imported and "torch" not in imported


def test_check_withholds_what_the_grader_withholds(capsys, monkeypatch):
    """A learner who calls the library's own answer learns it in check(), not from the grade."""
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    from lstmkit import reference

    def sigmoid(x):
        return reference.sigmoid(x)

    env = LocalEnvironment({"sigmoid": sigmoid}, {}, {"lstmkit.reference": {"sigmoid"}})
    r = run_task(TASKS["sigmoid"], env, task_rng("sigmoid", 0))
    assert r.points == 0 and "not available while grading" in r.message
    assert reference.sigmoid(np.zeros(1))[0] == 0.5  # restored afterwards

    notebook: dict = {}  # a notebook's namespace
    exec("import lstmkit.nn\ndef encode_frames(clip, w):\n    return lstmkit.nn.ConvLSTM", notebook)
    r = run("encode_frames", notebook)
    assert any("lstmkit.nn is used here" in n for n in r.notes)


# ------------------------------------------------------------- what a failed check says


def test_messages_name_the_gate_and_show_scalars():
    e = np.zeros((2, 8))  # (B, 4H) with H = 2: column 6 is gate o of unit 0
    e[1, 6] = 1.0
    ok, msg = compare(np.zeros((2, 8)), e, layout="(B, 4H)", what="da")
    assert not ok and "(at index [1, 6], gate o of unit 0: 0, expected 1)" in msg
    assert "gate" not in compare(np.zeros((2, 8)), e, layout="(B, H)")[1]
    ok, msg = compare(np.float64(2.5), 1.25, what="loss")
    assert not ok and msg == "loss is 2.5, expected 1.25"
    assert compare(np.float64(np.nan), 1.0, what="loss")[1] == "loss is NaN"


def test_the_usual_backward_slips_are_named():
    spec = importlib.util.spec_from_file_location("make", ROOT / "tests" / "submissions" / "_make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    right = make.GOOD02[1]  # a right answer to exercise 02, where dc is already the summed gradient
    slip = right.replace("dh * tc * o * (1 - o)", "dc * tc * o * (1 - o)")  # do = dc_total * tanh(c)
    assert slip != right
    ns = {"np": np}
    exec(slip, ns)

    r = run("lstm_step_backward", {"lstm_step_backward": ns["lstm_step_backward"]})
    assert r.status == "partial"  # dc_prev does not depend on o
    assert "give the output gate the cell's summed gradient" in r.message
    assert ", gate o of unit" in next(c.message for c in r.checks if c.name == "W_ih")


def test_a_numba_typing_error_names_the_line_and_the_stub():
    from numba import njit

    @njit
    def sigmoid_scalar(x):
        raise NotImplementedError()

    @njit
    def lstm_gates_numba(a, c_prev):
        h = np.empty_like(c_prev)
        for b in range(c_prev.shape[0]):
            for j in range(c_prev.shape[1]):
                h[b, j] = sigmoid_scalar(a[b, j]) * c_prev[b, j]
        return h, h

    r = run("lstm_gates_numba", {"lstm_gates_numba": lstm_gates_numba, "sigmoid_scalar": sigmoid_scalar})
    text = repr(CheckView(r, "lstm_gates_numba", "t"))
    assert "Numba has no implementation of mul(none, float64)" in text
    assert "h[b, j] = sigmoid_scalar(a[b, j]) * c_prev[b, j]" in text
    assert "does a helper still raise NotImplementedError?" in text
    assert "candidate implementations" not in text


def test_an_error_inside_lstmkit_points_at_the_learners_line():
    from lstmkit import reference

    def many_to_one_logits(x, params, W_out, b_out):
        z = np.zeros((x.shape[1], params["W_ih"].shape[0]))  # 4H wide, not H
        return reference.lstm_step_forward(x[0], z, z, **params)[0] @ W_out.T + b_out

    try:
        many_to_one_logits(np.zeros((2, 3, 4)), {k: np.zeros(s) for k, s in
                           [("W_ih", (8, 4)), ("W_hh", (8, 2)), ("b_ih", (8,)), ("b_hh", (8,))]},
                           np.zeros((3, 2)), np.zeros(3))
    except ValueError as exc:
        info = _wire.describe_exception(exc)
    assert info["where"].startswith("in many_to_one_logits, line ")
    assert "reference.lstm_step_forward(x[0], z, z, **params)" in info["where"]


def test_checks_that_fail_alike_are_shown_once():
    r = run("lstm_step_backward", {"lstm_step_backward": lambda dh, dc, cache: {"dx": 1, "dh_prev": 1}})
    text = repr(CheckView(r, "lstm_step_backward", "t"))
    assert text.count("the return value has no keys") == 1
    assert "✘ x, h_prev, c_prev, W_ih, W_hh, b_ih and b_hh: the return value has no keys" in text
    md = feedback_markdown("s", "t", [r], 0, 4, "ok", [], {})
    assert md.count("has no keys") == 2  # the task's one-line summary and the one grouped check


def test_the_usual_slips_of_the_sequence_loop_are_named():
    from lstmkit.reference import lstm_step_forward

    def stored_before_the_step(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
        h, c, y = h0, c0, np.zeros((len(x),) + h0.shape)
        for t in range(len(x)):
            y[t] = h
            h, c, _ = lstm_step_forward(x[t], h, c, W_ih, W_hh, b_ih, b_hh)
        return y, h, c

    r = run("lstm_sequence_forward", {"lstm_sequence_forward": stored_before_the_step})
    assert r.points == 2 and "store h before the step instead of after it" in r.message


def test_a_warning_in_a_loop_is_one_note():
    import warnings

    def sigmoid(x):
        for _ in range(10_000):  # recorded once per line of code, not 10,000 times
            warnings.warn("slow path", RuntimeWarning, stacklevel=1)
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

    r = run("sigmoid", {"sigmoid": sigmoid})
    assert r.status == "passed" and r.notes == ["sigmoid caused a RuntimeWarning: slow path"]


def test_softmax_must_subtract_each_rows_own_maximum():
    def batch_maximum(logits, labels):  # right on paper, and for most batches
        B = len(labels)
        z = logits - logits.max()
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        d = np.exp(logp)
        d[np.arange(B), labels] -= 1
        return -logp[np.arange(B), labels].mean(), d / B

    r = run("softmax_cross_entropy", {"softmax_cross_entropy": batch_maximum})
    assert r.points == 2 and "subtract each row's own maximum" in r.message
