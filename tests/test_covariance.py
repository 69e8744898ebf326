"""Streaming patch covariance: exactness vs np.cov, invariances, sampling error on known Σ, resume, outputs."""

import hashlib
import warnings

import numpy as np
import pytest

from pipeline.covariance import (
    compute_patch_statistics,
    read_gaussian_fit,
    read_patch_stats,
    summary_metrics,
    write_covariance_outputs,
)
from pipeline.data import ArraySource, DatasetError, GaussianSource, ImageSource, NaturalCropsSource
from pipeline.io import atomic_dir, read_csv
from pipeline.outputs import CovarianceFolder
from pipeline.patches import extract_patches

REL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    # OpenBLAS's spinning worker threads crawl when the few cores are shared with other jobs.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with mlflow (via scikit-learn); without it the tests only run slower
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def np_cov_reference(x, p):
    """Independent computation: numpy's np.cov of every patch, and of the whole image vector."""
    patches = extract_patches(x.astype(np.float64), p)
    cov = np.stack([np.cov(patches[:, k], rowvar=False) for k in range(patches.shape[1])])
    flat = x.reshape(len(x), -1).astype(np.float64)
    return patches.mean(0), cov, flat.mean(0), np.cov(flat, rowvar=False)


def exact_images(src):
    """The float64 values u / 127.5 - 1 a quantized source stands for (its float32 images round them)."""
    return src.read_uint8(0, len(src)).astype(np.float64) / 127.5 - 1.0


@pytest.fixture(scope="module")
def crops():
    return NaturalCropsSource(num_images=600, resolution=16, seed=0)


@pytest.fixture(scope="module")
def shifted_gaussian():
    # A mean far from 0 relative to the spread stresses the cancellation in S2 - N m mᵀ.
    return GaussianSource(
        num_images=700, image_shape=(2, 8, 8), patch_size=4, mean_scale=30.0, seed=1, coupling=0.4
    )


# ---------------------------------------------------------------------------------------------------------
# Exactness and invariances


@pytest.mark.parametrize(
    "which,p", [("crops", 8), ("crops", 4), ("shifted_gaussian", 4), ("shifted_gaussian", 2)]
)
def test_equals_np_cov(which, p, request):
    src = request.getfixturevalue(which)
    x = exact_images(src) if src.quantized else src.load_all()
    mean, cov, fmean, fcov = np_cov_reference(x, p)
    st = compute_patch_statistics(src, p, chunk_size=128, progress=False)
    assert st.count == len(src) and st.cov.shape == cov.shape
    assert rel_err(st.cov, cov) < REL and rel_err(st.mean, mean) < REL
    sf = compute_patch_statistics(src, p, chunk_size=128, full_cov=True, progress=False)
    assert rel_err(sf.full_cov, fcov) < REL and rel_err(sf.full_mean, fmean) < REL
    assert rel_err(sf.cov, cov) < REL and rel_err(sf.mean, mean) < REL
    np.testing.assert_array_equal(sf.full_cov, sf.full_cov.T)


