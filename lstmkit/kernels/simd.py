"""Hand-written SIMD for Numba CPU kernels: a matrix-vector product with its sums held in
vector registers, and the transposition that packs its matrix.

At batch 1 each LSTM step is a matrix-vector product, y += h @ W (W: H x 4H), and the matrix
(256 KiB at H = 128) is read from the core's cache at every step: the product is bound by
how fast the core reads W. Written in Numba, the loop over the outputs j (inner) and inputs k
(outer) loads and stores y[j] again for every k: LLVM's loop vectoriser cannot keep y in
registers across k, and its SLP vectoriser, which could, is off in Numba
(``NUMBA_SLP_VECTORIZE``). Measured on one core of a 2-core AMD EPYC, W^T of 128 x 256 float32
(128 KiB) in its cache: 1.1-1.3 us per product for the best Numba loops and for BLAS sgemv,
0.59-0.62 us for ``add_tile``, 0.63-0.65 us to merely read W. On a 2-core Intel Xeon, whose
cores read their caches more slowly: 1.3 us for ``add_tile`` and for sgemv alike, 0.8 us to
read W (two tiles per pass, or llvm.fma instead of a multiply and an add, took 1.16-1.34 us).

Both intrinsics emit LLVM IR on 64-byte vectors (``<16 x float>`` or
``<8 x double>``), which LLVM splits into what the CPU has: 1 AVX-512, 2 AVX or 4 SSE/NEON
registers. ``add_tile`` keeps ``TILE`` outputs in registers for one pass over k, and loads and
stores y once per tile. It multiplies and then adds, without the fast-math flags of the kernel
that calls it, so each output is summed in order, k = 0, 1, ..., in plain IEEE arithmetic: the
same bits wherever and however it is compiled.

They read and write raw pointers: the caller guarantees the bounds (see each docstring).
Numba's on-disk cache keys the kernels on their own file only: after changing this one,
delete the cache (``lstmkit/kernels/__pycache__/*.nb[ic]``) or the kernels keep the old code.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["TILE", "VECTOR_BYTES", "add_tile", "transpose_block"]

TILE = 64  # outputs per tile: in float32, 4 AVX-512 registers (see ``add_tile``)
VECTOR_BYTES = 64  # one AVX-512 register
_I32, _INTP = ir.IntType(32), ir.IntType(types.intp.bitwidth)
# Numba's fast-math pass gives every float instruction that has no flags of its own the
# function's flags ("contract" would fuse fmul and fadd into one FMA, "reassoc" reorder the
# sums). "nsz" (the sign of a zero may be ignored) is a flag, so the pass leaves these alone,
# and it changes no bit of a sum that is not zero.
_STRICT = ("nsz",)


def _check(function: str, arrays: dict) -> None:
    """Each array 1-D, contiguous (pointer arithmetic), float32 or float64, all one dtype."""
    for name, arr in arrays.items():
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
                and arr.dtype in (types.float32, types.float64)):
            raise TypeError(f"{function}: {name} must be a contiguous 1-D float32 or float64 "
                            f"array, got {arr}")
    if len({arr.dtype for arr in arrays.values()}) > 1:
        raise TypeError(f"{function}: {', '.join(arrays)} must have one dtype, got "
                        f"{', '.join(str(arr.dtype) for arr in arrays.values())}")


def _vectors(context, dtype) -> tuple:
    """(vector type, element size in bytes, lanes) of a 64-byte vector of dtype."""
    size = dtype.bitwidth // 8
    lanes = VECTOR_BYTES // size
    return ir.VectorType(context.get_value_type(dtype), lanes), size, lanes


def _vector_at(context, builder, arrty, arr, offset, vec):
    """Pointer to arr[offset], as a pointer to vectors of type vec."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), vec.as_pointer())


