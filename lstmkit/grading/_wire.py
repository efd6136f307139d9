"""The wire format between the grader and a learner's sandboxed kernel: safe in both directions.

The grader never unpickles anything that comes from a learner's process. Values travel as
JSON; NumPy arrays as their raw bytes (base64) with a dtype from a short whitelist and a
shape, checked against the byte count on the way in. What can travel: None, bools, ints,
floats (NaN and inf included), short strings, tuples, lists, dicts with string keys, NumPy
arrays and scalars of numeric dtypes, and (grader to kernel only, in practice) NumPy
random generators as their PCG64 state. torch tensors are converted to arrays on the way out.

Frames on a pipe: the 4 bytes ``MAGIC``, a 4-byte big-endian length, then that many bytes of
UTF-8 JSON. Anything else on the pipe (a learner writing to a descriptor it found) is a
protocol error at once, not a wait for a length that never arrives.

This file imports nothing from lstmkit: the sandboxed kernel loads it by path before it
locks itself down (see ``_child.py``), and ``check()`` uses the same functions so that the
instant feedback and the batch grader see exactly the same values.
"""

from __future__ import annotations

import base64
import json
import linecache
import os
import struct
import traceback

import numpy as np

MAX_DEPTH = 16
MAX_ITEMS = 10_000  # elements of all containers in one message (array elements do not count)
MAX_STR = 10_000
MAX_FRAME = 64 * 2**20  # bytes
MAGIC = b"LKG\x01"
HEADER = 8  # MAGIC + length

# dtype.str values that may travel ('|b1' is bool). Nothing with objects, no structured dtypes.
_DTYPES = {
    f"{order}{kind}{size}"
    for order in "<>|"
    for kind, sizes in (("f", (2, 4, 8)), ("i", (1, 2, 4, 8)), ("u", (1, 2, 4, 8)), ("c", (8, 16)),
                        ("b", (1,)))
    for size in sizes
}


class WireError(ValueError):
    """A value that cannot travel, or a message that does not decode."""


def _tensor_to_array(obj):
    """torch tensors become arrays without importing torch here."""
    t = type(obj)
    if t.__name__ in ("Tensor", "Parameter") and t.__module__.startswith("torch"):
        return obj.detach().cpu().numpy()
    return None


def encode(obj) -> object:
    """A JSON-able form of ``obj``; raises WireError (with a learner-friendly message) otherwise."""
    budget = [MAX_ITEMS]

    def enc(o, depth):
        if depth > MAX_DEPTH:
            raise WireError(f"the value is nested more than {MAX_DEPTH} levels deep")
        budget[0] -= 1
        if budget[0] < 0:
            raise WireError(f"the value has more than {MAX_ITEMS} items in its lists, tuples and dicts")
        if o is None or isinstance(o, (bool, str)):
            if isinstance(o, str) and len(o) > MAX_STR:
                raise WireError(f"a string of {len(o)} characters is too long to send")
            return o
        if isinstance(o, int):
            return {"__int__": str(o)} if abs(o) >= 2**53 else o
        if isinstance(o, float):
            # (float(): NumPy 2's repr of np.float64(inf) is "np.float64(inf)", not "inf")
            return o if np.isfinite(o) else {"__float__": repr(float(o))}
        if isinstance(o, (np.generic, np.ndarray)):
            return _enc_array(np.asarray(o))
        if isinstance(o, tuple):
            return {"__tuple__": [enc(v, depth + 1) for v in o]}
        if isinstance(o, list):
            return [enc(v, depth + 1) for v in o]
        if isinstance(o, dict):
            for k in o:
                if not isinstance(k, str):
                    raise WireError(f"dict keys must be strings, got a key of type {type(k).__name__}")
            return {"__dict__": [[k, enc(v, depth + 1)] for k, v in o.items()]}
        if isinstance(o, np.random.Generator):
            bg = o.bit_generator
            if type(bg).__name__ != "PCG64":
                raise WireError("only PCG64 random generators (np.random.default_rng) can be sent")
            return {"__rng__": _plain(bg.state)}
        arr = _tensor_to_array(o)
        if arr is not None:
            return _enc_array(arr)
        raise WireError(f"an object of type {type(o).__name__} cannot be compared by the grader: "
                        f"return NumPy arrays, numbers, tuples, lists or dicts")

    return enc(obj, 0)