def test_independent_of_chunk_size_and_image_order(crops):
    """Float path: equal to rounding. Exact (uint8) path: the integer sums make it bit-identical."""
    x = exact_images(crops)
    perm = np.random.default_rng(0).permutation(len(x))
    ref = compute_patch_statistics(ArraySource(x), 8, chunk_size=10_000, progress=False)
    for chunk in (3, 7, 64):
        st = compute_patch_statistics(ArraySource(x), 8, chunk_size=chunk, progress=False)
        assert rel_err(st.cov, ref.cov) < REL and rel_err(st.mean, ref.mean) < REL
        assert rel_err(st.eigvals, ref.eigvals) < REL
    for chunk in (50, 600):
        st = compute_patch_statistics(
            ArraySource(x[perm]), 8, chunk_size=chunk, progress=False, full_cov=True
        )
        assert rel_err(st.cov, ref.cov) < REL and rel_err(st.mean, ref.mean) < REL
        assert rel_err(st.lambda_k, ref.lambda_k) < REL
        assert np.abs(st.v1 - ref.v1).max() < 1e-8  # eigenvectors: conditioning 1/gap, sign convention fixed
    exact = compute_patch_statistics(crops, 8, chunk_size=64, progress=False)
    assert exact.timing["exact"] and rel_err(exact.cov, ref.cov) < REL and rel_err(exact.mean, ref.mean) < REL
    u = crops.read_uint8(0, len(crops))
    for chunk, order in ((3, perm), (7, None), (5000, perm[::-1])):
        src = ArraySource(u if order is None else u[order])
        assert src.quantized
        st = compute_patch_statistics(src, 8, chunk_size=chunk, progress=False)
        np.testing.assert_array_equal(st.cov, exact.cov)
        np.testing.assert_array_equal(st.mean, exact.mean)
    full = compute_patch_statistics(ArraySource(u[perm]), 8, chunk_size=100, full_cov=True, progress=False)
    np.testing.assert_allclose(full.cov, exact.cov, rtol=0, atol=1e-15)


def test_exact_path_is_exact_at_the_float32_limit():
    """Extreme pixels (every centred value -128 or 127) in chunks larger than the 1024-image syrk block:
    compare with the covariance computed in integers, rescaled once."""
    rng = np.random.default_rng(5)
    u = np.where(rng.uniform(size=(2500, 1, 8, 8)) < 0.7, 255, 0).astype(np.uint8)
    u[:, :, :2] = 0  # a constant band too
    st = compute_patch_statistics(ArraySource(u), 4, chunk_size=3000, progress=False)
    v = extract_patches(u.astype(np.int64), 4)
    n = len(u)
    for k in range(4):
        s1 = v[:, k].sum(0)
        s2 = v[:, k].T @ v[:, k]  # int64, exact
        num = n * s2 - np.outer(s1, s1)  # exact integers: cov_u = num / (n (n - 1))
        expect = num / (n * (n - 1)) / 127.5**2
        np.testing.assert_allclose(st.cov[k], expect, rtol=1e-14, atol=1e-16)
        np.testing.assert_allclose(st.mean[k], s1 / n / 127.5 - 1.0, rtol=1e-14, atol=1e-16)


def test_exact_and_float_paths_agree(crops):
    """The float path sees float32-rounded images (relative error ~6e-8), the exact path the true values."""
    exact = compute_patch_statistics(crops, 8, progress=False)
    float32 = compute_patch_statistics(crops, 8, progress=False, exact=False)
    assert not float32.timing["exact"]
    assert rel_err(float32.cov, exact.cov) < 1e-6
    with pytest.raises(ValueError, match="uint8"):
        compute_patch_statistics(ArraySource(crops.load_all()), 8, progress=False, exact=True)


