"""The Jacobian plan of a paper preset, composed from the real preset: the one function that
`benchmarks.projection` and `benchmarks.jacobian` both call (tests/test_projection.py holds them equal).

python -m benchmarks.plan [preset ...]   prints each preset's plan
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("cifar10_paper", "celebahq_paper")


def compose_preset(preset: str, overrides: tuple[str, ...] = ()) -> dict:
    """The resolved config of ``experiment=<preset>`` as the stages compose it (conf/config.yaml)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from pipeline.schema import register

    register()  # conf/'s defaults lists name the config schema in Hydra's ConfigStore
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=[f"experiment={preset}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def preset_plan(preset: str, overrides: tuple[str, ...] = ()):
    """pipeline.jacobian.plan.ProtocolPlan of the preset: points, per-point products, forward equivalents."""
    from pipeline.geometry import schedule_from_config
    from pipeline.geometry.design import chain_from_config
    from pipeline.jacobian.plan import protocol_plan

    cfg = compose_preset(preset, overrides)
    chain = chain_from_config(schedule_from_config(cfg["schedule"]), cfg["sampler"])
    ds, sel, proxy = cfg["dataset"], cfg["points"], cfg["proxy"]
    res = int(ds["resolution"])
    return protocol_plan(
        cfg["measure"],
        image_shape=(int(ds.get("channels", 3)), res, res),
        patch_size=int(cfg["patch"]["size"]),
        timesteps=[int(t) for t in chain.timesteps],
        seeds=int(cfg["num_seeds"]),
        steps=sel.get("steps"),
        block_steps=sel.get("block_steps"),
        light_blocks=sel.get("light_blocks") or "diag",
        proxy_images=int(proxy.get("images") or 0),
        proxy_timesteps=len(proxy.get("timesteps") or []),
    )


def describe(preset: str, plan) -> str:
    """One line per preset: what the plan measures and what it costs in forward-pass equivalents."""
    full = plan.full
    paid = [f"{k} {p.jvps} JVP + {p.vjps} VJP" for k, p in full.products.items() if p.jvps or p.vjps]
    free = [k for k, p in full.products.items() if not (p.jvps or p.vjps) and k != "derived"]
    replayed = (
        f"; replayed on the stored Jacobian: {', '.join(free)}" if free and full.blocks == "dense" else ""
    )
    return (
        f"{preset}: n = {plan.n}, M = {plan.M}, {plan.seeds} seeds x {len(plan.steps)} steps = {plan.points} points; "
        f"block route {full.blocks} at {len(plan.block_steps)} steps: {', '.join(paid) or 'no products'}{replayed}; "
        f"{plan.forward_equivalents_per_point:.0f} forward equivalents per point (config costs)"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", default=list(PRESETS))
    args = ap.parse_args(argv)
    for preset in args.presets:
        print(describe(preset, preset_plan(preset)))


if __name__ == "__main__":
    main()
