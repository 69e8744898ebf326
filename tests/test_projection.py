"""The projection and the Jacobian benchmark plan the paper protocols with one function, from the real presets."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers")


def test_projection_and_benchmark_give_the_same_forward_equivalents_per_point():
    from benchmarks import jacobian, projection
    from benchmarks.plan import PRESETS, compose_preset

    proj = projection.project(gpu_tflops=67, efficiency=0.4, launch_ms=10, cpu_forward_ms=199)
    bench = jacobian.protocol_plans()
    for preset in PRESETS:
        assert (
            proj[preset]["forward_equivalents_per_point"] == bench[preset]["forward_equivalents_per_point"]
        ), preset
        assert proj[preset]["points"] == bench[preset]["points"], preset
    # composed from the real presets, not from measure=paper over the oracle's defaults (jvp_method: forward)
    cvjp = compose_preset("cifar10_paper")["measure"]["cost_vjp"]
    cifar, celeba = proj["cifar10_paper"], proj["celebahq_paper"]
    # the exact route: n = 3072 VJP rows and nothing else per point (every other estimator replays on them)
    assert (cifar["blocks"], cifar["jvps_per_point"], cifar["vjps_per_point"]) == ("dense", 0, 3072)
    assert cifar["forward_equivalents_per_point"] == round(3072 * cvjp + 1) and cifar["points"] == 8 * 50
    # §7.7: 16 Rayleigh VJPs per point at 20 representative steps of the 49, 8 trajectories, no proxy
    assert (celeba["blocks"], celeba["jvps_per_point"], celeba["vjps_per_point"]) == ("off", 0, 16)
    assert celeba["forward_equivalents_per_point"] == round(16 * cvjp + 1) and celeba["points"] == 8 * 20
    # the goals: within 15 and 6 minutes on one H100 (67 TFLOP/s float32 at 40 %)
    assert cifar["gpu_minutes_projected"] <= 15 and celeba["gpu_minutes_projected"] <= 6
