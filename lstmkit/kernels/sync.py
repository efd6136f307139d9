"""Atomic counters for Numba CPU kernels: how the LSTM's threads share a time loop.

A time loop cannot run its steps in parallel, only the blocks of hidden units within a step,
and step t + 1 needs all of step t. Opening a parallel region (``prange``) per step costs
~1 us here, as much as a whole step at small sizes. Instead, the kernels open one region for
the whole loop and, at each step, every thread

1. claims blocks of the step, its own share first, then any other block nobody has claimed
   yet (``claim``), runs each block it claimed and counts it as done (``count_done``);
2. waits until all of the step's blocks are done (``wait_until``): ~80 ns when the other
   threads are on time; after a few spins a waiting thread offers its core to others. (The
   forward pass at batch 1 waits later, in the next step, after a first product on the units
   that the thread computed itself: see ``cpu._lstm_fwd_steps``.)

No thread ever waits for a block that nobody has claimed, so the loop finishes however the
threading layer schedules the region's iterations: with one thread, or when another thread
is late, a thread simply runs the other blocks itself. Which thread ran a block never changes
its result.

Numba has no atomics for CPU code; these intrinsics emit LLVM's (sequentially consistent
read-modify-writes; acquire loads), which also keep the compiler from moving the blocks'
reads and writes across them.

Numba's on-disk cache keys the kernels on their own file only: after changing this one,
delete the cache (``lstmkit/kernels/__pycache__/*.nb[ic]``) or the kernels keep the old code.
"""

from __future__ import annotations

import platform
import sys

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["claim", "count_done", "wait_until"]

_I32 = ir.IntType(32)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_YIELD = sys.platform != "win32"  # sched_yield is POSIX: Linux and macOS libc have it


def _check(arr) -> None:
    if not (isinstance(arr, types.Array) and arr.dtype == types.int32 and arr.ndim == 1):
        raise TypeError(f"expected a 1-D int32 array of counters, got {arr}")


def _pointer(context, builder, arrty, arr, i):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [i])


@intrinsic
def claim(typingctx, flags, i):
    """Set flags[i] from 0 to 1 atomically; True if this call did it (the block is ours)."""
    _check(flags)

    def codegen(context, builder, sig, args):
        p = _pointer(context, builder, sig.args[0], *args)
        won = cgutils.alloca_once_value(builder, cgutils.false_bit)
        # Read first: a plain read of a taken flag does not pull the cache line away from
        # the thread that is using it, which an exchange would.
        free = builder.icmp_signed("==", builder.load_atomic(p, "monotonic", 4), _I32(0))
        with builder.if_then(free):
            swap = builder.cmpxchg(p, _I32(0), _I32(1), "seq_cst", "seq_cst")
            builder.store(builder.extract_value(swap, 1), won)
        return builder.load(won)

    return types.boolean(flags, types.intp), codegen


@intrinsic
def count_done(typingctx, counters, i):
    """counters[i] += 1, atomically, after everything written before it (release)."""
    _check(counters)

    def codegen(context, builder, sig, args):
        p = _pointer(context, builder, sig.args[0], *args)
        builder.atomic_rmw("add", p, _I32(1), "seq_cst")
        return context.get_dummy_value()

    return types.void(counters, types.intp), codegen


# Spins before a waiting thread starts to give its core away (sched_yield) at every check:
# with more threads than cores (two programs running kernels at once), the thread it waits for
# may need that core. Measured here, two Python threads each running 10 training steps at
# B=16, H=128 on two cores, four runs: 139-444 ms with spinning only, 169-224 ms with yields;
# one thread running all 20 steps: 71 ms either way.
SPINS = 64


@intrinsic
def wait_until(typingctx, counters, i, n):
    """Wait until counters[i] >= n; what was written before those counts is then visible."""
    _check(counters)

    def codegen(context, builder, sig, args):
        p = _pointer(context, builder, sig.args[0], args[0], args[1])
        n = context.cast(builder, args[2], sig.args[2], types.int32)
        spins = cgutils.alloca_once_value(builder, _I32(0))
        check, wait = builder.append_basic_block("check"), builder.append_basic_block("wait")
        out = builder.append_basic_block("done")
        builder.branch(check)
        builder.position_at_end(check)
        ready = builder.icmp_signed(">=", builder.load_atomic(p, "acquire", 4), n)
        builder.cbranch(ready, out, wait)
        builder.position_at_end(wait)
        k = builder.load(spins)
        with builder.if_else(builder.icmp_signed("<", k, _I32(SPINS))) as (spin, give_way):
            with spin:
                builder.store(builder.add(k, _I32(1)), spins)
                if _X86:  # tells the core it is in a spin loop: frees resources for its SMT sibling
                    builder.call(_function(builder, "llvm.x86.sse2.pause", ir.VoidType()), [])
            with give_way:
                if _YIELD:
                    builder.call(_function(builder, "sched_yield", _I32), [])
        builder.branch(check)
        builder.position_at_end(out)
        return context.get_dummy_value()

    return types.void(counters, types.intp, types.intp), codegen


def _function(builder, name: str, returns):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(returns, []), name)
