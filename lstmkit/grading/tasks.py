"""The graded tasks of every exercise: points, tests against ``lstmkit.reference``, hints.

Each test runs in the grader's process. It draws inputs from ``t.rng`` (fresh in ``check()``,
from the instructor's secret seed in ``lstmkit grade``), computes the expected values with
the reference, calls the learner's function and records named checks. Where a wrong answer
is likely to come from a well-known slip (gate order, a missing tanh, an unflipped backward
direction, a flipped convolution kernel...), the test passes the value that slip would give
as a "mistake", so the message can say what probably went wrong.
"""

from __future__ import annotations

import itertools

import numpy as np

from lstmkit import reference as ref
from lstmkit.grading.registry import TaskRun, describe, exercise, task

R = "lstmkit.reference"

# ------------------------------------------------------------------------ exercises

exercise("01_rnns_and_vanishing_gradients", "RNNs and vanishing gradients", 40)
exercise("02_lstm_gates_and_cell_state", "The LSTM's gates and cell state", 50)
exercise("03_vanilla_lstm", "A first vanilla LSTM", 40)
exercise("04_stacked_lstm", "Stacked LSTMs", 30)
exercise("05_bidirectional_lstm", "Bidirectional LSTMs", 30)
exercise("06_cnn_lstm_and_convlstm", "CNN-LSTM and ConvLSTM", 45)
exercise("09_under_the_hood_numba_and_cuda", "Under the hood: a Numba kernel", 40)


def _normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _layer(rng, G: int, I: int, H: int) -> dict:
    """Weights of one layer, scaled like torch's initialisation (uniform +-1/sqrt(H))."""
    k = 1 / np.sqrt(H)
    u = lambda *s: rng.uniform(-k, k, s) * 2.0
    return {"W_ih": u(G * H, I), "W_hh": u(G * H, H), "b_ih": u(G * H), "b_hh": u(G * H)}


# =================================================================== 01 RNN basics

_RNN_FORBID = {R: {"rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward", "_bptt",
                   "_affine", "_weight_grads", "lstm_step_forward", "lstm_step_backward", "lstm_forward",
                   "lstm_backward"}}
EX01 = "01_rnns_and_vanishing_gradients"


@task("rnn_step_forward", exercise=EX01, points=2, title="one step of a tanh RNN",
      checks=("h", "cache"), forbids=_RNN_FORBID,
      hint="Follow the shapes: x is (B, I), one example per row, W_ih is (H, I), and h must come out "
           "(B, H). Write the lesson's equation h = tanh(W_ih x + b_ih + W_hh h_prev + b_hh) so that every "
           "product's inner dimensions match, and return the cache the docstring lists.",
      method="h = np.tanh(x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh). Each row of x is one example, so "
             "the weights multiply from the right, transposed. Return (h, (x, h_prev, W_ih, W_hh, h)).")
