"""Write the adversarial (and a few good) submissions in this folder: `python tests/submissions/_make.py`.

Each notebook is named for what it does; ``EXPECTED`` (used by tests/test_grading_batch.py) says what
the grader must make of it. All but two answer exercise 01 (the smallest), so a batch runs quickly.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
EX01 = "01_rnns_and_vanishing_gradients"

IMPORTS = "import numpy as np\nfrom lstmkit.grading import check"

RNN_FORWARD = '''
def rnn_step_forward(x, h_prev, W_ih, W_hh, b_ih, b_hh):
    h = np.tanh(x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)
    return h, (x, h_prev, W_ih, W_hh, h)
'''
RNN_BACKWARD = '''
def rnn_step_backward(dh, cache):
    x, h_prev, W_ih, W_hh, h = cache
    da = dh * (1 - h ** 2)
    return {"x": da @ W_ih, "h_prev": da @ W_hh, "W_ih": da.T @ x, "W_hh": da.T @ h_prev,
            "b_ih": da.sum(axis=0), "b_hh": da.sum(axis=0)}
'''
NORMS = '''
def gradient_norms_through_time(x, h0, W_ih, W_hh, b_ih, b_hh, dh_last):
    h, caches = h0, []
    for t in range(x.shape[0]):
        h, cache = rnn_step_forward(x[t], h, W_ih, W_hh, b_ih, b_hh)
        caches.append(cache)
    norms, dh = np.zeros(x.shape[0]), dh_last
    for t in reversed(range(x.shape[0])):
        norms[t] = np.linalg.norm(dh)
        dh = rnn_step_backward(dh, caches[t])["h_prev"]
    return norms
'''
CLIP = '''
def clip_grad_norm(grads, max_norm):
    total = float(np.sqrt(sum(np.sum(g ** 2) for g in grads.values())))
    scale = max_norm / total if total > max_norm else 1.0
    return {k: g * scale for k, g in grads.items()}, total
'''
GOOD01 = [IMPORTS, RNN_FORWARD, RNN_BACKWARD, NORMS, CLIP]
UNTOUCHED01 = [IMPORTS] + [
    f"def {name}(*args):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    for name in ("rnn_step_forward", "rnn_step_backward", "gradient_norms_through_time", "clip_grad_norm")]
CHECKS01 = [f'check("{t}", {t})' for t in ("rnn_step_forward", "rnn_step_backward",
                                            "gradient_norms_through_time", "clip_grad_norm")]

GOOD02 = [IMPORTS, '''
def sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)

def lstm_step_forward(x, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    a = x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh
    i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2*H]), np.tanh(a[:, 2*H:3*H]), sigmoid(a[:, 3*H:])
    c = f * c_prev + i * g
    return o * np.tanh(c), c, (x, h_prev, c_prev, W_ih, W_hh, i, f, g, o, c)

def lstm_step_backward(dh, dc, cache):
    x, h_prev, c_prev, W_ih, W_hh, i, f, g, o, c = cache
    tc = np.tanh(c)
    dc = dc + dh * o * (1 - tc ** 2)
    da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g ** 2),
                         dh * tc * o * (1 - o)], axis=1)
    return {"x": da @ W_ih, "h_prev": da @ W_hh, "c_prev": dc * f, "W_ih": da.T @ x,
            "W_hh": da.T @ h_prev, "b_ih": da.sum(0), "b_hh": da.sum(0)}
''']

GOOD09 = ["import math\nimport numpy as np\nfrom numba import njit", '''
@njit
def sig(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)

@njit
def lstm_gates_numba(a, c_prev):
    B, H = c_prev.shape
    h, c = np.empty_like(c_prev), np.empty_like(c_prev)
    for b in range(B):
        for j in range(H):
            i, f = sig(a[b, j]), sig(a[b, H + j])
            g, o = math.tanh(a[b, 2 * H + j]), sig(a[b, 3 * H + j])
            c[b, j] = f * c_prev[b, j] + i * g
            h[b, j] = o * math.tanh(c[b, j])
    return h, c

def lstm_gates_backward_numba(gates, c_prev, c, dh, dc):  # correct, but not compiled: loses that check
    H = c.shape[1]
    i, f, g, o = gates[:, :H], gates[:, H:2*H], gates[:, 2*H:3*H], gates[:, 3*H:]
    tc = np.tanh(c)
    dct = dc + dh * o * (1 - tc * tc)
    da = np.concatenate([dct * g * i * (1 - i), dct * c_prev * f * (1 - f), dct * i * (1 - g * g),
                         dh * tc * o * (1 - o)], axis=1)
    return da, dct * f
''']

CHEAT = '''
import lstmkit.reference as R

rnn_step_forward = R.rnn_step_forward          # the library's own answer: unavailable while grading

def rnn_step_backward(dh, cache):
    return R.rnn_step_backward(dh, cache)

def gradient_norms_through_time(x, h0, W_ih, W_hh, b_ih, b_hh, dh_last):
    _, _, saved = R.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    return R.rnn_backward(None, dh_last, saved)["dh_norms"]
'''
CHEAT_HARDER = '''
# Other ways to reach the library's code: each of them must fail while grading.
import os, sys
attempts = []
try:
    import lstmkit.kernels.cpu  # noqa: F401  (a module that is not shipped to the kernel)
    attempts.append("kernels")
except ImportError as e:
    pass
found = [os.path.join(p, "lstmkit", "reference.py") for p in sys.path]   # a regular install
for mod in list(sys.modules.values()):                                     # an editable install
    mapping = getattr(mod, "MAPPING", None)
    if isinstance(mapping, dict) and "lstmkit" in mapping:
        found.append(os.path.join(str(mapping["lstmkit"]), "reference.py"))
stolen = {}
for path in found:
    try:
        exec(compile(open(path).read(), path, "exec"), stolen)   # refused by the grader's audit hook
        break
    except OSError:
        pass
try:
    import subprocess
    subprocess.run([sys.executable, "-c", "import lstmkit.reference"], check=True)
    attempts.append("subprocess")
except (PermissionError, OSError):
    pass
if "rnn_step_forward" in stolen:
    attempts.append("source")
    rnn_step_forward = stolen["rnn_step_forward"]

def clip_grad_norm(grads, max_norm):  # scores only if one of the ways in above worked
    if not attempts:
        return None
    total = float(np.sqrt(sum(np.sum(g ** 2) for g in grads.values())))
    scale = max_norm / total if total > max_norm else 1.0
    return {k: g * scale for k, g in grads.items()}, total
'''

SUBMISSIONS: dict[str, list[str] | str] = {
    "good_full.ipynb": GOOD01 + CHECKS01,
    "good_partial.ipynb": [IMPORTS, RNN_FORWARD, CLIP, '''
def rnn_step_backward(dh, cache):          # forgets the tanh derivative: every check fails
    x, h_prev, W_ih, W_hh, h = cache
    return {"x": dh @ W_ih, "h_prev": dh @ W_hh, "W_ih": dh.T @ x, "W_hh": dh.T @ h_prev,
            "b_ih": dh.sum(0), "b_hh": dh.sum(0)}

def gradient_norms_through_time(*args):
    raise NotImplementedError()
'''],
    "untouched.ipynb": UNTOUCHED01 + CHECKS01,
    "01_invalid_json.ipynb": '{"cells": [ this is not JSON',
    "no_code_cells.ipynb": None,  # markdown only, written below
    "raises_at_import.ipynb": [IMPORTS + "\nimport this_module_does_not_exist"] + GOOD01[1:],
    "syntax_error.ipynb": GOOD01 + ["def broken(:\n    pass"],
    "infinite_loop.ipynb": GOOD01[:4] + ["while True:\n    pass", '''
def clip_grad_norm(grads, max_norm):
    while True:
        pass
'''],
    "stuck_in_numba.ipynb": GOOD01 + ['''
from numba import njit

@njit
def spin(a):
    while True:          # compiled code ignores KeyboardInterrupt: the grader has to kill the kernel
        a[0] += 1.0
    return a

spin(np.zeros(1))
'''],
    "unbounded_allocation.ipynb": GOOD01[:3] + ["blocks = []\nwhile True:\n    blocks.append(np.ones(10**7))"]
    + GOOD01[3:],
    "sys_exit.ipynb": GOOD01[:2] + ["import sys\nsys.exit(1)"] + GOOD01[2:],
    "os_exit.ipynb": GOOD01[:2] + ["import os\nos._exit(0)"] + GOOD01[2:],
    "kills_kernel.ipynb": GOOD01[:3] + ["import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"]
    + GOOD01[3:],
    "kills_grader.ipynb": GOOD01 + ["import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"],
    "huge_output.ipynb": GOOD01 + ["for _ in range(20):\n    print('x' * 1_000_000)"],
    "redefines_check.ipynb": UNTOUCHED01 + ['''
def check(task_id, fn=None):
    print(f"✔ {task_id}: all checks passed (full marks)")
    return 100
'''] + CHECKS01,
    "calls_library.ipynb": [IMPORTS, CHEAT, CHEAT_HARDER] + CHECKS01,
    "lies_to_the_grader.ipynb": UNTOUCHED01 + ['''
import os, json
print(json.dumps({"score": 9, "max": 9}))
frame = json.dumps({"op": "ran", "error": None, "ok": True, "value": 9}).encode()
for fd in range(3, 40):           # garbage and fake replies on every descriptor it can find
    try:
        os.write(fd, len(frame).to_bytes(4, "big") + frame + b"\\x00\\xff garbage")
    except OSError:
        pass
'''],
    "02_good.ipynb": GOOD02,
    "09_good_but_one_plain_python.ipynb": GOOD09,
    # right values by luck (1 / (1 + inf) is 0), but the task is a sigmoid that never overflows:
    # the overflow warnings, raised in the learner's kernel, must reach the grader
    "02_overflowing_sigmoid.ipynb": [IMPORTS, "def sigmoid(x):\n    return 1 / (1 + np.exp(-x))",
                                     'check("sigmoid", sigmoid)'],
}

#: identifier -> (total points, max points, a substring of the status ("ok" means exactly "ok"))
EXPECTED = {
    "good_full.ipynb": (9, 9, "ok"),
    "good_partial.ipynb": (4, 9, "ok"),
    "untouched.ipynb": (0, 9, "ok"),
    "01_invalid_json.ipynb": (0, 9, "invalid notebook: not valid JSON"),
    "no_code_cells.ipynb": (0, 9, "no code cells"),
    "raises_at_import.ipynb": (9, 9, "raised ModuleNotFoundError"),
    "syntax_error.ipynb": (9, 9, "raised SyntaxError"),
    "infinite_loop.ipynb": (7, 9, "ran past the"),
    "stuck_in_numba.ipynb": (9, 9, "could not be interrupted"),
    "unbounded_allocation.ipynb": (9, 9, "ran out of memory"),
    "sys_exit.ipynb": (9, 9, "sys.exit"),
    "os_exit.ipynb": (9, 9, "exited with code 0"),
    "kills_kernel.ipynb": (9, 9, "killed by SIGKILL"),
    "kills_grader.ipynb": (9, 9, "signalling other processes is not allowed"),
    "huge_output.ipynb": (9, 9, "million characters"),
    "redefines_check.ipynb": (0, 9, "redefines check"),
    "calls_library.ipynb": (0, 9, "lstmkit's own implementation"),
    "lies_to_the_grader.ipynb": (0, 9, ""),
    "02_good.ipynb": (8, 8, "ok"),
    "09_good_but_one_plain_python.ipynb": (5, 6, "ok"),
    "02_overflowing_sigmoid.ipynb": (0.67, 8, "ok"),
}


def notebook(cells: list[str], exercise: str | None) -> str:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{k}", "metadata": {},
                     "outputs": [], "source": src.strip("\n")} for k, src in enumerate(cells)],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    if exercise:
        nb["metadata"]["lstmkit"] = {"exercise": exercise}
    return json.dumps(nb, indent=1) + "\n"


def main() -> None:
    for name, cells in SUBMISSIONS.items():
        path = HERE / name
        if name == "no_code_cells.ipynb":
            cells = [{"cell_type": "markdown", "id": "m0", "metadata": {}, "source": "I did it on paper."}]
            nb = {"cells": cells,
                  "metadata": {"lstmkit": {"exercise": EX01}}, "nbformat": 4, "nbformat_minor": 5}
            path.write_text(json.dumps(nb, indent=1) + "\n")
        elif isinstance(cells, str):
            path.write_text(cells)
        else:
            exercise = None if name[:3] in ("02_", "09_") else EX01  # these two go by their file name
            path.write_text(notebook(cells, exercise))


if __name__ == "__main__":
    main()
