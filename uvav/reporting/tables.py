"""The paper's tables from the tidy frame of jobs (:mod:`uvav.reporting.aggregate`): accuracy per case and
training resources per stage (cells written by :mod:`uvav.reporting.formats`)."""

from __future__ import annotations

import pandas as pd

from uvav.cases import CASE_LABELS
from uvav.methods import FT, improvements, result_labels, stage_labels
from uvav.reporting.formats import MISSING_CELL, mean_std


def accuracy_values(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (sample, ddof=1) and n over seeds per group x case x column, improvements paired per job."""
    wide = tidy.pivot_table(index=["group", "group_label", "job_dir", "seed", "case"], columns="mode",
                            values="accuracy", aggfunc="first")
    for name, (a, b) in improvements().items():
        if a in wide and b in wide:
            wide[name] = wide[a] - wide[b]
    wide = wide.rename(columns=result_labels())
    long = wide.reset_index().melt(id_vars=["group", "group_label", "job_dir", "seed", "case"], var_name="column",
                                   value_name="value").dropna(subset=["value"])
    stats = long.groupby(["group", "group_label", "case", "column"], sort=False)["value"].agg(
        mean="mean", std="std", n="count").reset_index()
    return stats


def accuracy_table(stats: pd.DataFrame, group: str) -> pd.DataFrame:
    """The paper's layout for one group: rows are cases, columns methods and improvements, cells mean ± std."""
    part = stats[stats["group"] == group]
    gains = improvements()
    columns = [*result_labels().values(), *gains]
    table = pd.DataFrame(MISSING_CELL, index=[label for c, label in CASE_LABELS.items() if c in set(part["case"])],
                         columns=columns)
    for row in part.itertuples():
        table.loc[CASE_LABELS.get(row.case, row.case), row.column] = mean_std(row.mean, row.std, row.n,
                                                                              signed=row.column in gains)
    table.index.name = "Case"
    return table.loc[:, (table != MISSING_CELL).any()]


def resource_table(frame: pd.DataFrame, group: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per stage (FT, head only, each method's): memory, saving vs FT, time per epoch, ratio vs FT, parameters, device.

    Means over the group's seeds; returns the numeric table and the measurement methods by footnote mark.
    """
    jobs = frame[frame["group"] == group]
    rows, notes = [], {}
    for stage, label in stage_labels().items():
        col = f"{stage}_time_per_epoch_s"
        if col not in jobs or jobs[col].isna().all():
            continue
        part = jobs[jobs[col].notna()]
        marks = []
        for kind, letter in (("memory", "M"), ("time", "T")):
            methods = sorted(set(part[f"{stage}_{kind}_method"].dropna()))
            for method in methods:  # footnote marks M1, M2, ... and T1, ...
                notes.setdefault(method, f"{letter}{sum(n.startswith(letter) for n in notes.values()) + 1}")
            marks.append(", ".join(f"[{notes[m]}]" for m in methods) or "not recorded")
        memory = pd.to_numeric(part[f"{stage}_peak_train_memory_bytes"], errors="coerce")
        devices = sorted(set(part[f"{stage}_device"].dropna().astype(str)))
        names = sorted(set(part.loc[part[f"{stage}_device"] == part["device"], "device_name"].dropna()))
        rows.append({
            "Method": label, "n": len(part),
            "Training memory (bytes)": memory.mean() if memory.notna().any() else float("nan"),
            "Time per epoch (s)": part[col].astype(float).mean(),
            "Time per epoch std (s)": part[col].astype(float).std(),
            "Fastest epoch (s)": part[f"{stage}_fastest_epoch_s"].astype(float).min(),
            "Trainable params": part[f"{stage}_trainable_params"].astype(float).mean(),
            "Total params": part[f"{stage}_total_params"].astype(float).mean(),
            "Device": ", ".join(devices) + (f" ({', '.join(names)})" if names else ""),
            "Memory method": marks[0], "Time method": marks[1],
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table, {}
    ft = table[table["Method"] == stage_labels()[FT]]
    ft_mem = ft["Training memory (bytes)"].iloc[0] if len(ft) else float("nan")
    ft_time = ft["Time per epoch (s)"].iloc[0] if len(ft) else float("nan")
    table.insert(3, "Memory saving vs FT (%)", 100.0 * (1.0 - table["Training memory (bytes)"] / ft_mem))
    table.insert(6, "Time ratio vs FT", table["Time per epoch (s)"] / ft_time)
    return table, {mark: method for method, mark in notes.items()}


def format_resources(table: pd.DataFrame) -> pd.DataFrame:
    """Human units: MiB or GiB for memory, rounded times and ratios, integer parameter counts."""
    out = pd.DataFrame({"Method": table["Method"]})
    ft = stage_labels()[FT]
    mem = table["Training memory (bytes)"]
    unit, scale = ("GiB", 2**30) if mem.max(skipna=True) >= 2**30 else ("MiB", 2**20)
    out[f"Training memory ({unit})"] = [f"{v / scale:.2f}" if pd.notna(v) else "not measured" for v in mem]
    out["Memory saving vs FT"] = [MISSING_CELL if m == ft or pd.isna(v) else f"{v:.1f}%"
                                  for m, v in zip(table["Method"], table["Memory saving vs FT (%)"], strict=True)]
    out["Time per epoch (s)"] = [mean_std(t, s, n, show_n=False) for t, s, n in
                                 zip(table["Time per epoch (s)"], table["Time per epoch std (s)"], table["n"],
                                     strict=True)]
    out["Fastest epoch (s)"] = [f"{v:.3f}" if pd.notna(v) else MISSING_CELL for v in table["Fastest epoch (s)"]]
    out["Time ratio vs FT"] = [MISSING_CELL if m == ft or pd.isna(v) else f"{v:.3f}x"
                               for m, v in zip(table["Method"], table["Time ratio vs FT"], strict=True)]
    out["Trainable params"] = [f"{int(v):,}" for v in table["Trainable params"]]
    out["Total params"] = [f"{int(v):,}" for v in table["Total params"]]
    for col in ("n", "Device", "Memory method", "Time method"):
        out[col] = table[col]
    return out
