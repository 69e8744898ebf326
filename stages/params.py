"""Write params.yaml: the resolved default config, the parameters DVC tracks for `dvc repro`.

`dvc exp run -S key=value` recomposes conf/ itself and overwrites params.yaml (DVC's Hydra
composition); this command does the same for a plain `dvc repro` after conf/ changes.
Usage: python -m stages.params [overrides ...] [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def composed_params(overrides: list[str] | None = None) -> str:
    """The YAML text DVC would write for these overrides (resolved, without the hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    return OmegaConf.to_yaml(cfg, resolve=True)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    overrides = [a for a in argv if a != "--check"]
    text = composed_params(overrides)
    target = Path("params.yaml")
    if check:
        if not target.is_file() or OmegaConf.create(target.read_text()) != OmegaConf.create(text):
            print("params.yaml is out of date with conf/; run `python -m stages.params`", file=sys.stderr)
            return 1
        print("params.yaml matches conf/")
        return 0
    from pipeline.io import write_text

    write_text(target, text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
