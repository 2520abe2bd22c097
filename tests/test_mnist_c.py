"""MNIST-C: fidelity to the original implementation's outputs on MNIST test images 0-999
(shared/data/mnist_c_reference), the suite threat, and bad input."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robench.corruptions.mnist_c import MNIST_C, blur, common, geometric, overlays, weather
from robench.errors import RobenchError
from robench.inference import predict
from robench.registry import CORRUPTIONS
from robench.threats import build_threat

N = 1000


def _reference_dir(data_root: str) -> Path:
    folder = Path(data_root) / "mnist_c_reference"
    if not (folder / "stripe.npz").is_file():
        pytest.skip(f"no MNIST-C reference outputs in {folder}")
    return folder


@pytest.fixture(scope="module")
def clean(data_root):
    from robench.data import load_dataset

    return load_dataset("mnist", "test", data_root).select(n=N)


@pytest.fixture(scope="module")
def reference(data_root):
    folder = _reference_dir(data_root)
    return lambda name: np.load(folder / f"{name}.npz")["images"]


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images[:, 0] * 255).round().to(torch.uint8).numpy()


def _ours(name: str, x: torch.Tensor, seed: int = 0) -> np.ndarray:
    return _uint8(CORRUPTIONS.create(name)(x, torch.Generator().manual_seed(seed)))


def test_all_fifteen_registered_with_published_severities():
    assert set(MNIST_C) <= set(CORRUPTIONS.names())
    published = {"shot_noise": 5, "impulse_noise": 4, "glass_blur": 1, "motion_blur": 1, "shear": 2, "scale": 3,
                 "rotate": 2, "brightness": 5, "translate": 3, "fog": 5, "spatter": 4}
    for name, severity in published.items():
        assert CORRUPTIONS.create(name).severity == severity
        for level in range(1, 6):
            CORRUPTIONS.create(name, severity=level)


@pytest.mark.parametrize("name", ["stripe", "brightness", "scale", "canny_edges"])
def test_deterministic_corruptions_match_pixel_for_pixel(name, clean, reference):
    assert np.array_equal(_ours(name, clean.x), reference(name))


@pytest.mark.parametrize("name", ["shear", "rotate", "translate"])
def test_affine_corruptions_match_for_the_right_sign(name, clean, reference):
    """For each image the better of the sign choices reproduces the reference. rotate: 12 of 784,000
    pixels (12 images) are one grey level off, all at values within 2e-4 of a .5 rounding tie, where the
    reference's float32 result and ours round differently."""
    corruption = CORRUPTIONS.create(name)
    if name == "translate":
        choices = [np.tile((a, b), (N, 1)) for a in (-1.0, 1.0) for b in (-1.0, 1.0)]
    else:
        choices = [np.full(N, s) for s in (-1.0, 1.0)]
    ref = reference(name).astype(int)
    outs = [np.round(geometric._warp(clean.x, corruption.matrices(s)) * 255).astype(int) for s in choices]
    err = np.stack([np.abs(o - ref).sum((1, 2)) for o in outs])
    best = np.stack(outs)[err.argmin(0), np.arange(N)]
    assert np.abs(best - ref).max() <= 1
    assert (best == ref).mean() > 0.9999
    if name != "rotate":
        assert np.array_equal(best, ref)


def test_dotted_line_is_the_reference_line_for_some_endpoints(clean, reference):
    """The dotted line is deterministic given its two end rows: each reference image is reproduced
    exactly by one of the 27 x 27 choices (first 60 images, to stay fast)."""
    x, ref = common.grey(clean.x[:60]), reference("dotted_line")[:60]
    r0, r1 = np.meshgrid(np.arange(27), np.arange(27), indexing="ij")
    lines = overlays._line(np.zeros(729), r0.ravel(), np.full(729, 27), r1.ravel()) * overlays._DOTS
    out = np.round((np.clip(x[:, None] + lines[None], 0, 1) * 255).astype(np.float32))
    assert (out == ref[:, None]).all((2, 3)).any(1).all()


def test_zigzag_is_the_reference_zigzag_for_some_draw(clean, reference):
    x, ref = common.grey(clean.x[:100]), reference("zigzag")[:100]
    patterns = overlays._zigzags().reshape(270, 28, 28)
    out = np.round((np.clip(x[:, None] + patterns[None], 0, 1) * 255).astype(np.float32))
    assert (out == ref[:, None]).all((2, 3)).any(1).all()


