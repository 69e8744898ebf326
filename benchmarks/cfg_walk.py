"""Where the composed config travels in one jacobian stage run, and how often it climbs back up a layer.

python -m benchmarks.cfg_walk [--scratch DIR] [--show] [--follow-mirrors]

Runs the covariance and trajectories stages of ``experiment=smoke`` in a scratch folder, then profiles the
jacobian stage. A frame *holds the config* when one of its locals is the composed config, the prepared dict,
a container inside it (by identity), a dict holding such a container (a copy of the config), or an object
whose attributes carry one. Objects resolved from the config (the run spec, the measurement settings,
the model, the chain) are not the config and are not followed. ``--follow-mirrors`` also follows what
copies the config key for key: the record values a run spec carries (``RunSpec.values``: a JSON copy of
the stage's key sections, written into meta.json and compared with an upstream's) and the jacobian loop's
typed settings (``MeasurementSettings``: the patch, measure, points and proxy groups as dataclasses), for
the stricter count.
The walk's location is the file of the innermost project frame that holds the config; it moves on calls
into such frames and on their returns (a frame that held it when called counts on its return even when it
has rebound its parameter to a copy meanwhile). Reported:

- stays: the locations in order with repeats collapsed; files: how many different files;
- climbs: moves from a file to one of a higher layer (a return to a caller up the stack, or a call up);
- calls up: calls, not returns, from a frame holding the config into a higher layer (callbacks).

Layers are the project's own: ``stages`` above ``pipeline`` and the pipeline layers of pyproject.toml's
import-linter contract (a module in none of them counts as the lowest). The numbers describe how the code
is laid out, not how fast it runs; they compare two versions of the code when each is measured with its own
pyproject.toml.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

ROOT = Path.cwd().resolve()


def pipeline_layers(pyproject: Path) -> list[set[str]]:
    """The import-linter layers of the pipeline container, lowest first (module names without 'pipeline.')."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        sys.exit("error: reading pyproject.toml's layers needs Python >= 3.11 (tomllib) — run it there")
    conf = tomllib.loads(pyproject.read_text())
    for contract in conf.get("tool", {}).get("importlinter", {}).get("contracts", []):
        if contract.get("type") == "layers" and contract.get("containers") == ["pipeline"]:
            return [{n.strip() for n in layer.split("|")} for layer in reversed(contract["layers"])]
    return []


def layer_of(rel: str, layers: list[set[str]]) -> int:
    parts = Path(rel).parts
    if parts[0] == "stages":
        return len(layers) + 1
    name = Path(parts[1]).stem if len(parts) > 1 else ""
    return next((i for i, names in enumerate(layers) if name in names), -1)


def _follow_mirrors(track, tracked: set[int], patched: list) -> None:
    """Also hold the config where a copy of it key for key is held: a run spec's record values and the
    jacobian loop's typed settings (their fields are the schema nodes' fields). Code from before these
    existed has nothing to patch."""
    try:
        import pipeline.assemble as assemble
        import pipeline.runkeys as runkeys
        from pipeline.jacobian.run_settings import MeasurementSettings
    except ImportError:
        return
    # assemble is one module in older code and a package of one module per stage's needs in newer code
    holders = [runkeys, assemble] + [
        importlib.import_module(f"pipeline.assemble.{m.name}")
        for m in pkgutil.iter_modules(getattr(assemble, "__path__", []))
    ]
    real_spec = runkeys.run_spec

    def spec(*args, **kwargs):
        out = real_spec(*args, **kwargs)
        track(out.values)
        return out

    for module in (m for m in holders if hasattr(m, "run_spec")):
        patched.append((module, "run_spec", module.run_spec))
        module.run_spec = spec
    real_settings = MeasurementSettings.__dict__["from_config"]

    def settings(cls, cfg):
        out = real_settings.__func__(cls, cfg)
        tracked.update({id(out), id(out.measure), id(out.points), id(out.proxy)})
        return out

    patched.append((MeasurementSettings, "from_config", real_settings))
    MeasurementSettings.from_config = classmethod(settings)


