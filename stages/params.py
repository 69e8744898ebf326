"""Write params.yaml and params_learned.yaml: the resolved configs DVC tracks for `dvc repro`.

params.yaml is the default chain (the Gaussian oracle on natural crops, or whatever overrides are
given); params_learned.yaml is the companion chain on the shipped learned model (experiment=learned16),
whose report the default report embeds. `dvc exp run -S key=value` recomposes conf/ itself and
overwrites params.yaml only (DVC's Hydra composition); this command does it for a plain `dvc repro`.
Usage: python -m stages.params [overrides ...] [--check] (pifs params)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.errors import CommandLineParser
from stages.cli_errors import call

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# the companion chain of `dvc repro`: the shipped learned model next to the oracle
LEARNED_OVERRIDES = ("experiment=learned16",)
PARAMS_FILES = {"params.yaml": None, "params_learned.yaml": LEARNED_OVERRIDES}


def composed_params(overrides: list[str] | tuple[str, ...] | None = None) -> str:
    """The YAML text DVC would write for these overrides (resolved, without the hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    return OmegaConf.to_yaml(cfg, resolve=True)


def _parser(prog: str) -> argparse.ArgumentParser:
    ap = CommandLineParser(
        prog=prog,
        description="Write params.yaml (the default chain, with the given overrides) and params_learned.yaml "
        "(the companion chain on the shipped learned model), the resolved configs `dvc repro` runs.",
    )
    ap.add_argument(
        "overrides", nargs="*", metavar="key=value", help="Hydra overrides of conf/ (e.g. experiment=smoke)"
    )
    ap.add_argument(
        "--check", action="store_true", help="only report whether the files match conf/ (exit 1 if not)"
    )
    return ap


def _write_or_check(overrides: list[str], check: bool) -> int:
    texts = {
        name: composed_params(overrides if fixed is None else list(fixed))
        for name, fixed in PARAMS_FILES.items()
    }
    if check:
        stale = [
            name
            for name, text in texts.items()
            if not Path(name).is_file() or OmegaConf.create(Path(name).read_text()) != OmegaConf.create(text)
        ]
        if stale:
            print(
                f"error: {', '.join(stale)} out of date with conf/ — run `python -m stages.params` "
                "(pifs params) with the same overrides",
                file=sys.stderr,
            )
            return 1
        print(f"{', '.join(texts)} match conf/")
        return 0
    # numpy (via pipeline.io) only when the files are written: pifs and --check start without it
    from pipeline.io import write_text

    for name, text in texts.items():
        write_text(Path(name), text)
        print(f"wrote {name}")
    return 0


def main(argv: list[str], prog: str = "python -m stages.params") -> int:
    a = _parser(prog).parse_args(argv)
    codes: list[int] = []
    failed = call(lambda: codes.append(_write_or_check(a.overrides, a.check)))  # Hydra's errors in one line
    return failed or codes[0]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
