"""CUDA against CPU: the Jacobian engine, the sampler and a short stage chain give the CPU's numbers.

Marked `gpu` (pytest -m gpu) and skipped, with the reason, where torch sees no CUDA device.
Tolerances: float64 to 1e-10 relative (the same arithmetic, different kernels: rounding only);
float32 to 1e-4 relative on norms (TF32 is switched off; cuDNN and the CPU pick different convolution
algorithms, ~1e-6 per forward pass, and 20 power steps carry it) and 1e-4 absolute on sampled images.
The comparisons are functions of two devices, so the same harness runs here CPU-against-CPU
(test_harness_on_cpu, not marked gpu) and cannot rot unseen between GPU runs.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from tests.conftest import compose_config

CUDA = torch.cuda.is_available()
needs_cuda = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not CUDA, reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
    ),
]
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.fixture(autouse=True)
def _no_tf32():
    """TF32 matmuls/convolutions would change float32 results by ~1e-3: compare true float32."""
    if not CUDA:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def small_predictor(dtype: torch.dtype, device: str):
    """A seeded UNet2DModel with attention at 16x16 (n = 768, M = 16 patches of 4x4) on `device`."""
    from diffusers import UNet2DModel

    from pipeline.geometry import linear_schedule
    from pipeline.models import DiffusersNoisePredictor

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        layers_per_block=1,
    ).to(dtype=dtype, device=device)
    return DiffusersNoisePredictor(unet, linear_schedule(1000).alpha_bar, (3, 16, 16))


def engine_on(device: str, dtype: torch.dtype, blocks: str = "dense"):
    """The engine at one point, every estimator (dense blocks: exact at n = 768, the paper's replayed)."""
    from pipeline.jacobian import MeasureConfig, measure_points

    model = small_predictor(dtype, device)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 16, 16, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    v1 = torch.nn.functional.normalize(torch.randn(16, 48, generator=g, dtype=torch.float64), dim=1).numpy()
    cfg = MeasureConfig(power_iters=8, lanczos_iters=8, blocks=blocks, chunk_size=64, jvp_method="double_vjp")
    return measure_points(lambda z: model(z, 400), x[None], 1.01, -0.04, 4, [7], v1=v1, config=cfg)[0]


def compare_engine(a: str, b: str, dtype: torch.dtype, blocks: str = "dense") -> None:
    ma, mb = engine_on(a, dtype, blocks), engine_on(b, dtype, blocks)
    rtol = RTOL[dtype]
    scalars = ("kappa_pi", "kappa_lanczos") + (("kappa_dense",) if blocks == "dense" else ())
    for name in scalars:
        va, vb = getattr(ma, name), getattr(mb, name)
        assert math.isfinite(va) and va == pytest.approx(vb, rel=rtol), (name, va, vb)
    arrays = ("rayleigh",) + (
        ("diag_norm", "coupling", "op_norm", "op_norm_pi", "frob_norm_hutch") if blocks == "dense" else ()
    )
    for name in arrays:
        va, vb = np.asarray(getattr(ma, name)), np.asarray(getattr(mb, name))
        np.testing.assert_allclose(va, vb, rtol=rtol, atol=rtol * float(np.max(np.abs(va))), err_msg=name)


def sampler_on(device: str, dtype: torch.dtype) -> np.ndarray:
    from pipeline.geometry import linear_schedule, strided_chain
    from pipeline.sampler import ddim_sample, noise_batch

    model = small_predictor(dtype, device)
    chain = strided_chain(linear_schedule(1000), 10, spacing="leading", final_alpha_bar=1.0)
    traj = ddim_sample(model, chain, noise_batch([0, 1], (3, 16, 16), dtype), progress=False)
    return traj.x.double().cpu().numpy()


def compare_sampler(a: str, b: str, dtype: torch.dtype) -> None:
    xa, xb = sampler_on(a, dtype), sampler_on(b, dtype)
    atol = 1e-10 if dtype == torch.float64 else 1e-4
    np.testing.assert_allclose(xa, xb, rtol=0, atol=atol)


def stage_chain_on(device: str, root) -> list[dict]:
    """covariance -> trajectories -> jacobian on the smoke preset (Gaussian oracle, float64)."""
    from stages import covariance, jacobian, trajectories

    cfg = compose_config(
        ["experiment=smoke", f"device={device}", f"paths.outputs={root}", "tracking=off", "progress=false"]
    )
    for stage in (covariance, trajectories):
        stage.run(cfg)
    out = jacobian.run(cfg).out_dir
    with open(out / "global.csv") as f:
        return list(csv.DictReader(f))


def compare_stage_chains(a: str, b: str, tmp_path) -> None:
    ra, rb = stage_chain_on(a, tmp_path / a), stage_chain_on(b, tmp_path / f"{b}-b")
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb, strict=True):
        for col in ("kappa_pi", "kappa_lanczos", "kappa_diag", "delta_cross", "rayleigh_max"):
            if x.get(col) not in (None, "", "nan"):
                assert float(x[col]) == pytest.approx(float(y[col]), rel=1e-10, abs=1e-12), (
                    col,
                    x[col],
                    y[col],
                )


# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mark", [pytest.param(None, marks=needs_cuda)])
def test_engine_cuda_matches_cpu(dtype, mark):
    compare_engine("cpu", "cuda", dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mark", [pytest.param(None, marks=needs_cuda)])
def test_sampler_cuda_matches_cpu(dtype, mark):
    compare_sampler("cpu", "cuda", dtype)


@pytest.mark.parametrize("mark", [pytest.param(None, marks=needs_cuda)])
def test_stage_chain_cuda_matches_cpu(tmp_path, monkeypatch, mark):
    monkeypatch.chdir(tmp_path)
    compare_stage_chains("cpu", "cuda", tmp_path)


@pytest.mark.parametrize("mark", [pytest.param(None, marks=needs_cuda)])
def test_memory_model_on_cuda_predicts_the_allocator_peak(mark):
    """On CUDA the peak is exact (max_memory_allocated): calibrated at chunks 2, 4, the model predicts
    chunk 16 within 15%, and the chosen chunk size's predicted peak fits the free memory."""
    from pipeline.jacobian.memory import calibrate, choose_chunk_size, free_device_memory, measure_peak_bytes
    from pipeline.jacobian.operators import ScoreLinearization, StepJacobian

    model = small_predictor(torch.float32, "cuda")
    x = torch.randn(3, 16, 16, device="cuda")

    def products(c: int):
        score = ScoreLinearization(lambda z: model(z[None], 400)[0], x, jvp_method="double_vjp", chunk_size=c)
        return StepJacobian(score, 1.0, -0.1).gram(torch.randn(c, 3, 16, 16, device="cuda"))

    mm = calibrate(products, "cuda")
    measured = measure_peak_bytes(lambda: products(16), "cuda")
    assert mm.peak(16) == pytest.approx(measured, rel=0.15)
    free = free_device_memory("cuda")
    chunk = choose_chunk_size(mm, free)
    assert chunk >= 1 and mm.peak(chunk) <= 0.7 * free


@pytest.mark.slow  # three comparisons, the smoke stage chain twice: 84 s on the loaded 2-core CPU
def test_harness_on_cpu(tmp_path, monkeypatch):
    """The comparisons above, CPU against CPU (cheapest forms): they run and find equal numbers."""
    monkeypatch.chdir(tmp_path)
    compare_engine("cpu", "cpu", torch.float64, blocks="off")
    compare_sampler("cpu", "cpu", torch.float32)
    compare_stage_chains("cpu", "cpu", tmp_path)


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_entry_points_refuse_with_one_line_without_cuda(capsys):
    from benchmarks import gpu_check, jacobian
    from benchmarks.rehearsal import run

    with pytest.raises(SystemExit) as e:
        jacobian.main(["--device", "cuda"])
    assert e.value.code == 2
    assert gpu_check.main([]) == 2
    assert run.main(["cifar10", "--device", "cuda"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(ln.startswith("error: ") and " — " in ln for ln in lines), lines