def _rnn_step_forward(t: TaskRun):
    with t.checking("h", "cache"):
        for B, I, H in [(3, 4, 5), (1, 1, 1), (6, 3, 8)]:
            t.case = f"B={B}, I={I}, H={H}"
            x, h_prev = _normal(t.rng, B, I), _normal(t.rng, B, H)
            w = _layer(t.rng, 1, I, H)
            h_ref, _ = ref.rnn_step_forward(x, h_prev, **w)
            pre = x @ w["W_ih"].T + w["b_ih"] + h_prev @ w["W_hh"].T + w["b_hh"]
            h, cache = t.unpack(t.call(x, h_prev, w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"]), 2,
                                "(h, cache)")
            t.compare("h", h, h_ref, layout="(B, H)", mistakes=[
                ("leave out the biases", np.tanh(x @ w["W_ih"].T + h_prev @ w["W_hh"].T)),
                ("forget the tanh", pre),
                ("use a sigmoid instead of tanh", ref.sigmoid(pre)),
                ("add only one of the two biases", np.tanh(pre - w["b_hh"])),
            ])
            _check_cache(t, "cache", cache, [("x", x), ("h_prev", h_prev), ("W_ih", w["W_ih"]),
                                             ("W_hh", w["W_hh"]), ("h", h)])


def _check_cache(t: TaskRun, check: str, cache, parts) -> None:
    names = ", ".join(n for n, _ in parts)
    if not isinstance(cache, (tuple, list)) or len(cache) != len(parts):
        t.record(check, False, f"the cache should be the tuple ({names}), got {describe(cache)}")
        return
    for k, ((name, value), got) in enumerate(zip(parts, cache)):
        if not t.compare(check, got, value, what=f"cache[{k}] (should be {name})", rtol=1e-12):
            return


@task("rnn_step_backward", exercise=EX01, points=3, title="backward through one RNN step",
      checks=("x", "h_prev", "W_ih", "W_hh", "b_ih and b_hh"), forbids=_RNN_FORBID,
      hint="Two stages of the chain rule: first back through the tanh (its derivative can be written with "
           "h, which the cache holds), then through the affine map. Every gradient has the shape of what "
           "it is the gradient of: let that decide which matrix is transposed and on which side. A bias is "
           "shared by all the examples of the batch.",
      method="First go back through the tanh: da = dh * (1 - h**2). Then every gradient is one product: "
             "dx = da @ W_ih, dh_prev = da @ W_hh, dW_ih = da.T @ x, dW_hh = da.T @ h_prev, and both bias "
             "gradients are da.sum(axis=0). Check the shapes: dW_ih must have W_ih's shape (H, I).")
def _rnn_step_backward(t: TaskRun):
    keys = ("x", "h_prev", "W_ih", "W_hh", "b_ih", "b_hh")
    with t.checking(*t.task.checks):
        for B, I, H in [(3, 4, 5), (1, 2, 1), (5, 3, 6)]:
            t.case = f"B={B}, I={I}, H={H}"
            x, h_prev = _normal(t.rng, B, I), _normal(t.rng, B, H)
            w = _layer(t.rng, 1, I, H)
            h, cache_ref = ref.rnn_step_forward(x, h_prev, **w)
            dh = _normal(t.rng, B, H)
            g = ref.rnn_step_backward(dh, cache_ref)
            got = t.mapping(t.call(dh, (x, h_prev, w["W_ih"], w["W_hh"], h)), keys, "the return value")
            da_wrong = dh * (1 - h)
            t.compare("x", got["x"], g["x"], layout="(B, I)", what="grads['x']", mistakes=[
                ("skip the tanh derivative (da = dh)", dh @ w["W_ih"]),
                ("use (1 - h) instead of (1 - h**2) for tanh'", da_wrong @ w["W_ih"])])
            t.compare("h_prev", got["h_prev"], g["h_prev"], layout="(B, H)", what="grads['h_prev']",
                      mistakes=[("skip the tanh derivative (da = dh)", dh @ w["W_hh"]),
                                ("multiply by W_hh.T instead of W_hh", (dh * (1 - h * h)) @ w["W_hh"].T)])
            t.compare("W_ih", got["W_ih"], g["W_ih"], layout="(H, I)", what="grads['W_ih']",
                      mistakes=[("skip the tanh derivative (da = dh)", dh.T @ x)])
            t.compare("W_hh", got["W_hh"], g["W_hh"], layout="(H, H)", what="grads['W_hh']",
                      mistakes=[("skip the tanh derivative (da = dh)", dh.T @ h_prev),
                                ("use h instead of h_prev", (dh * (1 - h * h)).T @ h)])
            for b in ("b_ih", "b_hh"):
                t.compare("b_ih and b_hh", got[b], g[b], layout="(H,)", what=f"grads['{b}']",
                          mistakes=[("average over the batch instead of summing", g[b] / B)])


@task("gradient_norms_through_time", exercise=EX01, points=2,
      title="||dL/dh_t|| for every step of a sequence", checks=("norms",), forbids=_RNN_FORBID,
      hint="You meet the steps last to first, but norms[t] belongs to step t: store each norm at its index "
           "rather than appending. norms[T-1] is the norm of dh_last itself; record each step's norm "
           "before you go back to the step before it.",
      method="Run the sequence forward with your rnn_step_forward, keeping every cache. Then walk "
             "backwards: start with dh = dh_last, record np.linalg.norm(dh) for step t, and get the "
             "gradient of the step before from rnn_step_backward(dh, caches[t])['h_prev'].")
def _gradient_norms(t: TaskRun):
    with t.checking("norms"):
        for T, B, I, H, gain in [(6, 2, 3, 4, 1.0), (1, 1, 1, 1, 1.0), (12, 3, 2, 5, 0.5), (8, 2, 3, 4, 3.0)]:
            t.case = f"T={T}, B={B}, I={I}, H={H}"
            x, h0 = _normal(t.rng, T, B, I), _normal(t.rng, B, H, scale=0.5)
            w = _layer(t.rng, 1, I, H)
            w["W_hh"] = w["W_hh"] * gain
            dh_last = _normal(t.rng, B, H)
            _, _, saved = ref.rnn_forward(x, h0, **w)
            norms = ref.rnn_backward(None, dh_last, saved)["dh_norms"]
            got = t.call(x, h0, w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"], dh_last)
            shifted = np.append(norms[1:], np.linalg.norm(dh_last))
            prev = np.append(np.linalg.norm(ref.rnn_backward(None, dh_last, saved)["h0"]), norms[:-1])
            t.compare("norms", got, norms, layout="(T,)", what="norms", rtol=1e-6, mistakes=[
                ("store the norms in the order you compute them (last step first)", norms[::-1]),
                ("record the norm after stepping back (that is ||dL/dh_(t-1)||)", prev),
                ("record the norms one step late", shifted)])


@task("clip_grad_norm", exercise=EX01, points=2, title="gradient clipping by global norm",
      checks=("total_norm", "scales down above max_norm", "leaves small gradients alone"),
      hint="Clipping by the global norm treats all the gradients together as one long vector: one norm for "
           "all of them and, when it is too large, one scale factor for all of them, so that the update "
           "keeps its direction. If the total norm is within the limit, return the gradients unchanged. "
           "The norm you return is the one before clipping.",
      method="total_norm = sqrt(sum of the squares of EVERY entry of EVERY gradient), one number for all "
             "of them. If it is above max_norm, multiply every gradient by the same factor max_norm / "
             "total_norm, which keeps the direction of the update and sets its length to max_norm.")
def _clip_grad_norm(t: TaskRun):
    def grads(scale):
        return {"W_ih": _normal(t.rng, 8, 3, scale=scale), "W_hh": _normal(t.rng, 8, 8, scale=scale),
                "b": _normal(t.rng, 8, scale=scale)}

    def total(g):
        return float(np.sqrt(sum(float((v ** 2).sum()) for v in g.values())))

    cases = [(3.0, 1.0, "scales down above max_norm"), (0.05, 5.0, "leaves small gradients alone")]
    for scale, max_norm, check in cases:
        with t.checking("total_norm", check):
            g = grads(scale)
            tot = total(g)
            clipped, total_norm = t.unpack(t.call(g, max_norm), 2, "(clipped, total_norm)")
            t.compare("total_norm", total_norm, tot, what="total_norm", mistakes=[
                ("return the squared norm", tot ** 2),
                ("return the norm after clipping", min(tot, max_norm))])
            clipped = t.mapping(clipped, list(g), "clipped")
            factor = min(1.0, max_norm / tot)
            for k, v in g.items():
                per_array = v * min(1.0, max_norm / np.linalg.norm(v))
                t.compare(check, clipped[k], v * factor, layout=str(v.shape), what=f"clipped['{k}']",
                          mistakes=[("clip each array by its own norm, not the global norm", per_array)])


# ====================================================================== 02 LSTM cell

EX02 = "02_lstm_gates_and_cell_state"
_LSTM_FORBID = {R: {"sigmoid", "lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
                    "_bptt", "_affine", "_weight_grads", "convlstm_step_forward"}}
_ORDER = "ifgo"


@task("sigmoid", exercise=EX02, points=1, title="a logistic function that never overflows",
      checks=("values", "extreme inputs", "keeps the dtype"), forbids=_LSTM_FORBID,
      hint="1 / (1 + exp(-x)) is right on paper, but exp(-x) overflows for large negative x. Rewrite the "
           "formula for x < 0 so that the exponential only ever sees a number <= 0, then pick between the "
           "two formulas element by element. Keep the input's dtype.",
      method="np.exp(-x) overflows for x < -710 (float64). Only ever exponentiate a non-positive number: "
             "e = np.exp(-np.abs(x)); then sigmoid = 1 / (1 + e) where x >= 0 and e / (1 + e) where x < 0 "
             "(np.where picks between them).")
def _sigmoid(t: TaskRun):
    with t.checking("values"):
        x = _normal(t.rng, 4, 6, scale=4.0)
        t.compare("values", t.call(x), ref.sigmoid(x), layout="same shape as x", what="sigmoid(x)",
                  mistakes=[("compute exp(x) / (1 + exp(-x))", np.exp(x) / (1 + np.exp(-x))),
                            ("compute 1 / (1 + exp(x))", ref.sigmoid(-x))])
    with t.checking("extreme inputs"):
        x = np.array([-1000.0, -745.0, -710.0, -40.0, 0.0, 40.0, 710.0, 745.0, 1000.0])
        got = t.call(x)
        overflow = t.warned("overflow")  # 1 / (1 + inf) is 0, right by luck: the task is not to overflow
        ok = t.compare("extreme inputs", got, ref.sigmoid(x), what="sigmoid of [-1000, ..., 1000]")
        if ok and overflow:
            t.record("extreme inputs", False, f"the values are right, but computing them overflowed "
                     f"({overflow}); exponentiate only numbers <= 0 (np.where computes both of its "
                     "branches for every element)")
    with t.checking("keeps the dtype"):
        x32 = _normal(t.rng, 5, scale=3.0).astype(np.float32)
        x32[0] = -100.0
        t.compare("keeps the dtype", t.call(x32), ref.sigmoid(x32.astype(np.float64)),
                  what="sigmoid of a float32 array", rtol=1e-6, dtype=np.float32)


def _lstm_variant(x, h_prev, c_prev, w, order: str = "ifgo", *, bias=True, g_act=np.tanh,
                  tanh_in_h=True, tanh_on_g_twice=False):
    """An LSTM step computed with one of the usual slips (the defaults give the right answer)."""
    H = h_prev.shape[1]
    b = {True: w["b_ih"] + w["b_hh"], False: 0, "b_ih": w["b_ih"], "b_hh": w["b_hh"]}[bias]
    a = x @ w["W_ih"].T + h_prev @ w["W_hh"].T + b
    blocks = {name: a[:, k * H:(k + 1) * H] for k, name in enumerate(order)}
    i, f, o = (ref.sigmoid(blocks[n]) for n in "ifo")
    g = g_act(blocks["g"])
    c = f * c_prev + i * (np.tanh(g) if tanh_on_g_twice else g)
    return (o * np.tanh(c) if tanh_in_h else o * c), c


def _lstm_mistakes(x, h_prev, c_prev, w, which: int):
    """Likely slips in an LSTM step and the h (which=0) or c (which=1) each one gives."""
    out = []
    for perm in itertools.permutations(_ORDER):
        order = "".join(perm)
        if order != _ORDER:
            out.append((f"take the gates in the order {', '.join(order)} (the order is i, f, g, o)",
                        _lstm_variant(x, h_prev, c_prev, w, order)[which]))
    slips = [("leave out the biases", dict(bias=False)),
             ("add b_ih but not b_hh", dict(bias="b_ih")), ("add b_hh but not b_ih", dict(bias="b_hh")),
             ("use a sigmoid for the candidate g", dict(g_act=ref.sigmoid)),
             ("apply tanh to g twice (g is already a tanh)", dict(tanh_on_g_twice=True))]
    if which == 0:
        slips.append(("forget the tanh in h = o * tanh(c)", dict(tanh_in_h=False)))
    out += [(d, _lstm_variant(x, h_prev, c_prev, w, **kw)[which]) for d, kw in slips]
    return out


@task("lstm_step_forward", exercise=EX02, points=3, title="one step of an LSTM cell",
      checks=("h", "c", "cache"), forbids=_LSTM_FORBID,
      hint="Like the RNN step, but 4H wide: one pair of products gives all four gates' pre-activations at "
           "once. In torch's order the column blocks are i, f, g, o. Three gates are squashed by the "
           "sigmoid and one by tanh; then the cell update and the output, as in the lesson's equations. "
           "The cache holds the gate values after their nonlinearities, as the docstring lists.",
      method="a = x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh has 4H columns: the blocks a[:, :H], "
             "a[:, H:2*H], a[:, 2*H:3*H], a[:, 3*H:] are the gates i, f, g, o in this order. i, f, o use "
             "your sigmoid, g uses np.tanh; then c = f * c_prev + i * g and h = o * np.tanh(c).")
def _lstm_step_forward(t: TaskRun):
    with t.checking("h", "c", "cache"):
        for B, I, H in [(3, 4, 5), (1, 1, 1), (4, 6, 3)]:
            t.case = f"B={B}, I={I}, H={H}"
            x, h_prev, c_prev = _normal(t.rng, B, I), _normal(t.rng, B, H), _normal(t.rng, B, H)
            w = _layer(t.rng, 4, I, H)
            h_ref, c_ref, cache = ref.lstm_step_forward(x, h_prev, c_prev, **w)
            h, c, got_cache = t.unpack(t.call(x, h_prev, c_prev, w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"]),
                                       3, "(h, c, cache)")
            t.compare("h", h, h_ref, layout="(B, H)", mistakes=_lstm_mistakes(x, h_prev, c_prev, w, 0))
            t.compare("c", c, c_ref, layout="(B, H)", mistakes=_lstm_mistakes(x, h_prev, c_prev, w, 1))
            i, f, g, o = cache[5:9]
            _check_cache(t, "cache", got_cache, [("x", x), ("h_prev", h_prev), ("c_prev", c_prev),
                                                 ("W_ih", w["W_ih"]), ("W_hh", w["W_hh"]), ("i", i), ("f", f),
                                                 ("g", g), ("o", o), ("c", c_ref)])


# The usual slips of the LSTM's backward step: (what the learner did, name) -> the gradients it gives
_BACKWARD_SLIPS = {
    "give the output gate the cell's summed gradient (do = dc_total * tanh(c), not dh * tanh(c))": "o",
    "leave out tanh'(c) on the path through h (dc + dh * o)": "tanh_c",
    "use the sigmoid's derivative for g (g * (1 - g), not 1 - g**2)": "g",
}


def _lstm_backward_slips(dh, dc, cache) -> dict:
    """{what the learner did: the gradients it gives} for each of _BACKWARD_SLIPS."""
    return {what: _lstm_backward_slip(dh, dc, cache, slip) for what, slip in _BACKWARD_SLIPS.items()}


def _lstm_backward_slip(dh, dc, cache, slip: str) -> dict:
    """``ref.lstm_step_backward`` with one of _BACKWARD_SLIPS: "o", "tanh_c" or "g"."""
    x, h_prev, c_prev, W_ih, W_hh, i, f, g, o, tanh_c, has_bias = cache
    through_h = dh * o * (1 if slip == "tanh_c" else 1 - tanh_c * tanh_c)
    dct = dc + through_h
    do = (dct if slip == "o" else dh) * tanh_c
    dg = dct * i * (g * (1 - g) if slip == "g" else 1 - g * g)
    da = np.concatenate([dct * g * i * (1 - i), dct * c_prev * f * (1 - f), dg, do * o * (1 - o)], axis=1)
    grads = {"x": da @ W_ih, "h_prev": da @ W_hh, "c_prev": dct * f}
    grads.update(ref._weight_grads(da, x, h_prev, has_bias))
    return grads


@task("lstm_step_backward", exercise=EX02, points=4, title="backward through one LSTM step",
      checks=("x", "h_prev", "c_prev", "W_ih", "W_hh", "b_ih and b_hh"), forbids=_LSTM_FORBID,
      hint="Walk the forward equations from the last one to the first. The cell state receives gradient "
           "from two places, the dc passed in and the path through h = o * tanh(c): add them into one "
           "total for c. That total feeds i, f, g and c_prev, while o gets its gradient from dh and "
           "tanh(c) alone. Then go back through each gate's nonlinearity (the cache holds the gate "
           "values), then the same products as in the RNN's backward step, 4H wide.",
      method="Go backwards through the forward equations. The cell's gradient has two sources: "
             "dc_total = dc + dh * o * (1 - tanh(c)**2). Then do = dh * tanh(c), di = dc_total * g, "
             "df = dc_total * c_prev, dg = dc_total * i and dc_prev = dc_total * f. Through the "
             "nonlinearities: da = [di*i*(1-i), df*f*(1-f), dg*(1-g**2), do*o*(1-o)] (np.concatenate on "
             "axis 1); then dx = da @ W_ih, dh_prev = da @ W_hh, dW_ih = da.T @ x, dW_hh = da.T @ h_prev.")
def _lstm_step_backward(t: TaskRun):
    keys = ("x", "h_prev", "c_prev", "W_ih", "W_hh", "b_ih", "b_hh")
    with t.checking(*t.task.checks):
        for B, I, H in [(3, 4, 5), (1, 1, 1), (4, 2, 3)]:
            t.case = f"B={B}, I={I}, H={H}"
            x, h_prev, c_prev = _normal(t.rng, B, I), _normal(t.rng, B, H), _normal(t.rng, B, H)
            w = _layer(t.rng, 4, I, H)
            h, c, cache = ref.lstm_step_forward(x, h_prev, c_prev, **w)
            i, f, g, o = cache[5:9]
            dh, dc = _normal(t.rng, B, H), _normal(t.rng, B, H)
            gr = ref.lstm_step_backward(dh, dc, cache)
            no_dc = ref.lstm_step_backward(dh, 0 * dc, cache)
            no_dh_path = ref.lstm_step_backward(0 * dh, dc, cache)
            got = t.mapping(t.call(dh, dc, (x, h_prev, c_prev, w["W_ih"], w["W_hh"], i, f, g, o, c)), keys,
                            "the return value")
            other = _lstm_backward_slips(dh, dc, cache)
            slips = lambda k, no_dc=no_dc, no_dh_path=no_dh_path, other=other: [
                ("ignore dc, the gradient from the next step's cell", no_dc[k]),
                ("forget that c also reaches the loss through h = o * tanh(c)", no_dh_path[k]),
                *((what, grads[k]) for what, grads in other.items())]
            t.compare("x", got["x"], gr["x"], layout="(B, I)", what="grads['x']", mistakes=slips("x"))
            t.compare("h_prev", got["h_prev"], gr["h_prev"], layout="(B, H)", what="grads['h_prev']",
                      mistakes=slips("h_prev"))
            t.compare("c_prev", got["c_prev"], gr["c_prev"], layout="(B, H)", what="grads['c_prev']",
                      mistakes=slips("c_prev") + [("multiply by i instead of f", gr["c_prev"] / f * i)])
            t.compare("W_ih", got["W_ih"], gr["W_ih"], layout="(4H, I)", what="grads['W_ih']",
                      mistakes=slips("W_ih"))
            t.compare("W_hh", got["W_hh"], gr["W_hh"], layout="(4H, H)", what="grads['W_hh']",
                      mistakes=slips("W_hh"))
            for b in ("b_ih", "b_hh"):
                t.compare("b_ih and b_hh", got[b], gr[b], layout="(4H,)", what=f"grads['{b}']",
                          mistakes=slips(b))


# ==================================================================== 03 vanilla LSTM

EX03 = "03_vanilla_lstm"
_SEQ_FORBID = {R: {"lstm_forward", "lstm_backward", "_bptt", "rnn_forward", "rnn_backward"}}


def _seq_case(t: TaskRun, T, B, I, H):
    x = _normal(t.rng, T, B, I)
    h0, c0 = _normal(t.rng, B, H, scale=0.5), _normal(t.rng, B, H, scale=0.5)
    return x, h0, c0, _layer(t.rng, 4, I, H)


@task("lstm_sequence_forward", exercise=EX03, points=3, title="an LSTM over a whole sequence",
      checks=("y", "h_n", "c_n"), forbids=_SEQ_FORBID,
      hint="The state (h, c) is carried from each step to the next; the output of every step is collected. "
           "Which of them is y, and which are h_n and c_n? Call the given lstm_step_forward once per step, "
           "starting from h0 and c0; it also returns a cache, which you can ignore here.",
      method="Loop t = 0 .. T-1: h, c, _ = lstm_step_forward(x[t], h, c, W_ih, W_hh, b_ih, b_hh), starting "
             "from h0, c0, and store y[t] = h in an array y = np.zeros((T, B, H)). h_n and c_n are the "
             "states after the last step.")
def _lstm_sequence_forward(t: TaskRun):
    with t.checking("y", "h_n", "c_n"):
        for T, B, I, H in [(5, 3, 4, 6), (1, 1, 1, 1), (9, 2, 3, 4)]:
            t.case = f"T={T}, B={B}, I={I}, H={H}"
            x, h0, c0, w = _seq_case(t, T, B, I, H)
            y_ref, h_ref, c_ref, _ = ref.lstm_forward(x, h0, c0, **w)
            h, c, cs = h0, c0, []
            for s in range(T):
                h, c, _ = ref.lstm_step_forward(x[s], h, c, **w)
                cs.append(c)
            cs = np.stack(cs)
            y, h_n, c_n = t.unpack(t.call(x, h0, c0, w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"]), 3,
                                   "(y, h_n, c_n)")
            h, kept_c0 = h0, []
            for s in range(T):
                h = ref.lstm_step_forward(x[s], h, c0, **w)[0]
                kept_c0.append(h)
            t.compare("y", y, y_ref, layout="(T, B, H)", mistakes=[
                ("store the cell states c_t in y instead of h_t", cs),
                ("restart from h0 and c0 at every step", np.stack([
                    ref.lstm_step_forward(x[s], h0, c0, **w)[0] for s in range(T)])),
                ("store h before the step instead of after it (y[0] is h after step 0)",
                 np.concatenate([h0[None], y_ref[:-1]])),
                ("pass c0 at every step instead of the c of the step before", np.stack(kept_c0)),
                ("stop one step early (range(T - 1))", np.concatenate([y_ref[:-1], 0 * y_ref[-1:]]))])
            early = [] if T == 1 else [("stop one step early", y_ref[-2])]
            t.compare("h_n", h_n, h_ref, layout="(B, H)", mistakes=[
                ("return h0", h0), *early,
                ("pass c0 at every step instead of the c of the step before", kept_c0[-1])])
            early = [] if T == 1 else [("stop one step early", cs[-2])]
            t.compare("c_n", c_n, c_ref, layout="(B, H)", mistakes=[("return c0", c0), *early])


@task("many_to_one_logits", exercise=EX03, points=2, title="a many-to-one classifier's logits",
      checks=("logits",), forbids=_SEQ_FORBID,
      hint="Many-to-one: the network reads the whole sequence, and one vector per example summarises it. "
           "Which of the LSTM's outputs is that vector, and how does the read-out turn it into K logits "
           "per example? The states start at zero; their size H is W_hh's second dimension.",
      method="Run lstm_sequence_forward from zero states (np.zeros((B, H))), take the LAST hidden state "
             "h_n (B, H) and apply the linear read-out: logits = h_n @ W_out.T + b_out, shape (B, K).")
def _many_to_one(t: TaskRun):
    with t.checking("logits"):
        for T, B, I, H, K in [(6, 4, 3, 5, 3), (1, 1, 2, 2, 2), (10, 3, 2, 6, 4)]:
            t.case = f"T={T}, B={B}, I={I}, H={H}, K={K}"
            x = _normal(t.rng, T, B, I)
            w = _layer(t.rng, 4, I, H)
            W_out, b_out = _normal(t.rng, K, H), _normal(t.rng, K)
            zeros = np.zeros((B, H))
            y, h_n, c_n, _ = ref.lstm_forward(x, zeros, zeros, **w)
            got = t.call(x, w, W_out, b_out)
            t.compare("logits", got, h_n @ W_out.T + b_out, layout="(B, K)", mistakes=[
                ("read out the first step's h instead of the last", y[0] @ W_out.T + b_out),
                ("read out the cell state c instead of h", c_n @ W_out.T + b_out),
                ("average h over time", y.mean(axis=0) @ W_out.T + b_out),
                ("forget b_out", h_n @ W_out.T)])


def _softmax_ce(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    B = logits.shape[0]
    loss = -logp[np.arange(B), labels].mean()
    d = np.exp(logp)
    d[np.arange(B), labels] -= 1
    return loss, d / B, logp


@task("softmax_cross_entropy", exercise=EX03, points=3, title="softmax cross-entropy and its gradient",
      checks=("loss", "dlogits", "large logits"),
      hint="Softmax does not change when the same number is subtracted from every logit of a row: choose "
           "it so that no exponential can overflow, and work with log-probabilities. The loss is a mean "
           "over the batch, so its gradient carries a 1 / B; the gradient with respect to the logits is "
           "simple: probabilities minus something.",
      method="Subtract each row's maximum before exponentiating (it changes nothing mathematically and "
             "prevents overflow). log_probs = z - log(sum(exp(z))); loss = -mean of log_probs at the "
             "labels; dlogits = (softmax - one_hot(labels)) / B.")
def _softmax_cross_entropy(t: TaskRun):
    with t.checking("loss", "dlogits"):
        for B, K in [(5, 3), (1, 2), (8, 6)]:
            t.case = f"B={B}, K={K}"
            logits = _normal(t.rng, B, K, scale=2.0)
            labels = t.rng.integers(0, K, B)
            loss, d, logp = _softmax_ce(logits, labels)
            got_loss, got_d = t.unpack(t.call(logits, labels), 2, "(loss, dlogits)")
            t.compare("loss", got_loss, loss, what="loss", mistakes=[
                ("sum over the batch instead of averaging", loss * B),
                ("forget the minus sign", -loss)])
            t.compare("dlogits", got_d, d, layout="(B, K)", what="dlogits", mistakes=[
                ("forget to divide by B", d * B),
                ("forget to subtract the one-hot labels", np.exp(logp) / B)])
    with t.checking("large logits"):
        # the last row is all far below the batch's maximum: only each row's own maximum keeps
        # its exponentials from underflowing to 0 (and the loss from log(0))
        logits = np.array([[1000.0, 0.0, -1000.0], [-800.0, 800.0, 0.0], [-1000.0, -999.0, -1001.0]])
        labels = np.array([0, 2, 1])
        loss, d, _ = _softmax_ce(logits, labels)
        got_loss, got_d = t.unpack(t.call(logits, labels), 2, "(loss, dlogits)")
        try:
            finite = bool(np.isfinite(np.asarray(got_loss, dtype=float)).all())
        except (TypeError, ValueError):
            finite = True  # not a number at all: compare says so
        if not finite:
            t.record("large logits", False, f"the loss is {got_loss} for logits as large as ±1000: exp "
                     "overflows near 1000, and underflows to 0 for a row whose logits are all far below the "
                     "batch's largest (-1000, -999, -1001); subtract each row's own maximum")
        t.compare("large logits", got_loss, loss, what="loss for logits as large as ±1000")
        t.compare("large logits", got_d, d, what="dlogits for logits as large as ±1000")


# =================================================================== 04 stacked LSTM

EX04 = "04_stacked_lstm"


@task("inverted_dropout", exercise=EX04, points=2, title="inverted dropout",
      checks=("p = 0 keeps x", "survivors are scaled by 1 / (1 - p)", "drops about a fraction p",
              "draws from rng"),
      hint="Keep each entry with probability 1 - p and zero it otherwise, drawing from the rng you are "
           "given. 'Inverted' means that training scales the survivors so that each entry keeps its "
           "expected value, and nothing changes at test time: scaled by what?",
      method="mask = rng.random(x.shape) >= p keeps each entry with probability 1 - p; return "
             "x * mask / (1 - p). Dividing by 1 - p keeps the expected value of every entry unchanged, so "
             "nothing needs rescaling at test time.")
def _inverted_dropout(t: TaskRun):
    seed = lambda: np.random.default_rng(int(t.rng.integers(2**62)))
    with t.checking("p = 0 keeps x"):
        x = _normal(t.rng, 4, 5)
        t.compare("p = 0 keeps x", t.call(x, 0.0, seed()), x, layout="same shape as x", what="dropout(x, 0)")
    for p in (0.3, 0.75):
        with t.checking("survivors are scaled by 1 / (1 - p)", "drops about a fraction p"):
            t.case = f"p={p}"
            x = t.rng.uniform(1.0, 2.0, (200, 100))
            out = t.call(x, p, seed())
            ok, msg = _shape_ok(out, x.shape)
            if not ok:
                t.record("survivors are scaled by 1 / (1 - p)", False, msg)
                t.record("drops about a fraction p", False, msg)
                continue
            out = np.asarray(out, dtype=np.float64)
            kept = out != 0
            scaled_ok = np.allclose(out[kept], x[kept] / (1 - p), rtol=1e-9)
            why = "surviving entries should equal x / (1 - p)"
            if np.allclose(out[kept], x[kept], rtol=1e-9):
                why += "; yours equal x (forgot to scale?)"
            elif np.allclose(out[kept], x[kept] * (1 - p), rtol=1e-9):
                why += "; yours equal x * (1 - p) (multiplied instead of divided?)"
            t.record("survivors are scaled by 1 / (1 - p)", bool(scaled_ok), "ok" if scaled_ok else why)
            rate = 1 - kept.mean()
            sigma = np.sqrt(p * (1 - p) / x.size)
            swapped = abs(rate - (1 - p)) < 0.02
            t.record("drops about a fraction p", bool(abs(rate - p) < 6 * sigma),
                     f"dropped a fraction {rate:.3f} of the entries, expected about {p}"
                     + (" (did you keep with probability p instead of dropping?)" if swapped else ""))
    with t.checking("draws from rng"):
        x = t.rng.uniform(1.0, 2.0, (30, 30))
        s = int(t.rng.integers(2**62))
        a = t.call(x, 0.5, np.random.default_rng(s))
        b = t.call(x, 0.5, np.random.default_rng(s))
        c = t.call(x, 0.5, np.random.default_rng(s + 1))
        same = _equal(a, b)
        differ = not _equal(a, c)
        t.record("draws from rng", same and differ,
                 "ok" if same and differ else
                 "the same rng state must give the same mask and another state another mask: draw the mask "
                 "with rng.random(x.shape), not np.random")


def _shape_ok(value, shape) -> tuple[bool, str]:
    if not isinstance(value, np.ndarray):
        return False, f"should return an array of shape {shape}, got {describe(value)}"
    if value.shape != shape:
        return False, f"has shape {value.shape}, expected {shape}"
    return True, ""


def _equal(a, b) -> bool:
    arrays = isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    return arrays and a.shape == b.shape and np.array_equal(a, b)


@task("stacked_lstm_forward", exercise=EX04, points=3, title="a stacked LSTM with dropout between layers",
      checks=("y", "h_n and c_n", "dropout between layers"),
      hint="Each layer's output sequence is the next layer's input. Dropout goes between layers only, "
           "never after the last one: call your inverted_dropout there, with the rng you are given. Each "
           "layer starts from its own h0[l], c0[l] and ends in its own final states, which the function "
           "returns stacked, one per layer.",
      method="Loop over the layers: y, h, c, _ = lstmkit.reference.lstm_forward(inp, h0[l], c0[l], "
             "**layers[l]); collect h and c; the next layer's input is y, passed through "
             "inverted_dropout(y, dropout, rng) when dropout > 0 and l is not the last layer. "
             "Stack the final states with np.stack.")
def _stacked(t: TaskRun):
    def expected(x, h0, c0, layers, drop=None):
        inp, hs, cs = x, [], []
        for li, w in enumerate(layers):
            y, h, c, _ = ref.lstm_forward(inp, h0[li], c0[li], **w)
            hs.append(h)
            cs.append(c)
            inp = drop(y) if drop and li < len(layers) - 1 else y
        return inp, np.stack(hs), np.stack(cs)

    with t.checking("y", "h_n and c_n"):
        for T, B, I, H, L in [(5, 2, 3, 4, 3), (1, 1, 1, 1, 1), (4, 3, 2, 5, 2)]:
            t.case = f"T={T}, B={B}, I={I}, H={H}, L={L}"
            x = _normal(t.rng, T, B, I)
            h0, c0 = _normal(t.rng, L, B, H, scale=0.5), _normal(t.rng, L, B, H, scale=0.5)
            layers = [_layer(t.rng, 4, I if li == 0 else H, H) for li in range(L)]
            y_ref, h_ref, c_ref = expected(x, h0, c0, layers)
            y, h_n, c_n = t.unpack(t.call(x, h0, c0, layers, 0.0, None), 3, "(y, h_n, c_n)")
            first_only = ref.lstm_forward(x, h0[0], c0[0], **layers[0])[0]
            t.compare("y", y, y_ref, layout="(T, B, H)", mistakes=[
                ("return the first layer's outputs", first_only),
                ("start every layer from h0[0], c0[0]", expected(x, h0[[0] * L], c0[[0] * L], layers)[0])])
            t.compare("h_n and c_n", h_n, h_ref, layout="(L, B, H)", what="h_n")
            t.compare("h_n and c_n", c_n, c_ref, layout="(L, B, H)", what="c_n")
    with t.checking("dropout between layers"):
        T, B, I, H = 6, 3, 3, 4
        x = _normal(t.rng, T, B, I)
        h0, c0 = _normal(t.rng, 2, B, H, scale=0.5), _normal(t.rng, 2, B, H, scale=0.5)
        layers = [_layer(t.rng, 4, I, H), _layer(t.rng, 4, H, H)]
        s = int(t.rng.integers(2**62))
        dropout = t.learner("inverted_dropout")
        probe = lambda: dropout(np.ones((T, B, H)), 0.5, np.random.default_rng(s))
        if not _equal(probe(), probe()):
            t.record("dropout between layers", False, "cannot be checked until inverted_dropout draws its "
                     "mask from the rng it is given (see that task)")
            return
        y_ref, h_ref, _ = expected(x, h0, c0, layers, lambda y: dropout(y, 0.5, np.random.default_rng(s)))
        y, h_n, _ = t.unpack(t.call(x, h0, c0, layers, 0.5, np.random.default_rng(s)), 3, "(y, h_n, c_n)")
        no_drop = expected(x, h0, c0, layers)[0]
        t.compare("dropout between layers", y, y_ref, layout="(T, B, H)",
                  what="y with dropout=0.5 (compared with your inverted_dropout between the two layers)",
                  mistakes=[("ignore dropout", no_drop)])
        t.compare("dropout between layers", h_n, h_ref, layout="(L, B, H)", what="h_n with dropout=0.5")


# ============================================================= 05 bidirectional LSTM

EX05 = "05_bidirectional_lstm"
_MODES = ("concat", "sum", "mul", "ave")


def _merge(yf, yb, mode):
    return {"concat": lambda: np.concatenate([yf, yb], axis=-1), "sum": lambda: yf + yb,
            "mul": lambda: yf * yb, "ave": lambda: (yf + yb) / 2}[mode]()


@task("merge_directions", exercise=EX05, points=2, title="the four merge modes",
      checks=(*_MODES, "unknown mode raises ValueError"),
      hint="Both inputs are (T, B, H), with the features on the last axis. Which mode doubles the "
           "features, in which order do the two directions go, and what should the function do with a mode "
           "it does not know?",
      method="concat: np.concatenate([y_fwd, y_bwd], axis=-1) (the forward features first); "
             "sum: y_fwd + y_bwd; mul: y_fwd * y_bwd; ave: (y_fwd + y_bwd) / 2. For any other mode, "
             "raise ValueError(f'unknown merge mode {mode!r}').")
def _merge_directions(t: TaskRun):
    T, B, H = 4, 3, 5
    yf, yb = _normal(t.rng, T, B, H), _normal(t.rng, T, B, H)
    mistakes = {"concat": [("put the backward direction first", np.concatenate([yb, yf], axis=-1)),
                           ("concatenate along the time axis", np.concatenate([yf, yb], axis=0))],
                "ave": [("sum instead of averaging", yf + yb)]}
    for mode in _MODES:
        with t.checking(mode):
            layout = "(T, B, 2H)" if mode == "concat" else "(T, B, H)"
            t.compare(mode, t.call(yf, yb, mode), _merge(yf, yb, mode), layout=layout,
                      what=f"merge mode {mode!r}", mistakes=mistakes.get(mode, ()))
    with t.checking("unknown mode raises ValueError"):
        info = t.raises(yf, yb, "max")
        t.record("unknown mode raises ValueError", info is not None and info.get("type") == "ValueError",
                 "ok" if info and info.get("type") == "ValueError" else
                 "merge mode 'max' should raise ValueError" + (f", yours raised {info.get('type')}" if info
                                                                else ", yours returned a value"))


@task("bidirectional_lstm_forward", exercise=EX05, points=3, title="a bidirectional LSTM layer",
      checks=("y (concat)", "y (sum, mul, ave)", "h_n", "c_n"),
      hint="The backward direction reads the sequence from its last step to its first, so its output comes "
           "out in reverse order. Put it back in time order before merging, so that both directions' "
           "outputs at index t describe step t. Each direction has its own initial states.",
      method="Forward: lstmkit.reference.lstm_forward(x, h0[0], c0[0], **fwd). Backward: run the second "
             "LSTM on the time-reversed input x[::-1] from h0[1], c0[1], then flip its outputs back with "
             "[::-1] so that y_bwd[t] belongs to step t. Merge with merge_directions; "
             "h_n = np.stack([h_fwd, h_bwd]).")
def _bidirectional(t: TaskRun):
    def expected(x, h0, c0, fwd, bwd, mode):
        yf, hf, cf, _ = ref.lstm_forward(x, h0[0], c0[0], **fwd)
        yr, hb, cb, _ = ref.lstm_forward(x[::-1].copy(), h0[1], c0[1], **bwd)
        return _merge(yf, yr[::-1], mode), np.stack([hf, hb]), np.stack([cf, cb]), (yf, yr)

    for mode in _MODES:
        check = "y (concat)" if mode == "concat" else "y (sum, mul, ave)"
        names = (check, "h_n", "c_n") if mode == "concat" else (check,)
        with t.checking(*names):
            cases = [(5, 2, 3, 4), (1, 1, 1, 1), (7, 3, 2, 3)] if mode == "concat" else [(4, 2, 3, 3)]
            for T, B, I, H in cases:
                t.case = f"T={T}, B={B}, I={I}, H={H}, merge_mode={mode!r}"
                x = _normal(t.rng, T, B, I)
                h0, c0 = _normal(t.rng, 2, B, H, scale=0.5), _normal(t.rng, 2, B, H, scale=0.5)
                fwd, bwd = _layer(t.rng, 4, I, H), _layer(t.rng, 4, I, H)
                y_ref, h_ref, c_ref, (yf, yr) = expected(x, h0, c0, fwd, bwd, mode)
                y_unrev = ref.lstm_forward(x, h0[1], c0[1], **bwd)[0]
                y, h_n, c_n = t.unpack(t.call(x, h0, c0, fwd, bwd, mode), 3, "(y, h_n, c_n)")
                t.compare(check, y, y_ref, layout="(T, B, 2H)" if mode == "concat" else "(T, B, H)",
                          what=f"y ({mode})", mistakes=[
                              ("do not flip the backward outputs back into time order", _merge(yf, yr, mode)),
                              ("run the backward LSTM on x without reversing it", _merge(yf, y_unrev, mode)),
                              ("use the forward weights for both directions",
                               expected(x, h0, c0, fwd, fwd, mode)[0])])
                if mode == "concat":
                    wrong_hb = np.stack([h_ref[0], yr[0]])
                    t.compare("h_n", h_n, h_ref, layout="(2, B, H)", mistakes=[
                        ("take the backward final state from the first step it processed", wrong_hb)])
                    t.compare("c_n", c_n, c_ref, layout="(2, B, H)")


# ============================================================ 06 CNN-LSTM, ConvLSTM

EX06 = "06_cnn_lstm_and_convlstm"
_CONV_FORBID = {R: {"_conv2d_same", "convlstm_step_forward"}}


def _true_convolution(x, w):
    return ref._conv2d_same(x, w[:, :, ::-1, ::-1].copy())


@task("conv2d_same", exercise=EX06, points=2, title="a 'same' 2-D convolution",
      checks=("shape", "3 x 3 kernel", "1 x 1 and 5 x 5 kernels"), forbids=_CONV_FORBID,
      hint="'same' means the output keeps the frame's height and width: pad with zeros, half the kernel "
           "size (rounded down) on each side. In deep learning 'convolution' is cross-correlation: the "
           "kernel is not flipped. Try a 3 x 3 kernel on a frame with a single non-zero pixel and work out "
           "the answer by hand.",
      method="Pad the frame with p = k // 2 zeros on each side: np.pad(x, ((0, 0), (0, 0), (p, p), (p, "
             "p))). Then, for each kernel offset (di, dj), take the shifted patch xp[:, :, di:di+Hh, "
             "dj:dj+Ww] (B, C, Hh, Ww) and add np.einsum('bchw,oc->bohw', patch, w[:, :, di, dj]). Do not "
             "flip the kernel: deep-learning 'convolution' is cross-correlation.")
def _conv2d(t: TaskRun):
    for k, check, shapes in [(3, "3 x 3 kernel", [(2, 3, 6, 7, 4), (1, 1, 3, 3, 1)]),
                             (1, "1 x 1 and 5 x 5 kernels", [(2, 2, 5, 5, 3)]),
                             (5, "1 x 1 and 5 x 5 kernels", [(1, 2, 6, 4, 2)])]:
        with t.checking("shape", check):
            for B, C, Hh, Ww, O in shapes:
                t.case = f"B={B}, C={C}, Hh={Hh}, Ww={Ww}, O={O}, k={k}"
                x, w = _normal(t.rng, B, C, Hh, Ww), _normal(t.rng, O, C, k, k)
                want = ref._conv2d_same(x, w)
                got = t.call(x, w)
                ok, msg = _shape_ok(got, want.shape)
                if not ok and isinstance(got, np.ndarray) and got.shape == (B, O, Hh - k + 1, Ww - k + 1):
                    msg += f" (no padding? pad by k // 2 = {k // 2} on each side)"
                t.record("shape", ok, msg or "ok")
                if ok:
                    t.compare(check, got, want, layout="(B, O, Hh, Ww)", mistakes=[
                        ("flip the kernel (a true convolution; deep learning uses cross-correlation)",
                         _true_convolution(x, w))])
                else:
                    t.record(check, False, "wrong shape (see 'shape')")


@task("encode_frames", exercise=EX06, points=2, title="a CNN encoder applied to every frame",
      checks=("features",), forbids=_CONV_FORBID,
      hint="The same CNN runs on every frame, so all T * B frames can go through it as one batch. Keep the "
           "order of the docstring: the convolution, then the ReLU, then global average pooling, a mean "
           "over the height and the width (not a maximum, not a sum).",
      method="Fold time into the batch: clip.reshape(T * B, C, Hh, Ww), one call of conv2d_same, "
             "np.maximum(0, ...) for the ReLU, .mean(axis=(2, 3)) for global average pooling, then reshape "
             "to (T, B, O).")
def _encode_frames(t: TaskRun):
    with t.checking("features"):
        for T, B, C, Hh, Ww, O, k in [(4, 2, 3, 6, 5, 4, 3), (1, 1, 1, 3, 3, 1, 1), (3, 3, 2, 5, 5, 3, 3)]:
            t.case = f"T={T}, B={B}, C={C}, Hh={Hh}, Ww={Ww}, O={O}, k={k}"
            clip, w = _normal(t.rng, T, B, C, Hh, Ww), _normal(t.rng, O, C, k, k)
            maps = ref._conv2d_same(clip.reshape(T * B, C, Hh, Ww), w)
            want = np.maximum(maps, 0).mean(axis=(2, 3)).reshape(T, B, O)
            t.compare("features", t.call(clip, w), want, layout="(T, B, O)", mistakes=[
                ("forget the ReLU", maps.mean(axis=(2, 3)).reshape(T, B, O)),
                ("max-pool instead of averaging", np.maximum(maps, 0).max(axis=(2, 3)).reshape(T, B, O)),
                ("sum instead of averaging", np.maximum(maps, 0).sum(axis=(2, 3)).reshape(T, B, O))])


def _convlstm_variant(x, h_prev, c_prev, W, b, wp=None, *, flip=False, swap=False, o_peep_prev=False):
    """A ConvLSTM step computed with one of the usual slips (the defaults give the right answer)."""
    Ch = h_prev.shape[1]
    xh = np.concatenate([h_prev, x] if swap else [x, h_prev], axis=1)
    a = ref._conv2d_same(xh, W[:, :, ::-1, ::-1].copy() if flip else W) + b[None, :, None, None]
    a_i, a_f, a_g, a_o = (a[:, k * Ch:(k + 1) * Ch] for k in range(4))
    if wp is not None:
        a_i, a_f = a_i + wp[0] * c_prev, a_f + wp[1] * c_prev
    c = ref.sigmoid(a_f) * c_prev + ref.sigmoid(a_i) * np.tanh(a_g)
    if wp is not None:
        a_o = a_o + wp[2] * (c_prev if o_peep_prev else c)
    return ref.sigmoid(a_o) * np.tanh(c), c


@task("convlstm_step_forward", exercise=EX06, points=3, title="one ConvLSTM step",
      checks=("h", "c", "peepholes"), forbids=_CONV_FORBID,
      hint="The LSTM step with every matrix product replaced by a convolution over the input and the "
           "previous hidden state, stacked as channels. The 4 C_h output channels hold the gates i, f, g, "
           "o in blocks. With peepholes, the input and forget gates look at the old cell state, the output "
           "gate at the new one.",
      method="a = conv2d_same(np.concatenate([x, h_prev], axis=1), W) + b[None, :, None, None] has 4 C_h "
             "channels: the gates i, f, g, o in blocks of C_h channels. With peepholes, add w_peep[0] * "
             "c_prev to a_i and w_peep[1] * c_prev to a_f before the sigmoid, and w_peep[2] * c (the NEW "
             "cell state) to a_o.")
def _convlstm(t: TaskRun):
    for peep in (False, True):
        names = ("peepholes",) if peep else ("h", "c")
        with t.checking(*names):
            cases = [(2, 2, 3, 4, 4, 3)] if peep else [(2, 3, 4, 5, 6, 3), (1, 1, 1, 3, 3, 1)]
            for B, Ci, Ch, Hh, Ww, k in cases:
                t.case = f"B={B}, C_in={Ci}, C_h={Ch}, Hh={Hh}, Ww={Ww}, k={k}, peepholes={peep}"
                x = _normal(t.rng, B, Ci, Hh, Ww)
                h_prev, c_prev = _normal(t.rng, B, Ch, Hh, Ww, scale=0.5), _normal(t.rng, B, Ch, Hh, Ww)
                W = _normal(t.rng, 4 * Ch, Ci + Ch, k, k, scale=1 / np.sqrt((Ci + Ch) * k * k))
                b = _normal(t.rng, 4 * Ch, scale=0.3)
                wp = _normal(t.rng, 3, Ch, Hh, Ww, scale=0.5) if peep else None
                h_ref, c_ref = ref.convlstm_step_forward(x, h_prev, c_prev, W, b, wp)
                h, c = t.unpack(t.call(x, h_prev, c_prev, W, b, wp), 2, "(h, c)")
                if peep:
                    t.compare("peepholes", h, h_ref, layout="(B, C_h, Hh, Ww)", what="h with peepholes",
                              mistakes=[("let the output gate's peephole look at c_prev instead of the new c",
                                         _convlstm_variant(x, h_prev, c_prev, W, b, wp, o_peep_prev=True)[0]),
                                        ("ignore the peepholes",
                                         _convlstm_variant(x, h_prev, c_prev, W, b)[0])])
                    t.compare("peepholes", c, c_ref, layout="(B, C_h, Hh, Ww)", what="c with peepholes")
                else:
                    slips = [("flip the kernel", dict(flip=True)),
                             ("stack [h_prev, x] instead of [x, h_prev]", dict(swap=True))]
                    for j, name in enumerate(("h", "c")):
                        t.compare(name, (h, c)[j], (h_ref, c_ref)[j], layout="(B, C_h, Hh, Ww)", mistakes=[
                            (d, _convlstm_variant(x, h_prev, c_prev, W, b, **kw)[j]) for d, kw in slips])


# ===================================================================== 09 Numba kernel

EX09 = "09_under_the_hood_numba_and_cuda"
_NUMBA_FORBID = {R: {"lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
                     "convlstm_step_forward", "_bptt"}}


def _gates_by_order(a, c_prev, order: str):
    """The gate update (float64) as if the four column blocks of ``a`` were the gates in ``order``."""
    a, c_prev = np.asarray(a, np.float64), np.asarray(c_prev, np.float64)
    H = c_prev.shape[1]
    blocks = {n: a[:, k * H:(k + 1) * H] for k, n in enumerate(order)}
    return _gates_expected(np.concatenate([blocks[n] for n in _ORDER], axis=1), c_prev)


def _gates_expected(a, c_prev):
    H = c_prev.shape[1]
    i, f, o = (ref.sigmoid(a[:, k * H:(k + 1) * H]) for k in (0, 1, 3))
    g = np.tanh(a[:, 2 * H:3 * H])
    c = f * c_prev + i * g
    return o * np.tanh(c), c


@task("lstm_gates_numba", exercise=EX09, points=3, title="the fused LSTM gate update as a Numba kernel",
      checks=("compiled with @njit", "float64", "float32 stays float32", "extreme pre-activations"),
      forbids=_NUMBA_FORBID,
      hint="Inside @njit, plain loops over elements are fast: compute each (b, j) element on its own. Unit "
           "j's four pre-activations sit in a's four blocks of H columns, in the order i, f, g, o. Your "
           "scalar sigmoid must be safe for large |x| here too, and the outputs keep c_prev's dtype.",
      method="Decorate with @njit. Allocate h = np.empty_like(c_prev) and c = np.empty_like(c_prev), then "
             "two loops: for b in range(B): for j in range(H): read a[b, j], a[b, H + j], a[b, 2*H + j], "
             "a[b, 3*H + j]; apply your scalar sigmoid (only exponentiate -|x|) and math.tanh; write c[b, "
             "j] and h[b, j]. np.empty_like keeps the input's dtype.")
def _lstm_gates_numba(t: TaskRun):
    # "compiled" is checked after the first call: an unattempted kernel earns nothing for its decorator.
    for dtype, check, rtol in [(np.float64, "float64", 1e-10), (np.float32, "float32 stays float32", 2e-6)]:
        with t.checking(check):
            for B, H in [(3, 5), (1, 1), (8, 16)]:
                t.case = f"B={B}, H={H}, {np.dtype(dtype).name}"
                a = _normal(t.rng, B, 4 * H, scale=2.0).astype(dtype)
                c_prev = _normal(t.rng, B, H).astype(dtype)
                h_ref, c_ref = _gates_expected(a.astype(np.float64), c_prev.astype(np.float64))
                h, c = t.unpack(t.call(a, c_prev), 2, "(h, c)")
                perm = lambda order, a=a, c_prev=c_prev: _gates_by_order(a, c_prev, order)
                t.compare(check, h, h_ref, layout="(B, H)", what="h", rtol=rtol, dtype=dtype,
                          mistakes=[("take the gates in the order i, g, f, o", perm("igfo")[0]),
                                    ("take the gates in the order i, f, o, g", perm("ifog")[0])])
                t.compare(check, c, c_ref, layout="(B, H)", what="c", rtol=rtol, dtype=dtype)
        if dtype is np.float64:
            t.compiled("compiled with @njit")
    with t.checking("extreme pre-activations"):
        B, H = 2, 4
        a = t.rng.choice([-1000.0, -200.0, 200.0, 1000.0], size=(B, 4 * H))
        c_prev = _normal(t.rng, B, H)
        h_ref, c_ref = _gates_expected(a, c_prev)
        h, c = t.unpack(t.call(a, c_prev), 2, "(h, c)")
        for name, got, want in (("h", h, h_ref), ("c", c, c_ref)):
            t.compare("extreme pre-activations", got, want, layout="(B, H)",
                      what=f"{name} for pre-activations of +-1000")


def _gates_backward_case(rng, B, H):
    """Gates, states and the expected (da, dc_prev), from the reference's backward step.

    With W_ih the identity and x the pre-activations, the reference's dx IS da.
    """
    a = _normal(rng, B, 4 * H, scale=1.5)
    h_prev, c_prev = np.zeros((B, H)), _normal(rng, B, H)
    eye, zero = np.eye(4 * H), np.zeros((4 * H, H))
    h, c, cache = ref.lstm_step_forward(a, h_prev, c_prev, eye, zero)
    i, f, g, o = cache[5:9]
    dh, dc = _normal(rng, B, H), _normal(rng, B, H)
    gr = ref.lstm_step_backward(dh, dc, cache)
    return np.concatenate([i, f, g, o], axis=1), c_prev, c, dh, dc, gr["x"], gr["c_prev"], cache


@task("lstm_gates_backward_numba", exercise=EX09, points=3,
      title="the gate update's backward pass as a Numba kernel",
      checks=("compiled with @njit", "da", "dc_prev"), forbids=_NUMBA_FORBID,
      hint="This is the gate part of lstm_step_backward, element by element. The cell state's gradient has "
           "two sources, dc and the path through h: their sum feeds the i, f and g gates and dc_prev, "
           "while the output gate gets its gradient from dh alone. gates holds the values after the "
           "nonlinearities, so write each derivative with the value itself.",
      method="Per element: tc = math.tanh(c[b, j]); dct = dc[b, j] + dh[b, j] * o * (1 - tc*tc); then "
             "da[b, j] = dct * g * i * (1 - i), da[b, H+j] = dct * c_prev[b, j] * f * (1 - f), "
             "da[b, 2H+j] = dct * i * (1 - g*g), da[b, 3H+j] = dh[b, j] * tc * o * (1 - o), "
             "dc_prev[b, j] = dct * f.")
def _lstm_gates_backward_numba(t: TaskRun):
    with t.checking("da", "dc_prev"):
        for B, H in [(3, 5), (1, 1), (6, 8)]:
            t.case = f"B={B}, H={H}"
            gates, c_prev, c, dh, dc, da, dc_prev, cache = _gates_backward_case(t.rng, B, H)
            no_dc = ref.lstm_step_backward(dh, 0 * dc, cache)
            got_da, got_dcp = t.unpack(t.call(gates, c_prev, c, dh, dc), 2, "(da, dc_prev)")
            other = _lstm_backward_slips(dh, dc, cache)
            t.compare("da", got_da, da, layout="(B, 4H)", what="da", mistakes=[
                ("ignore the incoming dc", no_dc["x"]), *((what, g["x"]) for what, g in other.items())])
            t.compare("dc_prev", got_dcp, dc_prev, layout="(B, H)", what="dc_prev", mistakes=[
                ("ignore the incoming dc", no_dc["c_prev"]),
                ("forget the path through h = o * tanh(c)", dc * gates[:, H:2 * H]),
                ("multiply by i instead of f", dc_prev / gates[:, H:2 * H] * gates[:, :H]),
                *((what, g["c_prev"]) for what, g in other.items())])
    t.compiled("compiled with @njit")
