"""Which keys each config node has and their types: one dataclass per config group option shape and per node
of the primary configs, registered in Hydra's ConfigStore (schema_<group>_<shape>) for conf/'s defaults lists.

Every field is MISSING (a type without a value): the values live in conf/*.yaml only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf reads these annotations at runtime

from omegaconf import MISSING

# ----------------------------------------------------------------------------------------------------
# group nodes (conf/<group>/*.yaml); the field order is the YAML's, so composed configs keep their order


@dataclass
class _Dataset:
    name: str = MISSING
    root: Optional[str] = MISSING
    num_images: Optional[int] = MISSING
    resolution: int = MISSING
    channels: int = MISSING
    split: Optional[str] = MISSING
    seed: int = MISSING
    download: bool = MISSING


@dataclass
class Cifar10Dataset(_Dataset):
    root: str = MISSING
    version: str = MISSING


@dataclass
class CelebaHQDataset(_Dataset):
    root: str = MISSING
    resample: str = MISSING
    num_workers: int = MISSING


@dataclass
class NaturalCropsDataset(_Dataset):
    num_images: int = MISSING
    photographs: List[str] = MISSING
    scale: List[float] = MISSING


@dataclass
class GaussianDataset(_Dataset):
    num_images: int = MISSING
    patch_size: int = MISSING
    lambda_min: float = MISSING
    lambda_max: float = MISSING
    lambdas: Optional[List[float]] = MISSING
    decay: float = MISSING
    coupling: float = MISSING
    mean_scale: float = MISSING


@dataclass
class UnetModel:
    name: str = MISSING
    kind: str = MISSING
    path: Optional[str] = MISSING
    dtype: str = MISSING
    allow_resolution_change: bool = MISSING
    local_files_only: Optional[bool] = MISSING
    revision: Optional[str] = MISSING


@dataclass
class GaussianOracleModel:
    name: str = MISSING
    kind: str = MISSING
    block_size: int = MISSING
    structure: str = MISSING
    dtype: str = MISSING


@dataclass
class LinearSchedule:
    name: str = MISSING
    kind: str = MISSING
    num_train_timesteps: int = MISSING
    beta_start: float = MISSING
    beta_end: float = MISSING


@dataclass
class CosineSchedule:
    name: str = MISSING
    kind: str = MISSING
    num_train_timesteps: int = MISSING
    s_off: float = MISSING
    max_beta: Optional[float] = MISSING


@dataclass
class GridSampler:
    """diffusers' DDIM grids (spacing leading | trailing | linspace)."""

    name: str = MISSING
    num_steps: int = MISSING
    spacing: str = MISSING
    steps_offset: int = MISSING
    final_alpha_bar: float = MISSING


@dataclass
class StrideSampler:
    name: str = MISSING
    num_steps: int = MISSING
    spacing: str = MISSING
    stride: int = MISSING
    start: Optional[int] = MISSING
    final_alpha_bar: float = MISSING


@dataclass
class FullSampler:
    name: str = MISSING
    num_steps: Optional[int] = MISSING
    spacing: str = MISSING
    final_alpha_bar: float = MISSING


@dataclass
class Patch:
    size: int = MISSING


@dataclass
class Measure:
    """How the jacobian stage measures (pipeline.jacobian.MeasureConfig's fields, plus the option's name)."""

    name: str = MISSING
    power_iters: int = MISSING
    lanczos_iters: Optional[int] = MISSING
    global_power: bool = MISSING
    global_lanczos: bool = MISSING
    rayleigh: bool = MISSING
    rayleigh_via: str = MISSING
    blocks: str = MISSING
    block_power_iters: int = MISSING
    frob_probes: int = MISSING
    frob_method: str = MISSING
    frob_sketch: int = MISSING
    tables: Optional[List[str]] = MISSING
    keep_block_matrices: bool = MISSING
    dense_max_n: int = MISSING
    dense_global_max_n: int = MISSING
    chunk_size: Any = MISSING  # a positive integer, auto or null (OmegaConf has no int | str)
    jvp_method: str = MISSING
    cost_vjp: float = MISSING
    cost_jvp_double_vjp: float = MISSING
    cost_jvp_linearized: float = MISSING
    cost_linearize_trace: float = MISSING


@dataclass
class Tracking:
    enabled: bool = MISSING
    uri: Optional[str] = MISSING
    experiment: str = MISSING
    artifact_location: Optional[str] = MISSING


@dataclass
class Paths:
    outputs: str = MISSING


@dataclass
class Train:
    """The training recipe (pipeline.training.TrainConfig's fields) and the train entry point's own keys."""

    name: str = MISSING
    out_dir: Optional[str] = MISSING
    threads: int = MISSING
    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    warmup_steps: int = MISSING
    weight_decay: float = MISSING
    grad_clip: float = MISSING
    ema_decay: float = MISSING
    min_snr_gamma: Optional[float] = MISSING
    prediction_type: str = MISSING
    mu_reg: float = MISSING
    reg_probes: int = MISSING
    reg_scheme: str = MISSING
    reg_batch: Optional[int] = MISSING
    patch_size: int = MISSING
    seed: int = MISSING
    checkpoint_every: int = MISSING
    log_every: int = MISSING
    max_wall_s: Optional[float] = MISSING
    stop_at: Optional[int] = MISSING
    block_out_channels: List[int] = MISSING
    layers_per_block: int = MISSING
    down_block_types: List[str] = MISSING
    up_block_types: List[str] = MISSING
    attention_head_dim: int = MISSING
    norm_num_groups: int = MISSING
    eval_images: int = MISSING
    eval_timesteps: List[int] = MISSING
    sample_count: int = MISSING
    sample_steps: int = MISSING


