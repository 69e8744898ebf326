"""Per-patch covariance of a dataset (§7.1): streaming statistics (``statistics``) and the covariance
stage's files (``files``)."""

from .files import (
    GaussianFit,
    patch_table,
    plot_lambda_grid,
    read_gaussian_fit,
    read_patch_stats,
    summary_metrics,
    write_covariance_outputs,
)
from .statistics import (
    CHECKPOINT_FORMAT,
    EXACT_BLOCK,
    PatchCovarianceAccumulator,
    PatchStats,
    compute_patch_statistics,
    eigendecompose,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "EXACT_BLOCK",
    "GaussianFit",
    "PatchCovarianceAccumulator",
    "PatchStats",
    "compute_patch_statistics",
    "eigendecompose",
    "patch_table",
    "plot_lambda_grid",
    "read_gaussian_fit",
    "read_patch_stats",
    "summary_metrics",
    "write_covariance_outputs",
]
