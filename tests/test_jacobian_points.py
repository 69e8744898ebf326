"""The engine on S points through the model's batch dimension against S batches of one, float64, on a tiny
random-weight UNet with attention: the same start vectors, so the same numbers (a point's numbers do not
depend on the other points of its batch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.jacobian import REGISTRY, MeasureConfig, measure_points

diffusers = pytest.importorskip("diffusers")

SHAPE = (3, 8, 8)
P = 4
R, B = 1.05, -0.3
SEEDS = [11, 12]  # two points: a mix-up between them shows; a third adds cost, not coverage

# every column of every registered estimator (the registry is the schema)
COLUMNS = [c for e in REGISTRY for c in e.columns]


@pytest.fixture(scope="module")
def unet_points():
    from pipeline.models.attention import install_math_attention

    torch.manual_seed(0)
    m = (
        diffusers.UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4, 8),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=2,
            attention_head_dim=4,
        )
        .double()
        .eval()
    )
    for p in m.parameters():
        p.requires_grad_(False)
    install_math_attention(m)
    xs = torch.randn(len(SEEDS), *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v1 = torch.nn.functional.normalize(
        torch.randn(4, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), dim=1
    )
    return m, xs, v1


# dense: stacked cotangent rows and the paper's estimators replayed on them; diag: block Lanczos over
# (block, point) pairs; power: all M² blocks, Hutchinson probes and the linearized JVP traced on the stack;
# lanczos with Hutch++: its sketch, exact part and probes
@pytest.mark.parametrize(
    "blocks,jvp,frob",
    [
        ("dense", "double_vjp", "hutchinson"),
        ("diag", "double_vjp", "hutchinson"),
        ("power", "linearize", "hutchinson"),
        ("lanczos", "double_vjp", "hutchpp"),
    ],
)
def test_stacked_points_equal_separate_measurements(unet_points, blocks, jvp, frob):
    m, xs, v1 = unet_points
    # small budgets: stacked == separate holds step by step, so a few iterations check it as well as
    # many; chunk_size 4 < the vectors per product keeps the chunked (vmapped) path in play
    cfg = MeasureConfig(
        blocks=blocks,
        power_iters=3,
        lanczos_iters=3,
        block_power_iters=2,
        frob_probes=2,
        frob_method=frob,
        frob_sketch=2,
        jvp_method=jvp,
        chunk_size=4,
    )
    f = np.linspace(0.9, 1.1, 4)
    stacked = measure_points(lambda z: m(z, 500).sample, xs, R, B, P, SEEDS, v1=v1, expansion=f, config=cfg)
    assert len(stacked) == len(SEEDS)
    for s, seed in enumerate(SEEDS):
        ref = measure_points(
            lambda z: m(z, 500).sample, xs[s : s + 1], R, B, P, [seed], v1=v1, expansion=f, config=cfg
        )[0]
        got = stacked[s]
        for col in COLUMNS:
            a, b = np.asarray(col.value(ref), dtype=float), np.asarray(col.value(got), dtype=float)
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=f"{col.name} seed {seed}")
        assert (got.block_method, got.pi_iters, got.lanczos_iters, got.block_frob_probes) == (
            ref.block_method,
            ref.pi_iters,
            ref.lanczos_iters,
            ref.block_frob_probes,
        )
        # one stacked product is one product per point: the per-point budget is unchanged
        assert (got.jvps, got.vjps) == (ref.jvps, ref.vjps)
    # the points differ, so a mix-up between them would show
    assert len({round(o.kappa_pi, 6) for o in stacked}) == len(SEEDS)


def test_stacked_points_refuse_a_seed_count_mismatch(unet_points):
    m, xs, v1 = unet_points
    with pytest.raises(ValueError, match="len\\(seeds\\)"):
        measure_points(lambda z: m(z, 500).sample, xs, R, B, P, SEEDS[:1], config=MeasureConfig(blocks="off"))
