"""The project's own set-up: no GPU needed, the two README commands, environment.yml in step
with pyproject.toml, and `lstmkit doctor`."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
# PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch-cpu"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_has_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    missing = [r for r in project["dependencies"]
               if CONDA_NAMES.get(_name(r), _name(r)) not in conda]
    assert not missing, f"environment.yml lacks {missing}"
    assert "-e ." in pip, "environment.yml's pip section must install this package"
    assert any(_name(d) == "python" for d in env["dependencies"] if isinstance(d, str))


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make lab" in readme
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands[-1] == "make test"


def test_constraints_pin_torch_for_ci_but_package_accepts_any_recent_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch>=2.2" in project["dependencies"]
    assert "torch==" in (ROOT / "constraints.txt").read_text()


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_ENABLE_CUDASIM")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=300)


def test_works_without_gpu_or_driver():
    """No driver, no simulator: lstmkit imports, the numba backend trains, and the CUDA
    backend refuses with an error that says how to use the simulator instead."""
    proc = _run_python("""
        import sys
        import lstmkit
        assert "numba.cuda" not in sys.modules, "import lstmkit must not touch numba.cuda"
        import torch, lstmkit.nn
        assert "lstmkit.kernels.cuda" not in sys.modules
        m = lstmkit.nn.LSTM(3, 4)
        y, _ = m(torch.randn(5, 2, 3))
        y.sum().backward()
        print("grad", m.weight_hh_l0.grad.abs().sum().item() > 0)
        print("status", lstmkit.cuda_status().mode)
        try:
            lstmkit.nn.LSTM(3, 4, backend="cuda")(torch.randn(5, 2, 3))
        except RuntimeError as exc:
            print("error", exc)
    """, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr
    assert "grad True" in proc.stdout
    assert "status none" in proc.stdout
    assert "NUMBA_ENABLE_CUDASIM=1" in proc.stdout


def test_doctor_reports_and_exits_zero_here():
    from lstmkit.cli import doctor

    out = io.StringIO()
    code = doctor(out)
    text = out.getvalue()
    assert code == 0, text
    for word in ("numpy", "numba", "numba-cuda", "torch", "jupyterlab", "ipywidgets",
                 "widget front end", "numba kernel", "cuda"):
        assert re.search(rf"\[(ok  |note)\] {re.escape(word)}\b", text), f"no line for {word}:\n{text}"


def test_doctor_on_a_terminal_says_what_it_compiles_and_overwrites_that_with_the_result():
    from lstmkit.cli import doctor

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out, plain = Terminal(), io.StringIO()
    assert doctor(out) == 0 and doctor(plain) == 0
    text = out.getvalue()
    # the pause's reason, ended by a carriage return, and the result on the same line
    assert re.search(r"\[\.\.\.\.\] all CPU kernels +compiling [^\n]*\.\.\.\r  \[ok  \] all CPU kernels ",
                     text), text
    assert "\r" not in plain.getvalue() and "[....]" not in plain.getvalue()  # a file gets results only


def test_doctor_fails_with_a_fix_when_something_is_missing(monkeypatch):
    from lstmkit import cli

    monkeypatch.setattr(cli, "_PACKAGES", [*cli._PACKAGES,
                                           ("no-such-dist", "no_such_module", True, "a test")])
    out = io.StringIO()
    assert cli.doctor(out) == 1
    line = next(ln for ln in out.getvalue().splitlines() if "no-such-dist" in ln)
    assert "[FAIL]" in line and "fix: pip install 'no-such-dist'" in line


def test_console_entry_point():
    proc = subprocess.run([sys.executable, "-m", "lstmkit", "doctor"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "everything required works" in proc.stdout


# import name -> the environment.yml entry that provides it
IMPORT_TO_CONDA = {"torch": "pytorch-cpu", "IPython": "ipython", "sklearn": "scikit-learn", "PIL": "pillow",
                   "yaml": "pyyaml"}


def _notebook_imports() -> dict[str, str]:
    """Top-level modules imported by any notebook's code cells -> one notebook that does."""
    found = {}
    for nb in sorted(ROOT.glob("*/[0-9][0-9]_*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            for m in re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", src, re.M):
                found.setdefault((m.group(1) or m.group(2)).split(".")[0], nb.name)
    return found


def test_environment_yml_names_everything_the_notebooks_import():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    imports = _notebook_imports()
    assert {"numpy", "torch", "lstmkit", "matplotlib"} <= set(imports)
    missing = {mod: nb for mod, nb in imports.items()
               if mod not in sys.stdlib_module_names and mod != "lstmkit"
               and IMPORT_TO_CONDA.get(mod, mod).lower() not in conda}
    assert not missing, f"environment.yml lacks what these notebooks import: {missing}"
