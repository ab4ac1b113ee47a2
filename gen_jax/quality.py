"""Sample-quality metrics on extracted features: FID, KID, Inception Score, and
improved precision/recall (Heusel et al. 2017; Binkowski et al. 2018; Salimans
et al. 2016; Kynkaanniemi et al. 2019). Pure math; features come in as [N, D].
"""

import jax
import jax.numpy as jnp
import numpy as np

_KID_BATCH_SIZE = 1024
# Full float32 matmuls: the TPU/GPU default (bf16 or TF32 passes) would swamp
# the cancellation in |a|^2 - 2ab + |b|^2 and in the kernel means.
_HIGHEST = jax.lax.Precision.HIGHEST


def feature_stats(feats_ND: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of the rows, in float64."""
    feats_ND = np.asarray(feats_ND, np.float64)
    return feats_ND.mean(axis=0), np.cov(feats_ND, rowvar=False)


def _sqrt_psd(s_DD: np.ndarray) -> np.ndarray:
    w_D, v_DD = np.linalg.eigh(s_DD)
    return (v_DD * np.sqrt(np.clip(w_D, 0, None))) @ v_DD.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians."""
    mu1, mu2, sigma1, sigma2 = (
        np.asarray(a, np.float64) for a in (mu1, mu2, sigma1, sigma2)
    )
    # S1 S2 is similar to the symmetric PSD S1^{1/2} S2 S1^{1/2}, so their square
    # roots have the same trace; eigh on the symmetric form is fast and real,
    # where scipy's sqrtm of the non-symmetric product is slow and goes complex
    # on the near-singular covariances of few samples in many dims. Rounding
    # can leave eigenvalues like -1e-12; they are 0.
    root1_DD = _sqrt_psd(sigma1)
    m_DD = root1_DD @ sigma2 @ root1_DD
    w_D = np.linalg.eigvalsh((m_DD + m_DD.T) / 2)
    tr_covmean = np.sum(np.sqrt(np.clip(w_D, 0, None)))
    diff_D = mu1 - mu2
    return float(diff_D @ diff_D + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


@jax.jit
def _poly_kernel_row_sums(x_BD, y_MD):
    k_BM = (jnp.matmul(x_BD, y_MD.T, precision=_HIGHEST) / x_BD.shape[1] + 1.0) ** 3
    return jnp.sum(k_BM, axis=1)


def _kernel_sum(x_MD: np.ndarray, y_MD: np.ndarray) -> float:
    # Row sums come back per batch and are added in float64 on the host. The
    # batches are sliced on the host: slicing a jax.Array at a Python offset
    # compiles one program per offset.
    sums = [
        np.asarray(_poly_kernel_row_sums(x_MD[i : i + _KID_BATCH_SIZE], y_MD))
        for i in range(0, x_MD.shape[0], _KID_BATCH_SIZE)
    ]
    return float(np.sum(np.concatenate(sums), dtype=np.float64))


def kernel_inception_distance(
    real_ND: np.ndarray,
    fake_ND: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) over random subsets of the unbiased MMD^2 with the kernel
    k(x, y) = (x.y / D + 1)^3; the mean may be slightly negative."""
    m = min(subset_size, len(real_ND), len(fake_ND))
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 rows, got {m}")
    rng = np.random.default_rng(seed)
    real, fake = np.asarray(real_ND, np.float32), np.asarray(fake_ND, np.float32)
    d = real.shape[1]
    mmds = []
    for _ in range(num_subsets):
        x_MD = real[rng.choice(len(real_ND), m, replace=False)]
        y_MD = fake[rng.choice(len(fake_ND), m, replace=False)]
        # Unbiased: the diagonal k(x_i, x_i) terms of K_xx and K_yy are dropped.
        diag = sum(
            np.sum((np.sum(np.asarray(a, np.float64) ** 2, axis=1) / d + 1) ** 3)
            for a in (x_MD, y_MD)
        )
        within = _kernel_sum(x_MD, x_MD) + _kernel_sum(y_MD, y_MD) - diag
        mmds.append(within / (m * (m - 1)) - 2 * _kernel_sum(x_MD, y_MD) / m**2)
    return float(np.mean(mmds)), float(np.std(mmds))


def inception_score(logits_NV: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over splits of exp(E_x KL(p(y|x) || p(y))); the last splits
    are one row shorter when N is not a multiple of `splits`."""
    logits_NV = np.asarray(logits_NV, np.float64)
    m_N1 = logits_NV.max(axis=1, keepdims=True)
    logp_NV = (
        logits_NV - m_N1 - np.log(np.sum(np.exp(logits_NV - m_N1), 1, keepdims=True))
    )
    scores = []
    for logp_SV in np.array_split(logp_NV, splits):
        # log p(y) = log mean_x p(y|x), as a logsumexp so rare classes keep precision.
        top_1V = logp_SV.max(axis=0, keepdims=True)
        logpy_1V = top_1V + np.log(np.mean(np.exp(logp_SV - top_1V), 0, keepdims=True))
        kl_S = np.sum(np.exp(logp_SV) * (logp_SV - logpy_1V), axis=1)
        scores.append(np.exp(np.mean(kl_S)))
    return float(np.mean(scores)), float(np.std(scores))


def _sq_dists(a_BD, b_ND):
    ab_BN = jnp.matmul(a_BD, b_ND.T, precision=_HIGHEST)
    d2_BN = jnp.sum(a_BD**2, 1)[:, None] - 2 * ab_BN + jnp.sum(b_ND**2, 1)[None, :]
    return jnp.maximum(d2_BN, 0.0)


@jax.jit(static_argnames="k")
def _kth_other_sq_dist(a_BD, a_ND, start, *, k):
    d2_BN = _sq_dists(a_BD, a_ND)
    rows_B1 = start + jnp.arange(a_BD.shape[0])[:, None]
    d2_BN = jnp.where(rows_B1 == jnp.arange(a_ND.shape[0])[None, :], jnp.inf, d2_BN)
    return -jax.lax.top_k(-d2_BN, k)[0][:, -1]


@jax.jit
def _covered(a_BD, b_ND, radii2_N):
    return jnp.any(_sq_dists(a_BD, b_ND) <= radii2_N[None, :], axis=1)


def _coverage(centers_ND, points_MD, *, k: int, batch_size: int) -> float:
    """Fraction of points inside the k-NN ball (among centers) of some center
    (numpy inputs, batches sliced on the host as in `_kernel_sum`)."""
    radii2_N = jnp.concatenate(
        [
            _kth_other_sq_dist(centers_ND[i : i + batch_size], centers_ND, i, k=k)
            for i in range(0, centers_ND.shape[0], batch_size)
        ]
    )
    covered = [
        np.asarray(_covered(points_MD[i : i + batch_size], centers_ND, radii2_N))
        for i in range(0, points_MD.shape[0], batch_size)
    ]
    return float(np.mean(np.concatenate(covered)))


def precision_recall(
    real_ND: np.ndarray, fake_ND: np.ndarray, *, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision (fakes inside the real manifold) and recall (reals
    inside the fake manifold), each manifold a union of k-NN balls."""
    if not 0 < k < min(len(real_ND), len(fake_ND)):
        raise ValueError(f"k={k} must be in [1, number of rows of each set)")
    # Distances are translation invariant; centring first keeps the norms, and
    # so the float32 cancellation error in |a|^2 - 2ab + |b|^2, small.
    shift_D = np.mean(np.asarray(real_ND, np.float64), axis=0)
    real = (np.asarray(real_ND, np.float64) - shift_D).astype(np.float32)
    fake = (np.asarray(fake_ND, np.float64) - shift_D).astype(np.float32)
    precision = _coverage(real, fake, k=k, batch_size=batch_size)
    recall = _coverage(fake, real, k=k, batch_size=batch_size)
    return precision, recall
