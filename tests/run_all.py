"""The whole test suite, stage by stage (what `make test` runs).

1. ruff over the repository;
2. unit, property and parity tests (pytest tests/, without tests/cuda);
3. the CUDA kernels under Numba's CUDA simulator, in their own process, because
   NUMBA_ENABLE_CUDASIM must be set before numba is first imported;
4. every notebook under nbval, one pytest process per notebook so each gets a timing.

Ends with a table of stage and notebook times and one summary line with the totals.
Extra arguments are passed to every pytest stage (e.g. `-x`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NOTEBOOK_DIRS = ["notebooks", "solutions", "exercises"]
NBVAL = ["--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=120",
         "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "-p", "no:cacheprovider"]


def run(cmd: list[str], env: dict | None = None) -> tuple[int, str, float]:
    """Run a command, echoing its output live; return (exit code, output, seconds)."""
    print(f"\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    proc.wait()
    return proc.returncode, "".join(lines), time.perf_counter() - start


def counts(output: str) -> dict[str, int]:
    """passed/failed/error/skipped counts from pytest's closing line."""
    found = {}
    tail = output.strip().splitlines()[-1:] or [""]
    for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", tail[0]):
        key = "failed" if word.startswith("error") else word
        found[key] = found.get(key, 0) + int(n)
    return found


def main(extra: list[str]) -> int:
    env = {"TQDM_DISABLE": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    stages: list[tuple[str, list[str], dict]] = [
        ("ruff", [PY, "-m", "ruff", "check", "."], {}),
        ("unit, property and parity tests",
         [PY, "-m", "pytest", "tests", "--ignore=tests/cuda", "-q", *extra], {}),
        ("CUDA kernels (simulator)",
         [PY, "-m", "pytest", "tests/cuda", "-q", "-m", "not torch_cuda", *extra],
         {"NUMBA_ENABLE_CUDASIM": "1"}),
    ]
    for folder in NOTEBOOK_DIRS:
        for nb in sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb")):
            rel = nb.relative_to(ROOT).as_posix()
            stages.append((rel, [PY, "-m", "pytest", rel, *NBVAL, "-q", *extra], {}))

    total: dict[str, int] = {}
    table, failed_stages = [], []
    for name, cmd, stage_env in stages:
        code, output, seconds = run(cmd, {**env, **stage_env})
        if cmd[2] == "pytest":
            for k, v in counts(output).items():
                total[k] = total.get(k, 0) + v
        if code != 0:
            failed_stages.append(name)
        table.append((name, seconds, "ok" if code == 0 else f"FAILED (exit {code})"))

    print(f"\n{'stage / notebook':<52}   time     result")
    for name, seconds, result in table:
        print(f"  {name:<50} {seconds:6.1f} s  {result}")
    nb_time = sum(s for n, s, _ in table if n.endswith(".ipynb"))
    print(f"  {'all notebooks':<50} {nb_time:6.1f} s")
    if failed_stages:
        print(f"\nfailed stages: {', '.join(failed_stages)}")
    print(f"\nsummary: {total.get('passed', 0)} passed, {total.get('failed', 0)} failed, "
          f"{total.get('skipped', 0)} skipped")
    return 1 if failed_stages else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
