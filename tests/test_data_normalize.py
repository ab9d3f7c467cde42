"""Input standardisation: the properties each mode promises, and the checkpoint round trip."""
import logging

import numpy as np
import pytest

from netc.data import MODES, Normalizer, load, normalize
from netc.errors import DataError


def images(n=500, seed=0):
    """(n, 3, 4, 5) with channel means 10, -2, 0.5 and spreads 3, 2, 7 (none below the floor)."""
    x = np.random.default_rng(seed).normal(size=(n, 3, 4, 5))
    return (x * np.array([3, 2, 7])[:, None, None] + np.array([10, -2, 0.5])[:, None, None])


def correlated(n=4000, seed=0):
    """(n, 6) features with a full, far-from-diagonal covariance (eigenvalues about 1 to 10)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    return rng.normal(size=(n, 6)) * np.sqrt([1, 2, 3, 5, 8, 10]) @ q.T + 4


def test_modes():
    assert MODES == ("none", "mean", "standard", "pca", "zca")


def test_standard_images_per_channel():
    out = Normalizer.fit("standard", images()).apply(images())
    assert out.dtype == np.float32 and out.shape == (500, 3, 4, 5)
    assert np.allclose(out.mean(axis=(0, 2, 3)), [0, 0, 0], atol=1e-5)
    assert np.allclose(out.var(axis=(0, 2, 3)), [1, 1, 1], atol=1e-4)


def test_standard_exact_values_and_training_statistics_only():
    norm = Normalizer.fit("standard", np.array([[1.0, 3.0], [3.0, 7.0]]))
    assert norm.mean.tolist() == [2, 5] and norm.scale.tolist() == [1, 0.5]
    assert norm.apply(np.array([[1.0, 3.0], [3.0, 7.0]])).tolist() == [[-1, -1], [1, 1]]
    assert norm.apply(np.array([[12.0, 7.0]])).tolist() == [[10, 1]]  # unseen data: same stats


def test_standard_floors_near_constant_features_and_warns_once(caplog):
    # Feature 1 is constant, feature 2 nearly so: both get the floor's std, not their own.
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0], [1.0, 5.0, 0.0], [3.0, 5.0, 1e-3]])
    mean_var, floor_fraction = np.var(x, axis=0).mean(), normalize.VAR_FLOOR
    with caplog.at_level(logging.WARNING, logger="netc.data.normalize"):
        norm = Normalizer.fit("standard", x)
    floor = np.sqrt(floor_fraction * mean_var)
    assert np.allclose(norm.scale, [1, 1 / floor, 1 / floor])
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: 2 of 3 input features are near constant (variance below {floor_fraction:g} of "
        f"the mean; the first is feature 1); 'standard' divides them by {floor:.3g}, not by "
        f"their own std"]
    assert Normalizer.fit("standard", np.ones((4, 3))).scale.tolist() == [1, 1, 1]  # no floor


def test_standard_on_mnist_as_vectors_stays_bounded():
    # Issue 10.2: pixels lit in a few training images were divided by a tiny std, giving
    # inputs of |x| up to 95 on the training set and 2,593 on the test set.
    d = load()
    train, test = (s.x.reshape(len(s.x), 784, 1, 1) for s in (d.train, d.test))
    norm = Normalizer.fit("standard", train)
    assert np.abs(norm.apply(train)).max() < 15 and np.abs(norm.apply(test)).max() < 15


@pytest.mark.parametrize("mode", ["mean", "standard"])
def test_images_flattened_into_vectors_keep_per_channel_statistics(mode):
    """An `input 784` network on 1x28x28 data (or 3x32x32 as 3072): with channels= the
    statistics are the images' own, one per channel, so the normalised inputs are the same
    numbers as for the image-shaped network, only laid out as a vector."""
    for x in (load().train.x[:2000], images(200)):
        n, c = len(x), x.shape[1]
        flat = x.reshape(n, -1, 1, 1)
        as_images = Normalizer.fit(mode, x).apply(x).reshape(n, -1, 1, 1)
        as_vectors = Normalizer.fit(mode, flat, channels=c)
        assert as_vectors.shape == flat.shape[1:] and as_vectors.mean.shape == (flat.shape[1], 1, 1)
        assert np.allclose(as_vectors.apply(flat), as_images, atol=1e-5)
    with pytest.raises(DataError, match="not images of 3 channels"):
        Normalizer.fit("standard", np.zeros((4, 10, 1, 1)), channels=3)


@pytest.mark.parametrize("shape", [(5, 4, 4), (16, 16)])
def test_pca_is_refused_on_image_samples(shape):
    with pytest.raises(DataError, match="pca whitening scrambles the pixel layout") as e:
        Normalizer.fit("pca", np.random.default_rng(0).normal(size=(50, *shape)))
    assert "zca" in e.value.hint and "input 784" in e.value.hint
    x = correlated()  # vectors, with or without unit axes, are fine
    flat = Normalizer.fit("pca", x).apply(x)
    assert np.allclose(Normalizer.fit("pca", x[:, :, None, None]).apply(x[:, :, None, None]),
                       flat[:, :, None, None])


def test_mean_keeps_the_variance():
    out = Normalizer.fit("mean", images()).apply(images())
    assert np.allclose(out.mean(axis=(0, 2, 3)), [0, 0, 0], atol=1e-5)
    assert np.allclose(out.var(axis=(0, 2, 3)), images().var(axis=(0, 2, 3)), rtol=1e-5)


def test_none_is_a_float32_copy():
    x = np.arange(6.0).reshape(3, 2)
    out = Normalizer.fit("none", x).apply(x)
    assert out.dtype == np.float32 and out.tolist() == x.tolist()


@pytest.mark.parametrize("mode", ["pca", "zca"])
def test_whitening_gives_identity_covariance(mode):
    x = correlated()
    assert abs(np.cov(x.T)[0, 1:]).max() > 0.3  # really correlated before
    out = Normalizer.fit(mode, x).apply(x).astype(np.float64)
    assert np.allclose(out.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(np.cov(out.T, bias=True), np.eye(6), atol=5e-3)


def test_pca_exact_axes_largest_variance_first():
    x = np.array([[1.0, 0], [-1, 0], [0, 2], [0, -2]])  # covariance diag(0.5, 2)
    out = Normalizer.fit("pca", x, eps=0).apply(x)
    assert np.allclose(out, [[0, 2 ** 0.5], [0, -2 ** 0.5], [2 ** 0.5, 0], [-2 ** 0.5, 0]])


def test_zca_is_symmetric_and_keeps_image_shape():
    x = images(300).reshape(300, 3, 4, 5)
    norm = Normalizer.fit("zca", x)
    assert norm.matrix.shape == (60, 60) and np.allclose(norm.matrix, norm.matrix.T, atol=1e-5)
    assert norm.apply(x).shape == (300, 3, 4, 5)


def test_whitening_on_mnist_leaves_blank_pixels_finite():
    x = load().train.x[:3000]
    out = Normalizer.fit("zca", x).apply(x)
    assert np.isfinite(out).all()
    assert np.abs(out[:, 0, 0, 0]).max() == 0  # the corner pixel is 0 in every MNIST image
    flat = x.reshape(3000, 784)
    var = np.sort(Normalizer.fit("pca", flat).apply(flat).var(axis=0))[::-1]
    assert var[0] == pytest.approx(1, abs=1e-3) and var[99] > 0.97


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_through_npz(tmp_path, mode):
    x = images(200).reshape(200, 60) if mode == "pca" else images(200)  # pca takes vectors
    norm = Normalizer.fit(mode, x)
    np.savez(tmp_path / "n.npz", **norm.to_dict())
    with np.load(tmp_path / "n.npz", allow_pickle=False) as f:
        back = Normalizer.from_dict(dict(f))
    assert back.mode == mode and back.shape == x.shape[1:]
    assert np.array_equal(back.apply(x), norm.apply(x))


def test_from_dict_refuses_bad_input():
    good = Normalizer.fit("standard", images(50)).to_dict()
    with pytest.raises(DataError, match="incomplete or malformed"):
        Normalizer.from_dict({k: v for k, v in good.items() if k != "scale"})
    with pytest.raises(DataError, match="inconsistent: mode 'pca'"):
        Normalizer.from_dict({**good, "mode": np.array("pca")})
    with pytest.raises(DataError, match="inconsistent: mode 'whiten'"):
        Normalizer.from_dict({**good, "mode": np.array("whiten")})


def test_errors():
    with pytest.raises(DataError, match="unknown normalisation 'pcaa'"):
        Normalizer.fit("pcaa", images(10))
    with pytest.raises(DataError, match=r"inputs of shape \(3, 4, 4\) but the normalisation was "
                                        r"fitted on \(3, 4, 5\)"):
        Normalizer.fit("mean", images(10)).apply(np.zeros((2, 3, 4, 4)))
    with pytest.raises(DataError, match="cannot fit"):
        Normalizer.fit("standard", np.zeros((0, 3)))
    with pytest.raises(DataError, match="covariance is singular, so zca needs eps > 0"):
        Normalizer.fit("zca", np.ones((5, 3)), eps=0)
