"""Core schedule geometry: closed forms, diffusers correspondence, input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.geometry import (
    Chain,
    chain_from_config,
    contraction_threshold,
    cosine_schedule,
    diffusers_timesteps,
    expansion_function,
    expansion_threshold,
    full_chain,
    linear_schedule,
    schedule_from_alpha_bar,
    schedule_from_config,
    schedule_from_diffusers_config,
    shifted_schedule,
    step_coefficients,
    strided_chain,
)


def test_linear_schedule_closed_form():
    s = linear_schedule()
    assert s.T == 1000 and s.alpha_bar.dtype == np.float64 and s.alpha_bar[0] == 1.0
    assert s.alpha_bar[1] == pytest.approx(1 - 1e-4, rel=1e-15)
    assert s.alpha_bar[2] == pytest.approx((1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)), rel=1e-14)
    assert s.betas[-1] == pytest.approx(0.02, rel=1e-12)


def test_cosine_schedule_closed_form_and_clipping():
    s = cosine_schedule(T=1000, s_off=0.008)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 250, 500, 999):
        assert s.alpha_bar[t] == pytest.approx(f(t) / f(0), rel=1e-12)
    c = cosine_schedule(T=1000, s_off=0.008, max_beta=0.999)
    assert np.max(c.betas) == pytest.approx(0.999)
    np.testing.assert_allclose(c.alpha_bar[:-1], s.alpha_bar[:-1], rtol=1e-12)


def test_step_coefficients_match_eq4_eq5_literally():
    ch = strided_chain(linear_schedule(), 10, "leading")
    a, p = ch.alpha_bar_t, ch.alpha_bar_prev
    c = step_coefficients(ch)
    np.testing.assert_allclose(c.r, np.sqrt(p / a), rtol=1e-14)
    b_lit = np.sqrt(1 - p) - np.sqrt(p) * np.sqrt(1 - a) / np.sqrt(a)
    np.testing.assert_allclose(c.b, b_lit, rtol=1e-10)
    assert np.all(c.b < 0)


def test_stable_forms_equal_printed_equations_where_both_are_accurate():
    ch = full_chain(linear_schedule())
    for fn in (contraction_threshold, expansion_threshold):
        np.testing.assert_allclose(fn(ch), fn(ch, formula="literal"), rtol=1e-8)
    lam = np.array([0.5, 1.0, 30.0])
    np.testing.assert_allclose(expansion_function(ch, lam), expansion_function(ch, lam, "literal"), rtol=1e-9)


def test_threshold_closed_forms_at_clean_boundary():
    # Corollary 29 and §6.2: with ᾱ_prev = 1, L* = √v/(1+√ᾱ) ≈ √v/2 and λ* = (1+√ᾱ)/√ᾱ ≈ 2.
    ab1 = 0.99
    ch = Chain("one", np.array([1]), np.array([ab1]), np.array([1.0]))
    assert contraction_threshold(ch)[0] == pytest.approx(math.sqrt(1 - ab1) / (1 + math.sqrt(ab1)), rel=1e-14)
    assert expansion_threshold(ch)[0] == pytest.approx(
        (1 - ab1) / (math.sqrt(ab1) * (1 - math.sqrt(ab1))), rel=1e-12
    )
    f1 = expansion_function(ch, 1.0)[0]
    assert f1 == pytest.approx(
        math.sqrt(ab1), rel=1e-14
    )  # Thm 17 proof: f_t(1) = √(ᾱ_{t-1}ᾱ_t) + √(v_{t-1}v_t)


def test_expansion_function_shape_and_threshold_fixed_point():
    ch = strided_chain(cosine_schedule(), 50, "trailing")
    lam = np.ones((2, 3))
    assert expansion_function(ch, lam).shape == (50, 2, 3)
    ls = expansion_threshold(ch)[1:]
    vals = np.array([expansion_function(ch, x)[i + 1] for i, x in enumerate(ls)])
    np.testing.assert_allclose(vals, 1.0, atol=1e-13)


def test_diffusers_grids_match_ddimscheduler():
    diffusers = pytest.importorskip("diffusers")
    for spacing, offset in [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)]:
        sch = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=offset)
        sch.set_timesteps(50)
        np.testing.assert_array_equal(diffusers_timesteps(1000, 50, spacing, offset), sch.timesteps.numpy())
        ch = strided_chain(linear_schedule(), 50, spacing, steps_offset=offset)
        np.testing.assert_array_equal(ch.timesteps, sch.timesteps.numpy() + 1)


def test_schedule_from_diffusers_config_float32_is_bit_identical():
    diffusers = pytest.importorskip("diffusers")
    for kind in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        cfg = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": kind}
        ref = diffusers.DDIMScheduler(**cfg).alphas_cumprod.numpy().astype(np.float64)
        s32 = schedule_from_diffusers_config(cfg, float32=True)
        np.testing.assert_array_equal(s32.alpha_bar[1:], ref)
        s64 = schedule_from_diffusers_config(cfg)
        np.testing.assert_allclose(s64.alpha_bar[1:], ref, rtol=2e-5)
    np.testing.assert_allclose(
        schedule_from_diffusers_config({"beta_schedule": "linear"}).alpha_bar,
        linear_schedule().alpha_bar,
        rtol=1e-15,
    )


def test_paper_trailing_chain_is_stride_20_to_clean_image():
    ch = strided_chain(cosine_schedule(), 50, "trailing", final_alpha_bar=1.0)
    np.testing.assert_array_equal(ch.timesteps, np.arange(1000, 0, -20))
    assert ch.alpha_bar_prev[-1] == 1.0
    np.testing.assert_array_equal(ch.alpha_bar_prev[:-1], ch.alpha_bar_t[1:])


def test_set_alpha_to_one_false_targets_alpha_bar_1():
    s = linear_schedule()
    ch = strided_chain(s, 50, "trailing", final_alpha_bar=None)
    assert ch.alpha_bar_prev[-1] == s.alpha_bar[1]
    with pytest.raises(ValueError, match="final_alpha_bar=1.0"):
        strided_chain(s, 50, "leading", final_alpha_bar=None)  # last step t=1 -> ᾱ_1 would be the identity


def test_diffusers_prev_rule_differs_only_for_linspace():
    s = linear_schedule()
    for spacing in ("leading", "trailing"):
        a = strided_chain(s, 50, spacing)
        b = strided_chain(s, 50, spacing, prev="diffusers")
        np.testing.assert_array_equal(a.alpha_bar_prev, b.alpha_bar_prev)
    a = strided_chain(s, 50, "linspace")
    b = strided_chain(s, 50, "linspace", prev="diffusers")
    assert not np.array_equal(a.alpha_bar_prev, b.alpha_bar_prev)


def test_config_round_trip_and_presets():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "conf"
    lin = schedule_from_config(yaml.safe_load((root / "schedule/linear.yaml").read_text()))
    np.testing.assert_array_equal(lin.alpha_bar, linear_schedule().alpha_bar)
    cos = schedule_from_config(yaml.safe_load((root / "schedule/cosine.yaml").read_text()))
    np.testing.assert_array_equal(cos.alpha_bar, cosine_schedule(s_off=0.008).alpha_bar)
    ch = chain_from_config(cos, yaml.safe_load((root / "sampler/ddim50.yaml").read_text()))
    np.testing.assert_array_equal(ch.timesteps, np.arange(1000, 0, -20))
    full = chain_from_config(cos, yaml.safe_load((root / "sampler/full.yaml").read_text()))
    assert len(full) == 1000


def test_schedule_from_alpha_bar_accepts_both_lengths():
    ab = linear_schedule().alpha_bar
    np.testing.assert_array_equal(schedule_from_alpha_bar(ab[1:]).alpha_bar, ab)
    np.testing.assert_array_equal(schedule_from_alpha_bar(ab).alpha_bar, ab)


def test_bad_inputs_raise_with_fix():
    with pytest.raises(ValueError, match="strictly decreasing"):
        schedule_from_alpha_bar([0.9, 0.95, 0.5])
    with pytest.raises(ValueError, match="alpha_bar\\[0\\] must be 1"):
        from pipeline.geometry import Schedule

        Schedule("x", np.array([0.9, 0.5]))
    with pytest.raises(ValueError, match="sampler.spacing=.bogus. is unknown"):
        strided_chain(linear_schedule(), 50, "bogus")
    with pytest.raises(ValueError, match="num_steps"):
        strided_chain(linear_schedule(T=10), 50)
    with pytest.raises(ValueError, match="kind"):
        schedule_from_config({"kind": "nope"})


def test_logsnr_shift_moves_logsnr_exactly():
    s = cosine_schedule()
    sh = shifted_schedule(s, -math.log(4.0))
    np.testing.assert_allclose(sh.log_snr[1:-1], s.log_snr[1:-1] - math.log(4.0), rtol=1e-9, atol=1e-9)


def test_stride_chain_and_ddim49_preset():
    from pathlib import Path

    import yaml

    from pipeline.geometry import stride_chain

    s = cosine_schedule()
    ch = stride_chain(s, 20, start=980)
    np.testing.assert_array_equal(ch.timesteps, np.arange(980, 0, -20))
    assert ch.alpha_bar_prev[-1] == 1.0
    # start = T, stride = T/N is the trailing grid
    np.testing.assert_array_equal(stride_chain(s, 20).timesteps, strided_chain(s, 50, "trailing").timesteps)
    root = Path(__file__).resolve().parents[1] / "conf"
    cfg = yaml.safe_load((root / "sampler/ddim49.yaml").read_text())
    np.testing.assert_array_equal(chain_from_config(s, cfg).timesteps, ch.timesteps)
    # diffusers: trailing 50-step grid, loop from timesteps[1:]
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing", steps_offset=0)
    sch.set_timesteps(50)
    np.testing.assert_array_equal(sch.timesteps.numpy()[1:] + 1, ch.timesteps)
    with pytest.raises(ValueError, match="stride"):
        stride_chain(s, 0)


def test_representative_timesteps_are_twenty_evenly_spaced_chain_steps_with_both_ends():
    """§7.7: S_k,t at 20 representative timesteps of the 49-step chain (t = 980, 960, ..., 20)."""
    import numpy as np

    from pipeline.geometry import representative_timesteps

    ts = np.arange(980, 0, -20)
    rep = representative_timesteps(ts, 20)
    assert len(rep) == 20 and rep[0] == 980 and rep[-1] == 20
    assert set(rep) <= set(ts.tolist()) and rep == sorted(rep, reverse=True)
    gaps = np.diff([int(np.where(ts == t)[0][0]) for t in rep])
    assert gaps.min() >= 2 and gaps.max() <= 3  # 48 index steps over 19 gaps: 2 or 3 each
    assert representative_timesteps(ts[:7], 20) == ts[:7].tolist()


@pytest.mark.parametrize(
    ("schedule", "sampler"), [("linear", "ddim50"), ("cosine", "ddim50_leading"), ("cosine", "full")]
)
def test_the_config_readers_default_no_key_of_the_schema(schedule, sampler):
    """Every schedule / sampler key the schema gives these nodes is read from the node (conf/ holds the
    values): a node without one is refused, never filled with a second, code-side default."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    cfg = compose_config([f"schedule={schedule}", f"sampler={sampler}"])
    sched_node = OmegaConf.to_container(cfg.schedule, resolve=True)
    sampler_node = OmegaConf.to_container(cfg.sampler, resolve=True)
    s = schedule_from_config(sched_node)
    chain_from_config(s, sampler_node)
    for key in set(sched_node) - {"name"}:  # a missing kind is an unknown kind (ValueError naming it)
        with pytest.raises((KeyError, ValueError), match=key):
            schedule_from_config({k: v for k, v in sched_node.items() if k != key})
    for key in set(sampler_node) - {"name"}:
        with pytest.raises(KeyError, match=key):
            chain_from_config(s, {k: v for k, v in sampler_node.items() if k != key})


