"""PIFS collage regulariser (Theorem 15): the probe estimator against the exact off-diagonal Frobenius sum.

Expected values come from dense Jacobians (a known linear map, a tiny UNet via autograd), and the Monte
Carlo tolerances from the estimator's exact variance (pipeline.collage.exact_moments), not hand-tuned.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.collage import (
    collage_penalty,
    draw_probe,
    exact_moments,
    offdiag_frobenius_exact,
    patch_labels,
)
from pipeline.patches import patch_indices

SHAPE = (3, 8, 8)  # n = 192, P = 4 -> M = 4 patches (2^4 subsets: exact moments enumerable)
P = 4
N = int(np.prod(SHAPE))


def linear_eps(A: torch.Tensor):
    def f(x):
        return (x.flatten(1) @ A.T).view_as(x)

    return f


def random_map(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # a smooth (local) part plus dense coupling: off-diagonal blocks of different sizes
    return torch.randn((N, N), generator=g, dtype=torch.float64) / np.sqrt(N)


def test_patch_labels_follow_the_project_patch_order():
    lab = patch_labels(SHAPE, P).flatten().numpy()
    idx = patch_indices(SHAPE, P)
    for k in range(idx.shape[0]):
        assert (lab[idx[k]] == k).all()
    with pytest.raises(ValueError, match="divide"):
        patch_labels(SHAPE, 3)


def test_exact_offdiag_sum_against_a_block_loop():
    A = random_map().numpy()
    idx = patch_indices(SHAPE, P)
    want = sum(float((A[np.ix_(idx[k], idx[j])] ** 2).sum()) for k in range(4) for j in range(4) if j != k)
    assert offdiag_frobenius_exact(A, SHAPE, P) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("scheme", ["partition", "patch"])
def test_estimator_is_unbiased_in_closed_form(scheme):
    # E over subsets and signs equals the off-diagonal sum exactly (algebra, no sampling)
    A = random_map(1).numpy()
    mom = exact_moments(A, SHAPE, P, scheme)
    assert mom.mean == pytest.approx(mom.exact, rel=1e-10)
    assert mom.variance > 0


@pytest.mark.parametrize("scheme", ["partition", "patch"])
def test_monte_carlo_mean_and_variance_match_the_exact_moments(scheme):
    A = random_map(2)
    f = linear_eps(A)
    draws = 4000
    x = torch.zeros((draws, *SHAPE), dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(3)
    est = collage_penalty(f(x), x, P, g, scheme=scheme, create_graph=False).numpy()
    mom = exact_moments(A.numpy(), SHAPE, P, scheme)
    # 5 standard errors of the mean from the exact single-probe variance
    assert abs(est.mean() - mom.exact) < 5 * mom.std_of_mean(draws)
    # sample variance of 4000 draws is within ~±15 % here; the check guards the stated formula
    assert est.var(ddof=1) / mom.variance == pytest.approx(1.0, abs=0.3)


def test_probes_average_divides_the_variance():
    A = random_map(4)
    f = linear_eps(A)
    draws, probes = 2000, 4
    x = torch.zeros((draws, *SHAPE), dtype=torch.float64, requires_grad=True)
    est = collage_penalty(
        f(x), x, P, torch.Generator().manual_seed(9), probes=probes, create_graph=False
    ).numpy()
    mom = exact_moments(A.numpy(), SHAPE, P, "partition")
    assert abs(est.mean() - mom.exact) < 5 * mom.std_of_mean(draws * probes)
    assert est.var(ddof=1) / (mom.variance / probes) == pytest.approx(1.0, abs=0.3)


def test_block_diagonal_map_has_zero_penalty_for_every_probe():
    A = random_map(5)
    lab = patch_labels(SHAPE, P).flatten()
    A = A * (lab[:, None] == lab[None, :])
    x = torch.randn((16, *SHAPE), dtype=torch.float64, requires_grad=True)
    est = collage_penalty(linear_eps(A)(x), x, P, torch.Generator().manual_seed(0), probes=3)
    assert torch.all(est == 0)


def test_probe_support_and_scale():
    lab = patch_labels(SHAPE, P)
    w, outside, c = draw_probe(lab, 5, "patch", torch.Generator().manual_seed(0))
    assert c == 4.0
    for b in range(5):
        ks = lab[w[b] != 0].unique()
        assert len(ks) == 1 and not outside[b][lab == ks[0]].any()
    assert set(w.unique().tolist()) <= {-1.0, 0.0, 1.0}
    with pytest.raises(ValueError, match="scheme"):
        draw_probe(lab, 1, "full", torch.Generator())


def tiny_unet():
    from diffusers import UNet2DModel

    from pipeline.models.attention import install_math_attention

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=4,
    )
    install_math_attention(unet)
    return unet.double()


def test_parameter_gradient_through_the_probe_matches_the_dense_jacobian():
    """The penalty trains: its θ-gradient equals that of c‖P_out (Jᵀw)‖² with J from autograd (same probe)."""
    unet = tiny_unet()
    t = torch.tensor([99])
    x0 = torch.randn((1, *SHAPE), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = [p for p in unet.parameters() if p.requires_grad]

    x = x0.clone().requires_grad_(True)
    est = collage_penalty(unet(x, t).sample, x, P, torch.Generator().manual_seed(7))
    g_probe = torch.autograd.grad(est.sum(), params, allow_unused=True)

    w, outside, c = draw_probe(patch_labels(SHAPE, P), 1, "partition", torch.Generator().manual_seed(7))
    J = torch.autograd.functional.jacobian(
        lambda z: unet(z.view(1, *SHAPE), t).sample.flatten(), x0.flatten(), create_graph=True
    )
    dense = c * ((J.T @ w.double().flatten()) * outside.flatten()).pow(2).sum()
    assert float(est) == pytest.approx(float(dense), rel=1e-9)
    g_dense = torch.autograd.grad(dense, params, allow_unused=True)
    # parameters the Jacobian does not depend on (the output bias) have no gradient in either
    assert [a is None for a in g_probe] == [b is None for b in g_dense]
    assert sum(a is not None for a in g_probe) > len(params) // 2
    for a, b in zip(g_probe, g_dense, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


def test_unet_estimator_mean_matches_its_dense_offdiag_sum():
    unet = tiny_unet()
    t = torch.tensor([499])
    x0 = torch.randn((1, *SHAPE), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        J = torch.autograd.functional.jacobian(
            lambda z: unet(z.view(1, *SHAPE), t).sample.flatten(), x0.flatten()
        )
    mom = exact_moments(J.numpy(), SHAPE, P, "partition")
    draws = 256
    x = x0.expand(draws, *SHAPE).clone().requires_grad_(True)
    est = (
        collage_penalty(
            unet(x, t.expand(draws)).sample, x, P, torch.Generator().manual_seed(5), create_graph=False
        )
        .detach()
        .numpy()
    )
    assert abs(est.mean() - mom.exact) < 5 * mom.std_of_mean(draws)


def test_collage_profile_of_a_linear_map_is_its_offdiag_sum_over_n():
    from pipeline.collage import collage_profile
    from pipeline.geometry import linear_schedule

    A = random_map(6)

    class Linear(torch.nn.Module):
        def forward(self, x, index, return_dict=False):
            return (linear_eps(A)(x),)

    x0 = torch.zeros((400, *SHAPE), dtype=torch.float64)
    prof = collage_profile(Linear(), x0, linear_schedule().alpha_bar, [10, 900], P, probes=2, batch_size=100)
    want = offdiag_frobenius_exact(A.numpy(), SHAPE, P) / N
    for mean, se in prof.values():  # J does not depend on x or t here
        assert abs(mean - want) < 5 * se