@intrinsic
def add_tile(typingctx, y, y0, W, w0, ld, h):
    """y[y0 + v] += sum over k of h[k] * W[w0 + k * ld + v], for v < TILE and k < h.size.

    y, W, h: 1-D, contiguous, all float32 or all float64. W holds h.size rows of TILE values,
    ld apart: a tile of W^T packed (ld = TILE), or TILE adjacent columns of a row-major matrix
    (ld = its width).
    Bounds are the caller's: y0 + TILE <= y.size and w0 + (h.size - 1) * ld + TILE <= W.size.
    """
    _check("add_tile", {"y": y, "W": W, "h": h})

    def codegen(context, builder, sig, args):
        yv, y0, Wv, w0, ld, hv = args
        yty, _, Wty, _, _, hty = sig.args
        vec, size, lanes = _vectors(context, yty.dtype)
        y_at = _vector_at(context, builder, yty, yv, y0, vec)  # TILE // lanes vectors
        ys = [builder.gep(y_at, [_INTP(v)]) for v in range(TILE // lanes)]
        # Sums in allocas, which LLVM promotes to registers: they never touch memory in the loop.
        sums = [cgutils.alloca_once_value(builder, builder.load(p, align=size)) for p in ys]
        h = context.make_array(hty)(context, builder, hv)
        n = builder.extract_value(h.shape, 0)
        w_at = builder.bitcast(_vector_at(context, builder, Wty, Wv, w0, vec),
                               vec.element.as_pointer())
        undef = ir.Constant(vec, None)
        with cgutils.for_range(builder, n) as loop:
            k = loop.index
            hk = builder.insert_element(undef, builder.load(builder.gep(h.data, [k])), _I32(0))
            hk = builder.shuffle_vector(hk, undef, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))
            row = builder.bitcast(builder.gep(w_at, [builder.mul(k, ld)]), vec.as_pointer())
            for v, s in enumerate(sums):
                w = builder.load(builder.gep(row, [_INTP(v)]), align=size)
                # fmul then fadd, never fused or reordered (see _STRICT)
                product = builder.fmul(w, hk, flags=_STRICT)
                builder.store(builder.fadd(builder.load(s), product, flags=_STRICT), s)
        for p, s in zip(ys, sums):
            builder.store(builder.load(s), p, align=size)
        return context.get_dummy_value()

    return types.void(y, types.intp, W, types.intp, types.intp, h), codegen


@intrinsic
def transpose_block(typingctx, dst, d0, ldd, src, s0, lds):
    """dst[d0 + c * ldd + r] = src[s0 + r * lds + c] for r, c < L: one L x L block transposed,
    L = 64 bytes / itemsize (16 in float32, 8 in float64), rows lds and ldd apart.

    dst, src: 1-D, contiguous, one dtype. The L rows are loaded as vectors and transposed in
    registers, in log2(L) rounds that each interleave row i with row i + L/2 (a "perfect
    shuffle"), after which the rows are the columns. Measured here, packing a (512, 128)
    float32 W_hh into tiles: 6 us, against 21 us for the quickest plain Numba loop (each
    element a load and a store of its own). Bounds are the caller's."""
    _check("transpose_block", {"dst": dst, "src": src})

    def codegen(context, builder, sig, args):
        dv, d0v, lddv, sv, s0v, ldsv = args
        dty, _, _, sty, _, _ = sig.args
        vec, size, n = _vectors(context, dty.dtype)

        def row(arrty, arr, start, ld, r):
            at = builder.add(start, builder.mul(ld, _INTP(r)))
            return _vector_at(context, builder, arrty, arr, at, vec)

        rows = [builder.load(row(sty, sv, s0v, ldsv, r), align=size) for r in range(n)]
        low = ir.Constant(ir.VectorType(_I32, n), [i // 2 + (i % 2) * n for i in range(n)])
        high = ir.Constant(ir.VectorType(_I32, n), [n // 2 + i // 2 + (i % 2) * n for i in range(n)])
        for _ in range(n.bit_length() - 1):  # log2(n) rounds
            pairs = [(rows[i], rows[i + n // 2]) for i in range(n // 2)]
            rows = [builder.shuffle_vector(a, b, m) for a, b in pairs for m in (low, high)]
        for r, v in enumerate(rows):
            builder.store(v, row(dty, dv, d0v, lddv, r), align=size)
        return context.get_dummy_value()

    return types.void(dst, types.intp, types.intp, src, types.intp, types.intp), codegen
