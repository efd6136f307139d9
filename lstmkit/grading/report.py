"""How results look: the compact rich display of ``check()`` (HTML, with a text fallback) and
the Markdown feedback the batch grader writes for each submission.

Every string that may come from a learner's code (error messages, source lines) is escaped
here: HTML-escaped for the display, and stripped of Markdown/HTML syntax for the feedback.
"""

from __future__ import annotations

import html
import re

from lstmkit.grading.registry import TaskResult

_COLOR = {"passed": "#2e7d32", "partial": "#e65100", "failed": "#c62828", "error": "#c62828",
          "missing": "#c62828", "not attempted": "#757575"}
_ICON = {"passed": "✔", "partial": "◐", "failed": "✘", "error": "✘", "missing": "✘", "not attempted": "…"}


def fmt_points(p: float) -> str:
    return f"{round(float(p), 2):g}"


def _points(max_points: float) -> str:
    return "point" if max_points == 1 else "points"


def headline(r: TaskResult, function: str) -> str:
    n = len(r.checks)
    passed = sum(c.ok for c in r.checks)
    if r.status == "not attempted":
        return (f"not attempted yet: replace `raise NotImplementedError()` in {function} with your code, "
                f"then run this cell again (a hint appears here if a check fails)")
    if r.status == "missing":
        return f"{function} is not defined yet: run the cell that defines it first"
    if r.status == "passed":
        return "the check passed" if n == 1 else f"all {n} checks passed"
    if r.status == "error":
        return r.message
    return f"{passed} of {n} check{'s' if n > 1 else ''} passed"


def _hint_earned(r: TaskResult) -> bool:
    """A task's hints are shown only after an attempt that fell short: shown before the learner
    has tried (in the notebook, or in the feedback on an unfinished submission that may be
    handed in again), the method would take the exercise away. Then the nudge shows first and
    the method stays folded, a click away, for a learner who is still stuck."""
    return r.status in ("partial", "failed", "error") and bool(r.hint or r.method)


_METHOD = "still stuck? the method, step by step"


def _rows(checks) -> list[tuple[bool, str, str]]:
    """(ok, names, message) per check, failed checks with the same message in one row: a return
    value of the wrong form fails every check of a task alike, and six copies hide the point."""
    rows: list[tuple[bool, str, str]] = []
    where: dict[str, int] = {}
    for c in checks:
        if not c.ok and c.message in where:
            k = where[c.message]
            rows[k] = (False, f"{rows[k][1]}, {c.name}", c.message)
            continue
        if not c.ok:
            where[c.message] = len(rows)
        rows.append((c.ok, c.name, c.message))
    return rows


