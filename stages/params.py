"""Write params.yaml and params_learned.yaml: the resolved configs DVC tracks for `dvc repro`.

params.yaml is the default chain (the Gaussian oracle on natural crops, or whatever overrides are
given); params_learned.yaml is the companion chain on the shipped learned model (experiment=learned16),
whose report the default report embeds. `dvc exp run -S key=value` recomposes conf/ itself and
overwrites params.yaml only (DVC's Hydra composition); this command does it for a plain `dvc repro`.
Usage: python -m stages.params [overrides ...] [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# the companion chain of `dvc repro`: the shipped learned model next to the oracle
LEARNED_OVERRIDES = ("experiment=learned16",)
PARAMS_FILES = {"params.yaml": None, "params_learned.yaml": LEARNED_OVERRIDES}


def composed_params(overrides: list[str] | tuple[str, ...] | None = None) -> str:
    """The YAML text DVC would write for these overrides (resolved, without the hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    return OmegaConf.to_yaml(cfg, resolve=True)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    overrides = [a for a in argv if a != "--check"]
    try:
        texts = {
            name: composed_params(overrides if fixed is None else list(fixed))
            for name, fixed in PARAMS_FILES.items()
        }
    except Exception as exc:  # an override the schema refuses: one line, as the stages print it
        from stages.cli_errors import report

        return report(exc)
    if check:
        stale = [
            name
            for name, text in texts.items()
            if not Path(name).is_file() or OmegaConf.create(Path(name).read_text()) != OmegaConf.create(text)
        ]
        if stale:
            print(
                f"{', '.join(stale)} out of date with conf/; run `python -m stages.params`", file=sys.stderr
            )
            return 1
        print(f"{', '.join(texts)} match conf/")
        return 0
    from pipeline.io import write_text

    for name, text in texts.items():
        write_text(Path(name), text)
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
