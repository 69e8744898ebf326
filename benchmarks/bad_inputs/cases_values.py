"""Bad values on the command line: negative, zero or non-numeric counts, unknown choices, devices and
threads, run keys that are not folder names, steps outside the chain. Each must be one line naming
the key, before any work."""

from __future__ import annotations

from benchmarks.bad_inputs import evidence as ev
from benchmarks.bad_inputs.spec import CLI, EITHER, SCHEMA, Case


def _value(id, args, names, owner=SCHEMA, wrong=None, expect="line", note="") -> Case:
    return Case(id, "values", args, expect=expect, names=names, wrong=wrong, owner=owner, note=note)


def _bad(stage: str, key: str, value: str, owner: str = SCHEMA, extra: tuple[str, ...] = (), wrong=None):
    return _value(f"{key}={value}", (stage, f"{key}={value}", *extra), (key,), owner=owner, wrong=wrong)


CASES = [
    # counts and sizes of the jacobian's point selection and measurement
    _bad("jacobian", "points.max_seeds", "-1", extra=("force=true",), wrong=ev.jacobian_seeds([0, 1])),
    _bad("jacobian", "points.max_seeds", "0", extra=("force=true",), wrong=ev.jacobian_seeds([0, 1])),
    _bad("jacobian", "points.max_seeds", "abc"),
    _bad(
        "jacobian",
        "measure.frob_probes",
        "0",
        extra=("force=true",),
        wrong=ev.finite("jacobian", "blocks.csv"),
    ),
    _bad("jacobian", "measure.frob_probes", "-2", extra=("force=true",)),
    _bad("jacobian", "measure.chunk_size", "0", extra=("force=true",)),
    _bad("jacobian", "measure.chunk_size", "-3", extra=("force=true",)),
    _bad("jacobian", "measure.power_iters", "-1"),
    _bad("jacobian", "measure.power_iters", "abc"),
    _bad("jacobian", "measure.block_power_iters", "0", extra=("force=true",)),
    _bad("jacobian", "measure.jvp_method", "nope", extra=("force=true",)),
    _bad("jacobian", "measure.lanczos_iters", "-4", extra=("force=true",), owner=CLI),
    _bad("jacobian", "points.block_steps", "[7]"),
    _bad("jacobian", "points.steps", "abc"),
    _bad("jacobian", "points.light_blocks", "nope", extra=("force=true",)),
    _bad("jacobian", "points.seed_batch", "abc"),
    _bad("jacobian", "proxy.images", "-1", extra=("force=true",)),
    _bad("jacobian", "proxy.timesteps", "[5000]", extra=("force=true",)),
    _bad("jacobian", "proxy.timesteps", "abc", extra=("force=true",)),
    # counts of the data, the seeds and the chain
    _bad("trajectories", "num_seeds", "abc"),
    _bad("trajectories", "num_seeds", "-1"),
    _bad("trajectories", "num_seeds", "1.5"),
    _bad("trajectories", "seed", "abc"),
    _bad("trajectories", "seed", "-1"),
    _bad("covariance", "dataset.num_images", "abc"),
    _bad("covariance", "dataset.num_images", "-4"),
    _bad("covariance", "dataset.resolution", "0"),
    _bad("covariance", "dataset.resolution", "abc"),
    _bad("covariance", "dataset.scale", "[4.0,1.0]"),
    _bad("covariance", "covariance.chunk_size", "-5", extra=("force=true",)),
    _bad("covariance", "covariance.full_cov", "maybe", extra=("force=true",)),
    _bad("covariance", "patch.size", "0"),
    _bad("covariance", "patch.size", "-4"),
    _bad("covariance", "patch.size", "abc"),
    _bad("trajectories", "sampler.num_steps", "-3"),
    _bad("trajectories", "sampler.num_steps", "abc"),
    _bad("trajectories", "sampler.num_steps", "2000"),
    _bad("trajectories", "sampler.spacing", "nope", owner=CLI),
    _bad("trajectories", "schedule.beta_end", "2.0", owner=CLI),
    _bad("trajectories", "schedule.num_train_timesteps", "0", owner=CLI),
    _bad("trajectories", "schedule.kind", "nope", owner=CLI),
    _bad("trajectories", "trajectories.batch_size", "0", extra=("force=true",), owner=CLI),
    _bad("trajectories", "trajectories.update", "nope", extra=("force=true",), owner=CLI),
    _bad("trajectories", "model.dtype", "nope"),
    _bad("trajectories", "model.kind", "nope"),
    _bad("analysis", "analysis.compare", "abc", extra=("force=true",)),
    _bad("train", "train.steps", "abc"),
    _bad("train", "train.steps", "-5"),
    _bad("train", "train.batch_size", "abc"),
    _bad("train", "train.lr", "-1"),
    # where and how a run executes
    _bad("trajectories", "device", "nope"),
    _bad("trajectories", "device", "cuda:9"),
    _bad("covariance", "torch_threads", "-1", extra=("force=true",)),
    _bad("covariance", "torch_threads", "abc"),
    _bad("covariance", "force", "maybe"),
    _value("run_key_unicode", ("covariance", "run_key=ünïcødé"), ("run_key",), owner=CLI),
    _value("run_key_with_a_space", ("covariance", "run_key=a b"), ("run_key",), owner=CLI),
    _value("run_key_parent_folder", ("covariance", "run_key=../x"), ("run_key",)),
    _value("run_key_hidden", ("covariance", "run_key=.hidden"), ("run_key",)),
    _value(
        "torch_threads_zero_means_default",
        ("covariance", "torch_threads=0", "force=true"),
        ("torch_threads",),
        expect=EITHER,
        wrong=ev.same_as_base("covariance"),
    ),
]