class CheckView:
    """What ``check()`` displays: HTML in Jupyter, plain text anywhere else."""

    def __init__(self, result: TaskResult, function: str, title: str):
        self.result = result
        self.function = function
        self.title = title

    def _show_checks(self) -> bool:
        return self.result.status not in ("not attempted", "missing")

    def _show_hint(self) -> bool:
        return _hint_earned(self.result)

    def __repr__(self) -> str:
        r = self.result
        lines = [f"{_ICON[r.status]} {r.task} ({self.title}): {headline(r, self.function)} "
                 f"[{fmt_points(r.points)}/{fmt_points(r.max_points)} {_points(r.max_points)}]"]
        if self._show_checks():
            for ok, names, message in _rows(r.checks):
                lines.append(f"    {'✔' if ok else '✘'} {names}: {message if not ok else 'ok'}")
        if self._show_hint():
            if r.hint:
                lines.append(f"    hint: {r.hint}")
            if r.method:
                lines.append(f"    {_METHOD}: {r.method}")
        for note in r.notes:
            lines.append(f"    note: {note}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        r = self.result
        e = html.escape
        color = _COLOR[r.status]
        rows = ""
        if self._show_checks():
            for ok, names, message in _rows(r.checks):
                color_ok = _COLOR["passed" if ok else "failed"]
                mark = f"<span style='color:{color_ok}'>{'✔' if ok else '✘'}</span>"
                detail = "" if ok else e(message)
                rows += (f"<tr><td style='padding:1px 6px;text-align:left'>{mark}</td>"
                         f"<td style='padding:1px 6px;text-align:left;white-space:"
                         f"{'normal' if ', ' in names else 'nowrap'}'>{e(names)}</td>"
                         f"<td style='padding:1px 6px;text-align:left;opacity:0.8'>{detail}</td></tr>")
        table = f"<table style='border-collapse:collapse;margin:4px 0 2px 0'>{rows}</table>" if rows else ""
        hint = ""
        if self._show_hint():
            method = ""
            if r.method:
                method = ("<details style='margin-top:3px'>"
                          f"<summary style='cursor:pointer'>{_METHOD}</summary>"
                          f"<div style='padding:2px 0 0 14px'>{e(r.method)}</div></details>")
            hint = ("<details open style='margin-top:3px'>"
                    f"<summary style='cursor:pointer'>hint</summary>"
                    f"<div style='padding:2px 0 0 14px'>{e(r.hint)}{method}</div></details>")
        notes = "".join(f"<div style='opacity:0.8'>note: {e(n)}</div>" for n in r.notes)
        return (f"<div style='border-left:4px solid {color};padding:4px 10px;margin:4px 0;"
                f"font-family:var(--jp-ui-font-family, sans-serif);font-size:13px;line-height:1.4'>"
                f"<div><span style='color:{color};font-weight:bold'>{_ICON[r.status]} {e(r.task)}</span> "
                f"<span style='opacity:0.7'>({e(self.title)})</span>: {e(headline(r, self.function))} "
                f"<span style='opacity:0.7'>[{fmt_points(r.points)}/{fmt_points(r.max_points)} "
                f"{_points(r.max_points)}]</span></div>{table}{hint}{notes}</div>")


# --------------------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])")  # enough to stop emphasis, links, HTML and tables


def md_text(s: str, limit: int = 400) -> str:
    """One line of learner-influenced text, safe inside Markdown (no HTML, no links, no tables)."""
    s = " ".join(str(s).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", s)


def feedback_markdown(identifier: str, exercise_title: str, results: list[TaskResult], total: float,
                      max_points: float, status: str, notes: list[str], titles: dict[str, str]) -> str:
    lines = [f"# Feedback: {md_text(identifier)}", ""]
    if exercise_title:
        lines.append(f"**Exercise:** {md_text(exercise_title)}  ")
    lines += [f"**Score:** {fmt_points(total)} / {fmt_points(max_points)} points  ",
              f"**Status:** {md_text(status)}", ""]
    if results:
        lines += ["| task | points | result |", "|---|---|---|"]
        for r in results:
            lines.append(f"| {md_text(r.task)} | {fmt_points(r.points)} / {fmt_points(r.max_points)} | "
                         f"{md_text(r.status)} |")
        lines.append("")
    # a notebook that could not run at all: its status says why, once, not under every task
    not_run = all(r.status == "error" and not r.checks and r.message == status for r in results)
    for r in ([] if not_run else results):
        lines += [f"## {md_text(r.task)}: {md_text(titles.get(r.task, ''))}", "",
                  f"{fmt_points(r.points)} / {fmt_points(r.max_points)} {_points(r.max_points)}. "
                  f"{md_text(r.message)}", ""]
        if r.status not in ("not attempted", "missing"):
            for ok, names, message in _rows(r.checks):
                lines.append(f"- {'✔' if ok else '✘'} **{md_text(names)}**"
                             + ("" if ok else f": {md_text(message)}"))
            lines.append("")
        if _hint_earned(r):
            if r.hint:
                lines += [f"*Hint:* {md_text(r.hint, 1000)}", ""]
            if r.method:  # folded, as in check(): the nudge first
                lines += ["<details><summary>Still stuck? The method, step by step</summary>", "",
                          md_text(r.method, 1000), "", "</details>", ""]
    if notes:
        lines += ["## Notes on running your notebook", ""]
        lines += [f"- {md_text(n)}" for n in notes]
        lines.append("")
    if not any(r.checks for r in results):  # nothing was run or compared
        return "\n".join(lines + [""])
    lines += ["---", "Graded by `lstmkit grade` on inputs the notebook never saw; the values your functions "
              "returned were compared with `lstmkit.reference` outside your notebook's kernel.", ""]
    return "\n".join(lines)