def _plain(state):
    """The PCG64 state dict with Python ints only (it already is; this guards the format)."""
    return {"bit_generator": "PCG64",
            "state": {"state": str(int(state["state"]["state"])), "inc": str(int(state["state"]["inc"]))},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def _enc_array(a: np.ndarray):
    if a.dtype.str not in _DTYPES:
        raise WireError(f"an array of dtype {a.dtype} cannot be compared by the grader: use a numeric dtype")
    a = np.ascontiguousarray(a)
    return {"__nd__": [a.dtype.str, list(a.shape), base64.b64encode(a.tobytes()).decode("ascii")]}


def decode(obj) -> object:
    """The inverse of ``encode``, validating everything: safe on untrusted input."""
    budget = [MAX_ITEMS * 2]

    def dec(o, depth):
        if depth > MAX_DEPTH + 2:
            raise WireError("message nested too deeply")
        budget[0] -= 1
        if budget[0] < 0:
            raise WireError("message has too many items")
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        if isinstance(o, list):
            return [dec(v, depth + 1) for v in o]
        if not isinstance(o, dict) or len(o) != 1:
            raise WireError("malformed message")
        (tag, v), = o.items()
        if tag == "__tuple__" and isinstance(v, list):
            return tuple(dec(x, depth + 1) for x in v)
        if tag == "__dict__" and isinstance(v, list):
            out = {}
            for pair in v:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise WireError("malformed dict in message")
                out[pair[0]] = dec(pair[1], depth + 1)
            return out
        if tag == "__nd__":
            return _dec_array(v)
        if tag == "__int__" and isinstance(v, str) and len(v) < 400:
            return int(v)
        if tag == "__float__" and v in ("nan", "inf", "-inf"):
            return float(v)
        if tag == "__rng__" and isinstance(v, dict):
            return _dec_rng(v)
        raise WireError(f"malformed message (tag {tag[:20]!r})")

    return dec(obj, 0)


def _dec_array(v) -> np.ndarray:
    if not (isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and isinstance(v[1], list)
            and isinstance(v[2], str)):
        raise WireError("malformed array in message")
    dtype_str, shape, data = v
    if dtype_str not in _DTYPES:
        raise WireError(f"array dtype {dtype_str[:10]!r} is not allowed")
    if len(shape) > 32 or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape):
        raise WireError("malformed array shape in message")
    dtype = np.dtype(dtype_str)
    raw = base64.b64decode(data.encode("ascii"), validate=True)
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw):
        raise WireError("array size does not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _dec_rng(v) -> np.random.Generator:
    try:
        state = {"bit_generator": "PCG64",
                 "state": {"state": int(v["state"]["state"]), "inc": int(v["state"]["inc"])},
                 "has_uint32": int(v["has_uint32"]), "uinteger": int(v["uinteger"])}
        bg = np.random.PCG64()
        bg.state = state
    except Exception as exc:
        raise WireError("malformed random generator in message") from exc
    return np.random.Generator(bg)


def roundtrip(obj):
    """What the other side of the pipe would see: a deep, validated copy (used by ``check``)."""
    return decode(json.loads(json.dumps(encode(obj))))


# ---------------------------------------------------------------------------- framing


def pack(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body) / 2**20:.0f} MiB is larger than the "
                        f"{MAX_FRAME // 2**20} MiB limit")
    return MAGIC + struct.pack(">I", len(body)) + body


def unpack_length(header: bytes) -> int:
    """The body length announced by an 8-byte frame header."""
    if header[:4] != MAGIC:
        raise WireError("not a frame of the grading protocol")
    (n,) = struct.unpack(">I", header[4:8])
    if n > MAX_FRAME:
        raise WireError(f"reply of {n / 2**20:.0f} MiB is larger than the {MAX_FRAME // 2**20} MiB limit")
    return n


def parse(body: bytes) -> dict:
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError("reply is not valid JSON") from exc
    if not isinstance(msg, dict):
        raise WireError("reply is not a JSON object")
    return msg


# ------------------------------------------------------------------ describing errors


def one_line(text: str, limit: int = 240) -> str:
    """Collapse whitespace and cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# lstmkit's own files: an error raised in them (a reference function given a wrong shape) is
# placed at the learner's line that called them, wherever lstmkit is installed
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def describe_exception(exc: BaseException, skip_files: tuple[str, ...] = ()) -> dict:
    """Type, message and where in the learner's code it happened (the deepest frame whose file
    is not in a library), e.g. {"type": "ValueError", "message": "...", "where": "in f, line 3:
    c = f * c_prev"}."""
    where = ""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if not any(s in f.filename for s in skip_files)
               and not f.filename.startswith(_PACKAGE)
               and "site-packages" not in f.filename and "/lib/python" not in f.filename]
        if own:
            f = own[-1]
            line = f.line or linecache.getline(f.filename, f.lineno).strip()
            where = f"in {f.name}, line {f.lineno}" + (f": {line.strip()}" if line else "")
    except Exception:  # a learner's exception can be anything; never fail while describing it
        pass
    try:
        message = str(exc)
        message = _numba_typing(message) or message
    except Exception:
        message = "(the exception's message could not be read)"
    return {"type": one_line(type(exc).__name__, 80), "message": one_line(message), "where": one_line(where)}


def _numba_typing(message: str) -> str | None:
    """Numba's typing errors run to dozens of lines, and a one-line cut keeps none of what the
    learner needs: what could not be typed, and the line of their code. Those two, and for a
    value of type none, where it usually comes from; None for any other message."""
    if not message.startswith("Failed in nopython mode pipeline"):
        return None
    lines = [line.strip() for line in message.splitlines()]
    body = [line for line in lines[1:] if line and not line.startswith("During:")]
    what = body[0] if body else "Numba could not compile it"
    signature = next((line[3:].strip() for line in body if line.startswith(">>>")), "")
    if signature:  # "No implementation of function Function(<built-in function mul>) found ..."
        what = f"Numba has no implementation of {signature}"
    where = ""
    for k, line in enumerate(lines):  # File "...", line N: / def ...: / ... / the line / ^
        if line.startswith("File ") and ", line " in line:
            caret = next((m for m in range(k + 1, min(k + 12, len(lines))) if lines[m] == "^"), None)
            source = f" {lines[caret - 1]}" if caret else ""
            where = f" (at line {line.rsplit(', line ', 1)[1].rstrip(':')}:{source})"
    none = ""
    if "none" in signature.replace("None", ""):
        none = (" A none comes from a function that returns nothing or only raises: does a helper "
                "still raise NotImplementedError?")
    return f"{what}{where}.{none}"