def test_glass_blur_waves_keep_the_original_order_of_interacting_swaps():
    """Running the swap loop by waves is exact: visits in one wave touch disjoint pixels, and any two
    visits that touch a common pixel run in the original's order."""
    for delta in (1, 2, 3, 4):
        waves = blur.swap_waves(delta)
        wave_of = {int(p): t for t, wave in enumerate(waves) for p in wave}
        order = sorted(wave_of, reverse=True)  # the original: rows, then columns, from the bottom right
        assert len(order) == (28 - 2 * delta) ** 2
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                dh, dw = abs(a // 28 - b // 28), abs(a % 28 - b % 28)
                if dh < 2 * delta and dw < 2 * delta:
                    assert wave_of[a] < wave_of[b]


def test_lazy_plasma_equals_the_whole_map():
    """The fog's plasma corner, computed lazily, equals the corner of the fully computed map."""
    keys = np.concatenate([np.array([1, 2 ** 63 + 5], dtype=np.uint64),
                           np.random.default_rng(0).integers(0, 2 ** 64, 40, dtype=np.uint64)])
    decay = 1.4
    lattice, step = np.zeros((len(keys), 1, 1)), weather.PLASMA_SIZE
    for level in range(8):
        padded = np.pad(lattice, ((0, 0), (1, 1), (1, 1)), mode="wrap")
        top = np.full(len(keys), -step)
        lattice, _, _ = weather._refine(padded, keys, top, top, step, (100.0 / decay ** level) ** 2)
        step //= 2
    lo, hi = lattice.min((1, 2), keepdims=True), lattice.max((1, 2), keepdims=True)
    full = ((lattice - lo) / (hi - lo))[:, :28, :28]
    np.testing.assert_allclose(weather.plasma_corner(keys, decay), full, rtol=0, atol=1e-12)


RANDOM = ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "rotate", "translate", "fog",
          "spatter", "dotted_line", "zigzag"]


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_match_in_distribution(name, clean, reference, mnist_model):
    """Mean intensity and fraction of changed pixels within 3 standard errors of the reference's (per-image
    values, independent draws), and the zoo CNN's accuracy within 2 points or 3 standard errors of the
    paired difference."""
    ours, ref = _ours(name, clean.x), reference(name)
    orig = _uint8(clean.x)

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        return abs(a.mean() - b.mean()) <= 3 * se + 1e-9

    assert close(ours.mean((1, 2)), ref.mean((1, 2)))
    assert close((ours != orig).mean((1, 2)), (ref != orig).mean((1, 2)))
    labels = clean.y.numpy()

    def correct(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).float().div(255)[:, None]
        return (predict(mnist_model, x).argmax(1).numpy() == labels).astype(float)

    a, b = correct(ours), correct(ref)
    diff = a - b
    assert abs(diff.mean()) <= max(0.02, 3 * diff.std(ddof=1) / np.sqrt(len(diff)))


def test_same_seed_same_images_other_seed_other_images(clean):
    x = clean.x[:50]
    for name in RANDOM:
        assert np.array_equal(_ours(name, x, 3), _ours(name, x, 3)), name
        assert not np.array_equal(_ours(name, x, 3), _ours(name, x, 4)), name


def test_suite_threat_and_canonical_spec():
    threat = build_threat("mnist-c:corruptions=fog|zigzag")
    assert list(threat.corruptions) == ["fog", "zigzag"]
    assert str(threat.spec) == "mnist-c:corruptions=fog|zigzag"
    everything = build_threat("mnist-c")
    assert list(everything.corruptions) == list(MNIST_C)
    assert str(everything.spec) == "mnist-c:corruptions=all"
    assert str(build_threat("fog").spec) == "fog:severity=5"


def test_suite_threat_evaluates(embedded_model, embedded_test):
    threat = build_threat("mnist-c:corruptions=stripe|scale")
    data = embedded_test.select(n=64)
    out = threat.evaluate_shard(embedded_model, data.x, data.y, torch.Generator().manual_seed(0))
    metrics = threat.summarize(out)
    assert set(metrics["accuracy"]) == {"stripe", "scale"}
    assert set(metrics["calibration"]) == {"clean", "stripe", "scale"}
    assert metrics["accuracy"]["scale"]["n"] == 64


def test_unknown_corruption_lists_valid_ones():
    with pytest.raises(RobenchError, match="unknown MNIST-C corruption 'fogg'.*Did you mean 'fog'.*zigzag"):
        build_threat("mnist-c:corruptions=fogg")


def test_bad_severity():
    with pytest.raises(RobenchError, match="severity must be 1..5"):
        CORRUPTIONS.create("fog", severity=6)


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 28, 28), (2, 1, 28, 27)])
def test_wrong_shape_is_a_clear_error(shape):
    with pytest.raises(RobenchError, match=r"needs images of shape \(N, 1, 28, 28\)"):
        CORRUPTIONS.create("zigzag")(torch.zeros(shape))


def test_export_layout_and_seeding(tmp_path, data_root):
    from robench.corruptions.export import export_suite, preview

    out = export_suite("stripe", "mnist", "test", tmp_path / "a", data_root=data_root, progress=False)
    images, labels = np.load(out / "stripe" / "test_images.npy"), np.load(out / "stripe" / "test_labels.npy")
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert not [p for p in os.listdir(out / "stripe") if p.startswith(".")]  # no temporary files left
    png = preview(tmp_path / "p.png", suite="mnist-c", n=2, data_root=data_root)
    assert png.stat().st_size > 1000