def test_eigendecomposition_conventions(crops):
    st = compute_patch_statistics(crops, 4, progress=False)
    assert np.all(np.diff(st.eigvals, axis=1) <= 0)
    np.testing.assert_array_equal(st.lambda_k, st.eigvals[:, 0])
    np.testing.assert_array_equal(st.v1, st.eigvecs[:, :, 0])
    eye = np.eye(st.n_k)
    for k in range(st.num_patches):
        v, w = st.eigvecs[k], st.eigvals[k]
        np.testing.assert_allclose(v.T @ v, eye, atol=1e-12)
        assert rel_err(v @ np.diag(w) @ v.T, st.cov[k]) < REL
        big = np.argmax(np.abs(v), axis=0)
        assert np.all(v[big, np.arange(st.n_k)] > 0)
        np.testing.assert_allclose(st.lambda_k[k], np.linalg.norm(st.cov[k], 2), rtol=1e-12)  # ‖Σ_k‖_op
    np.testing.assert_allclose(st.trace, st.eigvals.sum(1), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Sampling error against a known Σ (Wishart moments of the sample covariance)


def test_estimates_within_gaussian_sampling_error():
    """For Gaussian data and the unbiased estimator, Var(S_ij) = (Σ_ij² + Σ_ii Σ_jj)/(N-1) and
    Var(m_i) = Σ_ii/N exactly; λ̂ is asymptotically N(λ + λ/(N-1)·Σ_{j≥2} μ_j/(λ-μ_j), 2λ²/(N-1)) and
    ‖v̂ - v‖² has mean Σ_{j≥2} λμ_j/(λ-μ_j)² / N (first-order perturbation, distinct λ)."""
    n_img = 20_000
    src = GaussianSource(num_images=n_img, image_shape=(1, 16, 16), patch_size=8, lambdas=[3.0, 7.0, 12.0, 20.0],
                         decay=1.0, mean_scale=0.3, seed=11)  # fmt: skip
    st = compute_patch_statistics(src, 8, chunk_size=4096, progress=False)
    sig = src.true_patch_cov
    d = np.diagonal(sig, axis1=1, axis2=2)
    sd = np.sqrt((sig**2 + d[:, :, None] * d[:, None, :]) / (n_img - 1))
    z = (st.cov - sig) / sd
    iu = np.triu_indices(sig.shape[1])
    zu = z[:, iu[0], iu[1]]  # 4 * 2080 distinct entries: Bonferroni P(max |z| > 6) < 2e-5
    assert np.abs(zu).max() < 6.0
    assert 0.8 < np.mean(zu**2) < 1.2  # the spread itself, not only the tail, matches the derivation
    # The test has power: a 5% scale error of Σ is far outside the band.
    assert np.abs((1.05 * st.cov - sig) / sd).max() > 6.0
    zm = (st.mean - src.true_patch_mean) / np.sqrt(d / n_img)
    assert np.abs(zm).max() < 6.0
    mu = src.true_patch_eigvals
    lam = mu[:, 0]
    bias = lam / (n_img - 1) * np.sum(mu[:, 1:] / (lam[:, None] - mu[:, 1:]), axis=1)
    assert np.all(np.abs(st.lambda_k - lam - bias) < 5 * np.sqrt(2 / (n_img - 1)) * lam)
    v_true = src.true_patch_eigvecs[:, :, 0]
    v_err2 = np.sum((st.v1 - v_true) ** 2, axis=1)
    v_mean2 = np.sum(lam[:, None] * mu[:, 1:] / (lam[:, None] - mu[:, 1:]) ** 2, axis=1) / n_img
    assert np.all(v_err2 < 5 * v_mean2)


def test_full_covariance_within_sampling_error():
    n_img = 6000
    src = GaussianSource(num_images=n_img, image_shape=(1, 8, 8), patch_size=4, coupling=0.5, seed=3)
    st = compute_patch_statistics(src, 4, full_cov=True, chunk_size=1000, progress=False)
    sig = src.true_cov()
    d = np.diag(sig)
    z = (st.full_cov - sig) / np.sqrt((sig**2 + np.outer(d, d)) / (n_img - 1))
    zu = z[np.triu_indices(64)]
    assert np.abs(zu).max() < 6.0 and 0.8 < np.mean(zu**2) < 1.2
    assert np.abs(st.full_mean - src.true_mean()).max() < 6 * np.sqrt(d.max() / n_img)


# ---------------------------------------------------------------------------------------------------------
# Resume


class Interrupted(Exception):
    pass


class FailAfter(ImageSource):
    """The same images as ``inner`` (same identity), but the stream dies after ``k`` chunks."""

    def __init__(self, inner, k, exc=Interrupted):
        self.inner, self.k, self.exc = inner, k, exc
        self.name = inner.name
        self.quantized = inner.quantized

    def __len__(self):
        return len(self.inner)

    @property
    def image_shape(self):
        return self.inner.image_shape

    def describe(self):
        return self.inner.describe()

    def _read(self, start, stop):
        return self.inner._read(start, stop)

    def read_uint8(self, start, stop):
        return self.inner.read_uint8(start, stop)

    def _die_after_k(self, chunks):
        for i, c in enumerate(chunks):
            if i == self.k:
                raise self.exc("simulated kill")
            yield c

    def iter_chunks(self, chunk_size, start=0, stop=None):
        return self._die_after_k(self.inner.iter_chunks(chunk_size, start, stop))

    def iter_uint8_chunks(self, chunk_size, start=0, stop=None):
        return self._die_after_k(self.inner.iter_uint8_chunks(chunk_size, start, stop))


@pytest.mark.parametrize("full", [False, True])
def test_killed_run_resumes_to_the_uninterrupted_result(crops, tmp_path, full):
    ckpt = tmp_path / "covariance.ckpt.npz"
    ref = compute_patch_statistics(crops, 8, chunk_size=64, full_cov=full, progress=False)
    with pytest.raises(Interrupted):
        compute_patch_statistics(FailAfter(crops, 4), 8, chunk_size=64, full_cov=full, checkpoint_path=ckpt,
                                 checkpoint_interval_s=0.0, progress=False)  # fmt: skip
    assert ckpt.exists()
    st = compute_patch_statistics(
        crops, 8, chunk_size=64, full_cov=full, checkpoint_path=ckpt, progress=False
    )
    assert st.timing["resumed_from"] == 4 * 64
    assert not ckpt.exists()  # removed once complete
    np.testing.assert_array_equal(st.cov, ref.cov)  # same chunks, same sums: bit-identical
    np.testing.assert_array_equal(st.mean, ref.mean)
    if full:
        np.testing.assert_array_equal(st.full_cov, ref.full_cov)
    # Killed twice, resumed with another chunk size: equal to rounding.
    with pytest.raises(Interrupted):
        compute_patch_statistics(FailAfter(crops, 3), 8, chunk_size=50, full_cov=full, checkpoint_path=ckpt,
                                 checkpoint_interval_s=0.0, progress=False)  # fmt: skip
    with pytest.raises(Interrupted):
        compute_patch_statistics(FailAfter(crops, 2), 8, chunk_size=50, full_cov=full, checkpoint_path=ckpt,
                                 checkpoint_interval_s=0.0, progress=False)  # fmt: skip
    st2 = compute_patch_statistics(
        crops, 8, chunk_size=33, full_cov=full, checkpoint_path=ckpt, progress=False
    )
    assert st2.timing["resumed_from"] == 250
    assert rel_err(st2.cov, ref.cov) < REL and rel_err(st2.mean, ref.mean) < REL


def test_checkpoint_for_other_inputs_is_ignored(crops, tmp_path):
    ckpt = tmp_path / "c.npz"
    with pytest.raises(Interrupted):
        compute_patch_statistics(FailAfter(crops, 2), 4, chunk_size=64, checkpoint_path=ckpt,
                                 checkpoint_interval_s=0.0, progress=False)  # fmt: skip
    ref = compute_patch_statistics(crops, 8, progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        st = compute_patch_statistics(crops, 8, checkpoint_path=ckpt, progress=False)
    assert any("different inputs" in str(x.message) for x in w)
    assert st.timing["resumed_from"] == 0 and not ckpt.exists()
    np.testing.assert_array_equal(st.cov, ref.cov)


def test_an_edited_checkpoint_is_not_resumed(crops, tmp_path):
    """Running sums changed while the run was away (sumsq scaled, the seal left as written) would be
    finished into another covariance under the same record: the run starts over instead."""
    from pipeline.io import load_npz, save_npz

    ckpt = tmp_path / "c.npz"
    with pytest.raises(Interrupted):
        compute_patch_statistics(FailAfter(crops, 2), 8, chunk_size=64, checkpoint_path=ckpt,
                                 checkpoint_interval_s=0.0, progress=False)  # fmt: skip
    state = load_npz(ckpt)
    save_npz(ckpt, **{**state, "sumsq": state["sumsq"] * 1.5})
    ref = compute_patch_statistics(crops, 8, chunk_size=64, progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        st = compute_patch_statistics(crops, 8, chunk_size=64, checkpoint_path=ckpt, progress=False)
    assert any("does not match its seal" in str(x.message) for x in w)
    assert st.timing["resumed_from"] == 0
    np.testing.assert_array_equal(st.cov, ref.cov)


def test_data_error_mid_stream_leaves_no_checkpoint(crops, tmp_path):
    ckpt = tmp_path / "c.npz"
    with pytest.raises(DatasetError):
        compute_patch_statistics(FailAfter(crops, 3, DatasetError), 8, chunk_size=64, checkpoint_path=ckpt,
                                 checkpoint_interval_s=0.0, progress=False)  # fmt: skip
    assert not ckpt.exists()


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_fail_before_any_output(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (10, 3, 32, 32)).astype(np.float32)
    out = tmp_path / "outputs" / "covariance"
    with pytest.raises(ValueError, match="does not divide the image size 32x32"):
        with atomic_dir(out) as d:
            write_covariance_outputs(d, compute_patch_statistics(ArraySource(x), 5, progress=False))
    with pytest.raises(DatasetError, match="at least 2 images"):
        with atomic_dir(out) as d:
            write_covariance_outputs(d, compute_patch_statistics(ArraySource(x[:1]), 8, progress=False))
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        with atomic_dir(out) as d:
            write_covariance_outputs(d, compute_patch_statistics(ArraySource(x), 8, progress=False))
    assert list((tmp_path / "outputs").iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Outputs


def test_outputs_roundtrip_and_are_byte_deterministic(crops, tmp_path):
    st = compute_patch_statistics(crops, 8, full_cov=True, progress=False)
    a = write_covariance_outputs(tmp_path / "a", st)
    b = write_covariance_outputs(
        tmp_path / "b", compute_patch_statistics(crops, 8, full_cov=True, progress=False)
    )
    assert sorted(a) == ["figure", "fit_digest", "gaussian_fit", "patch_stats", "patches_csv"]
    # the digest marker the DVC chain's trajectories stage depends on is the fit file's own sha256
    assert a["fit_digest"].read_text() == hashlib.sha256(a["gaussian_fit"].read_bytes()).hexdigest() + "\n"
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key
    back = read_patch_stats(tmp_path / "a")
    for f in ("mean", "cov", "eigvals", "eigvecs", "full_mean", "full_cov"):
        np.testing.assert_array_equal(getattr(back, f), getattr(st, f))
    assert (back.count, back.patch_size, back.image_shape) == (st.count, 8, (3, 16, 16))
    fit = read_gaussian_fit(tmp_path / "a")
    np.testing.assert_array_equal(fit.cov, st.full_cov)
    rows = read_csv(a["patches_csv"])
    assert tuple(rows[0]) == CovarianceFolder.PATCH_COLUMNS and len(rows) == 4
    assert [(int(r["row"]), int(r["col"])) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [float(r["lambda_k"]) for r in rows] == st.lambda_k.tolist()  # full precision in the CSV
    np.testing.assert_allclose(
        [float(r["trace"]) for r in rows], np.trace(st.cov, axis1=1, axis2=2), rtol=1e-12
    )
    assert a["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = summary_metrics(st)
    assert m["lambda_min"] == st.lambda_k.min() and m["num_images"] == 600


def test_no_gaussian_fit_without_full_covariance(crops, tmp_path):
    paths = write_covariance_outputs(
        tmp_path, compute_patch_statistics(crops, 8, progress=False), figure=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gaussian_fit.sha256",
        "patch_stats.npz",
        "patches.csv",
    ]
    assert "gaussian_fit" not in paths and paths["fit_digest"].read_text().startswith("none")
    with pytest.raises(FileNotFoundError, match="full_cov"):
        read_gaussian_fit(tmp_path)
    assert read_patch_stats(tmp_path / "patch_stats.npz").full_cov is None
