"""`pifs`: one command for the project's entry points (console script of pyproject's [project.scripts]).

pifs <stage> [key=value ...]   runs `python -m stages.<stage>` with the same arguments (Hydra overrides,
                               -m sweeps, --help); pifs geometry | report | sweeps | pair | params.
`python -m stages.cli ...` is the same command without the installed script.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import webbrowser
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import CommandLineParser
from stages import params
from stages.cli_errors import call

STAGES = {
    "covariance": "Run the covariance stage: per-patch covariance Σ_k, λ_k and v_k⁽¹⁾ of the dataset (and the "
    "full Gaussian fit Σ₀) into outputs/covariance/<run-key>/.",
    "trajectories": "Run the trajectories stage: deterministic DDIM chains of the configured model and "
    "sampler, x_t and ε̂(x_t, t) at every step, into outputs/trajectories/<run-key>/.",
    "jacobian": "Run the jacobian stage: κ̂_t, per-patch suppression, κ̂^diag, δ̂^cross and the other "
    "Jacobian measurements at the trajectory points, into outputs/jacobian/<run-key>/.",
    "analysis": "Run the analysis stage: the paper's Tables 3-11, verdicts on P1-P5, figures, the report "
    "and metrics.json, into outputs/analysis/<run-key>/.",
    "train": "Train the small DDPM UNet that model=pifs_ddpm16 ships (the companion chain's learned model).",
}
STAGE_NOTE = (
    " Arguments are Hydra overrides passed through unchanged (key=value, experiment=<preset>, -m for a "
    "sweep); `pifs {name} --help` lists the stage's main keys. Same as `python -m stages.{name}`."
)
OTHER = {
    "params": "Write params.yaml and params_learned.yaml, the resolved configs that `dvc repro` runs, from "
    "conf/ and the given overrides; --check only reports whether they are in sync. Same as "
    "`python -m stages.params`.",
    "geometry": "Print the model-free schedule geometry table (L*_t, λ*(t), λ** per schedule and chain; "
    "Tables 1-2, §6.2, §7.4) as an aligned table with 6 significant digits; --csv prints the "
    "full-precision CSV, --out PATH writes it. Same as `python -m pipeline.geometry`.",
    "report": "Print the path of an analysis report (default: the DVC chain's, outputs/analysis/dvc/"
    "report.html); --open opens it in the browser, --md picks the Markdown report, RUN_KEY another run.",
    "sweeps": "List the runs of a Hydra sweep (default: the latest) from MLflow or a sweep folder: stage, "
    "status, run key and overrides; --dirs prints the finished folders for analysis.compare. Same as "
    "`python -m pipeline.sweeps`.",
    "pair": "Compare two jacobian runs side by side: per paper t, δ̂^cross and the (PC) margin as mean ± "
    "standard error over seeds, their difference and z-score. Same as `python -m pipeline.analysis.pair`.",
}
DESCRIPTION = (
    "The PIFS reproduction's command line: the four pipeline stages (and training) as Hydra apps, the "
    "schedule geometry table, the report, sweep listings and run comparisons. `dvc repro` runs the whole "
    "pipeline; these commands run or inspect one piece."
)


def _run_module(module: str, args: list[str]) -> int:
    """Run ``module`` exactly as `python -m module args` would (its own entry point and error handling)."""
    saved = sys.argv
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _params(args: list[str]) -> int:
    return params.main(args, prog="pifs params")


def _sweeps(args: list[str]) -> int:
    # numpy (via pipeline.io) only for this tool: every other pifs command starts fast
    from pipeline.sweeps import main

    return main(args, prog="pifs sweeps")


def _pair(args: list[str]) -> int:
    # matplotlib (via pipeline.analysis) only for this tool: every other pifs command starts fast
    from pipeline.analysis.pair import main

    return main(args, prog="pifs pair")


def _geometry(args: list[str]) -> int:
    # scipy (via pipeline.geometry) only for this tool: every other pifs command starts fast
    from pipeline.geometry.__main__ import main

    return main(args, prog="pifs geometry")


PASS_THROUGH: dict[str, Callable[[list[str]], int]] = {
    "params": _params,
    "sweeps": _sweeps,
    "pair": _pair,
    "geometry": _geometry,
}


def report(args: list[str]) -> int:
    ap = CommandLineParser(prog="pifs report", description=OTHER["report"])
    ap.add_argument("run_key", nargs="?", default="dvc", help="analysis run key (default: dvc)")
    ap.add_argument("--open", action="store_true", help="open the report in the default browser")
    ap.add_argument("--md", action="store_true", help="the Markdown report instead of the HTML one")
    ap.add_argument(
        "--outputs", default="outputs", help="the outputs folder (paths.outputs; default outputs)"
    )
    a = ap.parse_args(args)
    path = Path(a.outputs) / "analysis" / a.run_key / ("report.md" if a.md else "report.html")
    if not path.is_file():
        print(
            f"error: no report at {path} — run `dvc repro` (or `pifs analysis` with the run's overrides) first",
            file=sys.stderr,
        )
        return 1
    print(path.resolve())
    if a.open and not webbrowser.open(path.resolve().as_uri()):
        print(f"no browser found; open {path.resolve()} by hand", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = CommandLineParser(
        prog="pifs",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", metavar="<command>")
    for name, text in STAGES.items():
        sub.add_parser(name, help=text + STAGE_NOTE.format(name=name), add_help=False)
    for name, text in OTHER.items():
        sub.add_parser(name, help=text, add_help=False)
    return ap


def _tool(fn: Callable[[list[str]], int], args: list[str]) -> int:
    """A tool's own exit status; an expected failure (a path that is a file, a corrupt table) in one line."""
    codes: list[int] = []
    failed = call(lambda: codes.append(fn(args)))
    return failed or codes[0]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in STAGES:
        return _run_module(f"stages.{argv[0]}", argv[1:])
    if argv and argv[0] in PASS_THROUGH:
        return _tool(PASS_THROUGH[argv[0]], argv[1:])
    if argv and argv[0] == "report":
        return report(argv[1:])
    ap = build_parser()
    if not argv:
        ap.print_help()
        return 0
    ap.parse_args(argv[:1])  # -h/--help print the commands; an unknown command is refused with the list
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
