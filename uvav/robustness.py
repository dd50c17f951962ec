"""``python -m uvav.robustness <run dirs...>``: robustness curves of finished runs (the curves and their tables:
:mod:`uvav.reporting.robustness`; this entrypoint loads each run with :func:`uvav.load_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uvav.api import load_run
from uvav.reporting import robustness as curves
from uvav.reporting.robustness import FRACTIONS, MISSING_RATES, SEVERITIES, plot, tidy

__all__ = ["FRACTIONS", "MISSING_RATES", "SEVERITIES", "main", "plot", "run_curves", "tidy"]


def run_curves(path: str | Path, severities=SEVERITIES, fractions=FRACTIONS, missing_rates=MISSING_RATES,
               suite: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load the run in ``path``, compute and write ``<path>/robustness.json`` (or reuse it: computed with the same
    settings for the same model); returns its content."""
    return curves.run_curves(load_run(path), path, severities, fractions, missing_rates, suite, overrides)


def main(argv: list[str] | None = None) -> None:
    args = curves.parser().parse_args(argv)
    results = []
    for path in args.runs:
        results.append(run_curves(path, args.severities, missing_rates=args.missing_rates, suite=args.suite))
        print(f"{path}: {results[-1]['method']} done", flush=True)
    if args.out:
        curves.write_summary(results, Path(args.out))


if __name__ == "__main__":
    import sys

    from uvav.errors import exit_code_of

    sys.exit(exit_code_of(main))
