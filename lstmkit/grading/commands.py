"""The ``lstmkit grade`` and ``lstmkit exercises build`` commands (argparse lives in lstmkit.cli)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lstmkit.grading.report import fmt_points


def grade_main(args) -> int:
    """Exit 0 when every notebook has full marks, 1 otherwise, 2 when there is nothing to grade."""
    from lstmkit.grading.batch import find_submissions, grade, summary_line

    seed = args.secret_seed
    if seed is None:
        env = os.environ.get("LSTMKIT_SECRET_SEED")
        try:
            seed = int(env) if env else 0
        except ValueError:
            print(f"lstmkit grade: LSTMKIT_SECRET_SEED must be an integer, got {env!r}", file=sys.stderr)
            return 2
    try:
        if not find_submissions(args.submissions):
            where = ", ".join(args.submissions)
            print(f"lstmkit grade: no .ipynb notebooks found in {where}", file=sys.stderr)
            return 2
    except FileNotFoundError as exc:
        print(f"lstmkit grade: {exc}", file=sys.stderr)
        return 2
    feedback = args.feedback
    if feedback is None and args.out:
        feedback = os.path.join(os.path.dirname(os.path.abspath(args.out)), "feedback")
    results = grade(args.submissions, args.out, secret_seed=seed, timeout=args.timeout,
                    memory_mb=args.memory_mb, jobs=args.jobs, feedback_dir=feedback,
                    progress=not args.quiet and sys.stderr.isatty())  # no bar in a log file
    if len(results) == 1 or args.verbose:
        for r in results:
            print(f"{r.identifier} ({r.exercise or 'unknown exercise'}): {fmt_points(r.total)}/"
                  f"{fmt_points(r.max_points)} points; status: {r.status}")
            for t in r.results:
                print(f"  {t.task:<28} {fmt_points(t.points):>5}/{fmt_points(t.max_points):<3} {t.message}")
    print(summary_line(results, args.out, feedback))
    return 0 if all(r.full_marks for r in results) else 1


def build_main(args) -> int:
    """Exit 0 when exercises/ is (now) up to date, 1 with --check when it is not."""
    from lstmkit.grading.builder import BuildError, build_exercises

    root = Path(args.root)
    if args.root == "." and not (root / "solutions").is_dir():
        checkout = Path(__file__).resolve().parents[2]  # an editable install: the repository
        if (checkout / "solutions").is_dir():
            root = checkout
            print(f"no solutions/ here: using the course at {root}")
    try:
        report = build_exercises(root, check=args.check)
    except BuildError as exc:
        print(f"lstmkit exercises build: {exc}", file=sys.stderr)
        return 1
    for p in report.written:
        print(f"wrote {p}")
    for p in report.extra:
        print(f"{'out of date' if args.check else 'note'}: {p} has no solution notebook")
    if args.check:
        if report.stale or report.extra:
            for p in report.stale:
                print(f"out of date: {p}")
            print("exercises/ is out of date with solutions/: run `lstmkit exercises build`")
            return 1
        print(f"exercises/ is up to date ({len(report.unchanged)} notebooks)")
        return 0
    print(f"{len(report.written)} written, {len(report.unchanged)} unchanged")
    return 0
