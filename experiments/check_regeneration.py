"""Compare a regenerated ``accuracy_values.csv`` with the committed one: is every mean within the spread?

    python experiments/check_regeneration.py results/synthetic/accuracy_values.csv [--ref REV]
    python experiments/check_regeneration.py /tmp/r/synthetic/accuracy_values.csv \
        --committed results/synthetic/accuracy_values.csv

Rows are matched by group label, case and column (group hashes change when the config gains keys). For each:
the committed mean ± std, the new mean ± std, the difference, whether both are identical (|difference of the
means and of the stds| <= 1e-9: a change that must not alter any number), and whether |difference| <= the
committed std
(the issue's criterion) or, failing that, <= the larger of the two stds, and Welch's t of the difference (with 3
seeds, |t| > 2.78 is significant at the 5 % level). Writes a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import io
import subprocess

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="regenerated accuracy_values.csv (the committed one is read from git)")
    parser.add_argument("--ref", default="HEAD", help="git revision holding the committed table")
    parser.add_argument("--committed", help="the committed table's path in the repository (default: csv itself)")
    args = parser.parse_args()
    old_text = subprocess.run(["git", "show", f"{args.ref}:{args.committed or args.csv}"], capture_output=True,
                              text=True, check=True).stdout
    keys = ["group_label", "case", "column"]
    old = pd.read_csv(io.StringIO(old_text)).set_index(keys)
    new = pd.read_csv(args.csv).set_index(keys)
    both = old.add_suffix("_old").join(new.add_suffix("_new"), how="inner")
    both["diff"] = both["mean_new"] - both["mean_old"]
    both["identical"] = (both["diff"].abs() <= 1e-9) & ((both["std_new"] - both["std_old"]).abs().fillna(0) <= 1e-9)
    both["within_old_std"] = both["diff"].abs() <= both["std_old"] + 1e-9
    both["within_max_std"] = both["diff"].abs() <= both[["std_old", "std_new"]].max(axis=1) + 1e-9
    spread = (both["std_old"] ** 2 / both["n_old"] + both["std_new"] ** 2 / both["n_new"]) ** 0.5
    both["t"] = both["diff"] / spread.where(spread > 0)
    print(f"{len(both)} rows matched ({len(old)} committed, {len(new)} regenerated); "
          f"{int(both['identical'].sum())} identical, {int(both['within_old_std'].sum())} within the committed std, "
          f"{int(both['within_max_std'].sum())} within the larger std; largest |Welch t| "
          f"{both['t'].abs().max():.2f}\n")
    print("| group | case | column | committed | regenerated | difference | identical | within std | t |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (group, case, column), r in both.iterrows():
        verdict = "yes" if r["within_old_std"] else ("larger std only" if r["within_max_std"] else "**no**")
        same = "yes" if r["identical"] else "**no**"
        print(f"| {group} | {case} | {column} | {r['mean_old']:.3f} ± {r['std_old']:.3f} | "
              f"{r['mean_new']:.3f} ± {r['std_new']:.3f} | {r['diff']:+.3f} | {same} | {verdict} | {r['t']:+.2f} |")


if __name__ == "__main__":
    main()