def test_the_sampler_group_is_read_once_and_laid_on_any_schedule():
    """sampling_from_config reads both groups; the sampler's timesteps (ddim50: paper t = 1000, 980, ..., 20,
    conf/sampler/ddim50.yaml) are then laid on whichever ᾱ_t a model carries, and the read spec keeps no
    reference into the node it was read from."""
    from omegaconf import OmegaConf

    from pipeline.geometry import sampling_from_config
    from tests.conftest import compose_config

    cfg = OmegaConf.to_container(compose_config(["schedule=linear", "sampler=ddim50"]), resolve=True)
    sampling = sampling_from_config(cfg["schedule"], cfg["sampler"])
    np.testing.assert_array_equal(sampling.schedule.alpha_bar, linear_schedule().alpha_bar)
    cfg["sampler"]["num_steps"] = 7  # an edit after the read changes nothing
    for schedule in (linear_schedule(), cosine_schedule(s_off=0.008)):
        ch = sampling.sampler.chain(schedule)
        np.testing.assert_array_equal(ch.timesteps, np.arange(1000, 0, -20))
        np.testing.assert_array_equal(ch.alpha_bar_t, schedule.alpha_bar[ch.timesteps])
        # trailing spacing, set_alpha_to_one: each step goes to the next one's ᾱ, the last to ᾱ_0 = 1
        np.testing.assert_array_equal(ch.alpha_bar_prev, np.append(schedule.alpha_bar[ch.timesteps[1:]], 1.0))
        assert ch.name == f"{schedule.name}_ddim50"
