"""How every table writes its cells: the one mean ± std formatter, Markdown and LaTeX tables, the metric's name."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

import pandas as pd

from uvav.cases import ACCURACY

MISSING_CELL = "-"


def mean_std(mean: float, std: float, n: int, *, digits: int = 3, signed: bool = False, show_n: bool = True) -> str:
    """``0.912 ± 0.010 (n=3)``: the spread only when there is one (``n > 1``, finite ``std``); ``signed``: ``+0.012``
    (improvements); ``show_n``: with the count."""
    value = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if n > 1 and not math.isnan(std):
        value += f" ± {std:.{digits}f}"
    return f"{value} (n={n})" if show_n else value


def mean_std_of(values: Sequence[float], *, digits: int = 3, show_n: bool = True) -> str:
    """:func:`mean_std` of ``values`` (sample std, ddof=1); :data:`MISSING_CELL` when there are none."""
    if not values:
        return MISSING_CELL
    spread = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean_std(statistics.mean(values), spread, len(values), digits=digits, show_n=show_n)


def metric_label(metrics: Iterable) -> str:
    """What a table of these jobs' scores shows: ``accuracy``, ``mAP`` (multi-label data) or both names when
    the jobs differ (``metrics.json``'s ``metric``; runs of earlier versions: accuracy)."""
    names = list(dict.fromkeys(m if isinstance(m, str) else ACCURACY for m in metrics))
    return " / ".join(names) or ACCURACY


def to_markdown(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (pandas' own needs ``tabulate``)."""
    if index:
        df = df.reset_index()
    cells = [[str(c) for c in df.columns]] + [[("" if pd.isna(v) else str(v)) for v in row]
                                               for row in df.itertuples(index=False)]
    cells = [[c.replace("|", "\\|") for c in row] for row in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    text = "".join(_LATEX.get(ch, ch) for ch in str(text))
    return text.replace("±", r"$\pm$")


def to_latex(df: pd.DataFrame, index: bool = False, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (pandas ``to_latex``) with our cells escaped ourselves (``±`` becomes ``$\\pm$``)."""
    if index:
        df = df.reset_index()
    escaped = df.astype(str).map(_latex_escape)
    escaped.columns = [_latex_escape(c) for c in df.columns]
    body = escaped.to_latex(index=False, escape=False, column_format="l" * len(df.columns))
    return (f"% {caption}\n" if caption else "") + body