# group -> {shape name (ConfigStore: schema_<group>_<name>): dataclass}
GROUPS: dict[str, dict[str, type]] = {
    "dataset": {
        "cifar10": Cifar10Dataset,
        "celebahq": CelebaHQDataset,
        "natural_crops": NaturalCropsDataset,
        "gaussian": GaussianDataset,
    },
    "model": {"unet": UnetModel, "gaussian_oracle": GaussianOracleModel},
    "schedule": {"linear": LinearSchedule, "cosine": CosineSchedule},
    "sampler": {"grid": GridSampler, "stride": StrideSampler, "full": FullSampler},
    "patch": {"base": Patch},
    "measure": {"base": Measure},
    "tracking": {"base": Tracking},
    "paths": {"base": Paths},
    "train": {"base": Train},
}
# The key that picks a shape in a group of several, and its values -> schema name.
SHAPE_KEYS: dict[str, tuple[str, dict[str, str]]] = {
    "dataset": ("name", {n: n for n in GROUPS["dataset"]}),
    "model": ("kind", {n: n for n in GROUPS["model"]}),
    "schedule": ("kind", {n: n for n in GROUPS["schedule"]}),
    "sampler": (
        "spacing",
        {"leading": "grid", "trailing": "grid", "linspace": "grid", "stride": "stride", "full": "full"},
    ),
}

# ----------------------------------------------------------------------------------------------------
# nodes of the primary configs (conf/config.yaml, conf/train.yaml)


@dataclass
class Covariance:
    chunk_size: int = MISSING
    full_cov: bool = MISSING


@dataclass
class Trajectories:
    batch_size: int = MISSING
    update: str = MISSING


@dataclass
class Points:
    """Which trajectory points the jacobian stage measures (the `measure` group says how)."""

    steps: Optional[List[int]] = MISSING
    max_seeds: Optional[int] = MISSING
    block_steps: Optional[List[int]] = MISSING
    light_blocks: str = MISSING
    seed_batch: Any = MISSING  # a positive integer or auto
    shards: int = MISSING
    shard: Any = MISSING  # 0 .. shards-1, or pool


@dataclass
class Proxy:
    images: int = MISSING
    timesteps: List[int] = MISSING
    seed: int = MISSING


@dataclass
class Analysis:
    compare: List[str] = MISSING
    companions: List[str] = MISSING


@dataclass
class StageConfig:
    """conf/config.yaml: the four measurement stages. A group's node is typed by its option's own schema."""

    seed: int = MISSING
    num_seeds: int = MISSING
    run_key: Optional[str] = MISSING
    device: str = MISSING
    torch_threads: Optional[int] = MISSING
    progress: bool = MISSING
    force: bool = MISSING
    params_file: Optional[str] = MISSING
    covariance: Covariance = MISSING
    trajectories: Trajectories = MISSING
    points: Points = MISSING
    proxy: Proxy = MISSING
    analysis: Analysis = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    schedule: Any = MISSING
    sampler: Any = MISSING
    patch: Any = MISSING
    measure: Any = MISSING
    tracking: Any = MISSING
    paths: Any = MISSING


@dataclass
class TrainEntryConfig:
    """conf/train.yaml: training. The experiment presets also set measurement keys, which training carries unused."""

    device: str = MISSING
    torch_threads: Optional[int] = MISSING
    progress: bool = MISSING
    force: bool = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    schedule: Any = MISSING
    sampler: Any = MISSING
    patch: Any = MISSING
    measure: Any = MISSING
    tracking: Any = MISSING
    paths: Any = MISSING
    train: Any = MISSING
    seed: Any = None
    num_seeds: Any = None
    covariance: Any = None
    trajectories: Any = None
    points: Any = None
    proxy: Any = None
    analysis: Any = None


# the measurement keys the experiment presets set that training carries unused (dropped when unset)
CARRIED_BY_TRAIN = ("seed", "num_seeds", "covariance", "trajectories", "points", "proxy", "analysis")
PRIMARY: dict[str, type] = {"config": StageConfig, "train_config": TrainEntryConfig}


def register() -> None:
    """Put every schema into Hydra's ConfigStore, where conf/'s defaults lists find them by name.

    Root-level names (schema_<group>_<shape>, schema_config), not a `schema/` group, so that they stay out
    of --help's list of config groups. Idempotent; the stages package calls it on import, and
    stages/hydra_plugins/pifs_schema for a Hydra that composes conf/ on its own (DVC's `dvc exp run -S`).
    """
    # Hydra's config machinery only where conf/ is composed: pipeline.data checks a node without it
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, node in PRIMARY.items():
        store.store(name=f"schema_{name}", node=node, provider="pifs-repro")
    for group, shapes in GROUPS.items():
        for name, node in shapes.items():
            store.store(name=f"schema_{group}_{name}", node=node, provider="pifs-repro")


def names(cls: type) -> list[str]:
    """A node's keys, in order."""
    return [f.name for f in fields(cls)]


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)
