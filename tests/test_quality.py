import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats

from gen_jax import quality


def _gaussian(n, d, *, seed, dist=0, shift=0.0):
    """n samples of the correlated Gaussian number `dist`, moved by `shift`."""
    params = np.random.default_rng(1000 + dist)
    a_DD = params.normal(size=(d, d)) / np.sqrt(d)
    mean_D = 0.3 * params.normal(size=d) + shift
    return np.random.default_rng(seed).normal(size=(n, d)) @ a_DD + mean_D


def test_feature_stats_match_numpy():
    x_ND = _gaussian(50, 4, seed=0)
    mu_D, sigma_DD = quality.feature_stats(x_ND.astype(np.float32))
    assert mu_D.dtype == sigma_DD.dtype == np.float64
    np.testing.assert_allclose(mu_D, x_ND.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma_DD, np.cov(x_ND, rowvar=False), rtol=1e-5)


@pytest.mark.parametrize("d", [8, 64])
def test_frechet_distance_matches_sqrtm_reference(d):
    mu1, s1 = quality.feature_stats(_gaussian(2000, d, seed=1, dist=1))
    mu2, s2 = quality.feature_stats(_gaussian(2000, d, seed=2, dist=2))
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    got = quality.frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_frechet_distance_of_identical_and_shifted_stats():
    mu, sigma = quality.feature_stats(_gaussian(500, 16, seed=3))
    assert abs(quality.frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)
    # With equal covariances the trace term cancels: FD = ||shift||^2.
    shift = np.linspace(-1, 1, 16)
    fd = quality.frechet_distance(mu, sigma, mu + shift, sigma)
    np.testing.assert_allclose(fd, shift @ shift, rtol=1e-9)
    fds = [
        quality.frechet_distance(mu, sigma, mu + s * shift, sigma) for s in (1, 2, 3)
    ]
    assert fds[0] < fds[1] < fds[2]


def _naive_kid(x_ND, y_ND):
    d = x_ND.shape[1]
    m = len(x_ND)
    kxx, kyy, kxy = (
        (a @ b.T / d + 1) ** 3 for a, b in ((x_ND, x_ND), (y_ND, y_ND), (x_ND, y_ND))
    )
    return (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (
        m * (m - 1)
    ) - 2 * kxy.mean()


def test_kid_matches_naive_numpy_on_one_full_subset():
    x_ND, y_ND = _gaussian(60, 5, seed=4), _gaussian(60, 5, seed=5, shift=0.4)
    mean, std = quality.kernel_inception_distance(
        x_ND, y_ND, num_subsets=1, subset_size=60
    )
    np.testing.assert_allclose(mean, _naive_kid(x_ND, y_ND), rtol=1e-5)
    assert std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_grows_with_shift():
    real_ND = _gaussian(400, 8, seed=6)
    kw = {"num_subsets": 20, "subset_size": 200}
    kids = [
        quality.kernel_inception_distance(
            real_ND, _gaussian(400, 8, seed=6 + i, shift=s), **kw
        )[0]
        for i, s in enumerate([0.0, 0.25, 0.5, 1.0], start=1)
    ]
    assert kids == sorted(kids) and len(set(kids)) == 4
    assert abs(kids[0]) < 0.05 * kids[2]


def test_inception_score_of_uniform_and_confident_classifiers():
    mean, std = quality.inception_score(np.full((100, 7), 3.0), splits=5)
    np.testing.assert_allclose([mean, std], [1.0, 0.0], atol=1e-12)
    c = 10
    logits_NV = 50.0 * np.eye(c)[np.arange(200) % c]  # each split sees all classes
    mean, std = quality.inception_score(logits_NV, splits=4)
    np.testing.assert_allclose(mean, c, atol=1e-3)
    assert std < 1e-6


def test_inception_score_matches_entropy_reference():
    logits_NV = 3 * np.random.default_rng(7).normal(size=(90, 6))
    p_NV = scipy.special.softmax(logits_NV, axis=1)
    scores = [
        np.exp(np.mean(scipy.stats.entropy(p.T, p.mean(0)[:, None])))
        for p in np.split(p_NV, 3)
    ]
    got = quality.inception_score(logits_NV, splits=3)
    np.testing.assert_allclose(got, [np.mean(scores), np.std(scores)], rtol=1e-10)


def _naive_precision_recall(real_ND, fake_ND, k):
    def coverage(centers, points):
        dcc = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
        np.fill_diagonal(dcc, np.inf)
        radii = np.sort(dcc, axis=1)[:, k - 1]
        dpc = np.linalg.norm(points[:, None] - centers[None], axis=-1)
        return np.mean(np.any(dpc <= radii[None], axis=1))

    return coverage(real_ND, fake_ND), coverage(fake_ND, real_ND)


def test_precision_recall_matches_brute_force():
    real_ND, fake_ND = _gaussian(150, 3, seed=8), _gaussian(120, 3, seed=9, shift=0.7)
    got = quality.precision_recall(real_ND, fake_ND, k=3, batch_size=32)
    want = _naive_precision_recall(real_ND, fake_ND, k=3)
    assert got == want and 0 < got[0] < 1 and 0 < got[1] < 1


def test_precision_recall_of_identical_far_and_collapsed_sets():
    real_ND = np.random.default_rng(10).normal(size=(300, 4))
    assert quality.precision_recall(real_ND, real_ND, batch_size=64) == (1.0, 1.0)
    assert quality.precision_recall(real_ND, real_ND + 100.0) == (0.0, 0.0)
    # Mode collapse: every fake is realistic (precision 1), most reals are missed.
    precision, recall = quality.precision_recall(real_ND, real_ND[real_ND[:, 0] > 1])
    assert precision == 1.0 and recall < 0.5
    with pytest.raises(ValueError, match="k=5"):
        quality.precision_recall(real_ND, real_ND[:5], k=5)
