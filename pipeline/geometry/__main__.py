"""`python -m pipeline.geometry [--out PATH]`: the model-free schedule geometry table as CSV."""

from __future__ import annotations

import argparse
import csv
import sys

from .table import COLUMNS, default_geometry_rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.geometry",
        description="Schedule geometry table (paper Table 1 + §6.2 + §7.4): L*_t statistics, min λ*(t), λ**. "
        "Timesteps are the paper's 1-based t.",
    )
    ap.add_argument("--out", default=None, help="write the CSV here (atomically) instead of stdout")
    args = ap.parse_args(argv)
    rows = default_geometry_rows()
    if args.out:
        from pipeline.io import write_csv

        write_csv(args.out, rows, COLUMNS)
    else:
        w = csv.DictWriter(sys.stdout, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