def walk(scratch: Path, show: bool, follow_mirrors: bool = False) -> dict[str, int]:
    from hydra import compose, initialize_config_dir

    import stages  # noqa: F401  registers the config schema
    from stages import covariance, jacobian, trajectories

    layers = pipeline_layers(ROOT / "pyproject.toml")
    os.chdir(scratch)
    overrides = ["experiment=smoke", "progress=false", "tracking.enabled=false", "force=true"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    covariance.run(cfg)
    trajectories.run(cfg)

    tracked: set[int] = {id(cfg)}

    def track(obj) -> None:
        if isinstance(obj, (dict, list)):
            tracked.add(id(obj))
            for v in obj.values() if isinstance(obj, dict) else obj:
                track(v)

    try:
        import pipeline.settings as settings
    except ImportError:  # code from before the run lifecycle moved into pipeline/
        import stages.common as settings

    real = settings.prepare_config

    def prepared(c):
        out = real(c)
        track(out)
        return out

    settings.prepare_config = prepared
    jacobian.prepare_config = prepared
    patched = [(settings, "prepare_config", real), (jacobian, "prepare_config", real)]
    if follow_mirrors:
        _follow_mirrors(track, tracked, patched)

    def carries(v, depth: int = 2) -> bool:
        if id(v) in tracked:
            return True
        if depth == 0:
            return False
        if isinstance(v, dict):
            return any(id(x) in tracked for x in v.values() if isinstance(x, (dict, list)))
        attrs = getattr(v, "__dict__", None)
        if isinstance(attrs, dict) and not isinstance(v, type) and not callable(v):
            return any(carries(x, depth - 1) for x in attrs.values())
        return False

    def rel(frame) -> str | None:
        try:
            r = Path(frame.f_code.co_filename).resolve().relative_to(ROOT).as_posix()
        except ValueError:
            return None
        return r if r.split("/")[0] in ("pipeline", "stages") else None

    def holds(frame) -> bool:
        return rel(frame) is not None and any(carries(v) for v in frame.f_locals.values())

    def holder(frame):
        while frame is not None and not holds(frame):
            frame = frame.f_back
        return frame

    seq: list[str] = []
    calls_up: list[tuple[str, str]] = []

    # frames that held the config when called: their return counts even if they rebound it meanwhile
    entered: set[int] = set()

    def profile(frame, event, arg) -> None:
        if event == "call" and holds(frame):
            entered.add(id(frame))
            caller = holder(frame.f_back)
            if caller is not None and layer_of(rel(frame), layers) > layer_of(rel(caller), layers):
                calls_up.append((rel(caller), f"{rel(frame)}:{frame.f_code.co_name}"))
            seq.append(rel(frame))
        elif event == "return" and (id(frame) in entered or holds(frame)):
            entered.discard(id(frame))
            caller = holder(frame.f_back)
            if caller is not None:
                seq.append(rel(caller))

    sys.setprofile(profile)
    try:
        jacobian.run(cfg)
    finally:
        sys.setprofile(None)
        for module, name, original in patched:
            setattr(module, name, original)
    stays = [f for i, f in enumerate(seq) if i == 0 or f != seq[i - 1]]
    climbs = [
        (a, b) for a, b in zip(stays, stays[1:], strict=False) if layer_of(b, layers) > layer_of(a, layers)
    ]
    if show:
        print("  stays: " + " > ".join(stays))
        for a, b in climbs:
            print(f"  climb {a} -> {b}")
        for a, b in calls_up:
            print(f"  call up {a} -> {b}")
    return {
        "stays": len(stays),
        "files": len(set(stays)),
        "climbs": len(climbs),
        "climbs_into_stages": sum(1 for _, b in climbs if b.startswith("stages/")),
        "calls_up": len(calls_up),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cfg_walk", description=__doc__.splitlines()[0])
    p.add_argument(
        "--scratch", type=Path, help="folder for the smoke run's outputs (default: a temporary one)"
    )
    p.add_argument("--show", action="store_true", help="list the stays, every climb and call up")
    p.add_argument(
        "--follow-mirrors",
        action="store_true",
        help="also follow what copies the config key for key (a run spec's record values, the loop's settings)",
    )
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        scratch = (args.scratch or Path(tmp)).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        counts = walk(scratch, args.show, args.follow_mirrors)
    print(" ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
