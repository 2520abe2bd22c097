"""CIFAR-10-C: the CIFAR-10 settings, fidelity to imagecorruptions (and to the libraries the original calls)
on the first CIFAR-10 test images, invariants, the suite threat and bad input.

imagecorruptions implements the ImageNet-C settings, so the fidelity tests run robench's corruptions with
those settings (a corruption's `level` is data) against it on 32x32 images; where the CIFAR-10 original
differs from imagecorruptions in more than the settings (Pillow's BOX upsampling in pixelate, the 1/5 frost
photographs, the elastic transform's affine step, Wand's motion blur), they are compared with Pillow, OpenCV
and scipy, which the original calls. Random corruptions are compared by statistics.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import robench
from robench.corruptions.cifar10_c import CIFAR10_C, IMAGENET_C_LEVELS, PREFIX, Cifar10C, common, digital, weather
from robench.corruptions.mnist_c.blur import swap, swap_waves
from robench.errors import RobenchError
from robench.registry import CORRUPTIONS
from robench.threats import build_threat

N = 16

#: the CIFAR-10 settings of the original (make_cifar_c.py), severity 1..5
CIFAR_SETTINGS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10), "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3), "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": ((0, 0, 2.56), (1.6, 6.4, 2.24), (2.56, 1.92, 1.92), (3.2, 1.28, 1.6), (3.2, 0.96, 0.96)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65), "jpeg_compression": (80, 65, 58, 50, 40)}

#: deterministic corruptions: (largest difference, largest fraction of differing values) in 8-bit steps
DETERMINISTIC_TOLERANCE = {"brightness": (1, 0.02), "contrast": (0, 0.0), "defocus_blur": (1, 0.001),
                           "zoom_blur": (1, 0.001), "jpeg_compression": (0, 0.0)}


def _frost_available() -> bool:
    try:
        weather.frost_layers()
    except RobenchError:
        return False
    return True


#: the corruptions that run here: frost needs imagecorruptions' photographs
AVAILABLE = tuple(name for name in CIFAR10_C if name != "frost" or _frost_available())


@pytest.fixture(scope="module")
def clean():
    """The first N CIFAR-10 test images (the local 1,000-image subset suffices)."""
    from robench.data import load_dataset

    try:
        return load_dataset("cifar10", "test").select(n=N).x
    except RobenchError as exc:
        pytest.skip(f"needs CIFAR-10 (set ROBENCH_DATA): {exc}")


@pytest.fixture(scope="module")
def ic():
    """imagecorruptions' module of corruptions, made to run on today's numpy and scikit-image (1.1.2 uses
    np.float_ and gaussian(multichannel=)); skips where it is not installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its pkg_resources import warns
        pytest.importorskip("imagecorruptions", reason="imagecorruptions is not installed: "
                                                        "pip install 'robench[cifar10c]'")
        from imagecorruptions import corruptions
    import skimage.filters

    def gaussian(image, sigma, multichannel=None, **kwargs):
        return skimage.filters.gaussian(image, sigma=sigma, channel_axis=-1 if multichannel else None, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "float_", np.float64, raising=False)
        patch.setattr(corruptions, "gaussian", gaussian)
        yield corruptions


def _uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> int (N, H, W, 3) 8-bit values."""
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().astype(int)


def _theirs(ic, name: str, x: torch.Tensor, severity: int, seed: int = 0) -> np.ndarray:
    """imagecorruptions' corruption of each image, as ``imagecorruptions.corrupt`` (np.uint8 of its output)."""
    np.random.seed(seed)
    fn = getattr(ic, name)
    return np.stack([np.uint8(np.asarray(fn(Image.fromarray(im.astype(np.uint8)), severity)))
                     for im in _uint8(x)]).astype(int)


def _ours(name: str, x: torch.Tensor, level=None, severity: int = 3, seed: int = 0) -> np.ndarray:
    corruption = CORRUPTIONS.create(PREFIX + name, severity=severity)
    if level is not None:
        corruption.level = level
    return _uint8(corruption(x, torch.Generator().manual_seed(seed)))


# -- settings and bad input ---------------------------------------------------------------------------

def test_the_fifteen_are_registered_with_the_cifar_settings():
    assert CIFAR10_C == tuple(CIFAR_SETTINGS)
    for name, levels in CIFAR_SETTINGS.items():
        cls = CORRUPTIONS.get(PREFIX + name)
        assert len(cls.levels) == 5 and all(np.allclose(a, b) for a, b in zip(cls.levels, levels)), name
        assert cls.input_shape == (3, 32, 32)
        if name in AVAILABLE:
            assert cls(severity=5).level == cls.levels[4] and CORRUPTIONS.create(PREFIX + name).severity == 3


def test_bad_severity_and_name_are_one_line_errors():
    with pytest.raises(RobenchError, match=r"^cifar10-c:fog severity must be 1\.\.5; got 6\.$"):
        CORRUPTIONS.create(PREFIX + "fog", severity=6)
    with pytest.raises(RobenchError, match=r"unknown CIFAR-10-C corruption 'fogg'\. Did you mean 'fog'\?"):
        build_threat("cifar10-c:corruptions=fogg")
    with pytest.raises(RobenchError, match=r"needs images of shape \(N, 3, 32, 32\)"):
        CORRUPTIONS.create(PREFIX + "fog")(torch.zeros(2, 1, 28, 28))


# -- fidelity: deterministic corruptions ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DETERMINISTIC_TOLERANCE))
def test_deterministic_corruptions_match_imagecorruptions(name, clean, ic):
    most, fraction = DETERMINISTIC_TOLERANCE[name]
    for severity, level in enumerate(IMAGENET_C_LEVELS[name], 1):
        diff = np.abs(_ours(name, clean, level) - _theirs(ic, name, clean, severity))
        assert diff.max() <= most and (diff > 0).mean() <= fraction, (name, severity, diff.max(), (diff > 0).mean())


def test_pixelate_matches_pillow_with_the_cifar_settings(clean):
    """The original's pixelate is Pillow's BOX down and BOX up (imagecorruptions upsamples with NEAREST):
    robench's matches it exactly."""
    images = [Image.fromarray(im.astype(np.uint8)) for im in _uint8(clean)]
    for severity, c in enumerate(CIFAR_SETTINGS["pixelate"], 1):
        side = int(32 * c)
        pil = np.stack([np.asarray(im.resize((side, side), Image.BOX).resize((32, 32), Image.BOX)) for im in images])
        assert np.array_equal(_ours("pixelate", clean, severity=severity), pil), severity


def test_motion_blur_at_given_angles_matches_imagecorruptions(clean, ic):
    """ImageMagick's kernel and offsets (imagecorruptions reimplements Wand's): within one 8-bit step on
    0.5% of the values (ImageMagick rounds its sum finer). Radius 20 exceeds the 32-pixel image, where
    imagecorruptions drops the taps and ImageMagick repeats the edge, so severities 1-4 of ImageNet-C."""
    angles = torch.linspace(-45, 45, N)
    for radius, sigma in IMAGENET_C_LEVELS["motion_blur"][:4]:
        ours = _uint8(common.motion_blur(common.pixels(clean), radius, sigma, angles))
        theirs = np.stack([np.uint8(np.clip(ic._motion_blur(im, radius, sigma, float(a)), 0, 255))
                           for im, a in zip(_uint8(clean).astype(np.uint8), angles)])
        diff = np.abs(ours - theirs)
        assert diff.max() <= 1 and (diff > 0).mean() <= 0.005, (radius, sigma)


def test_frost_blends_a_fifth_scale_crop_of_the_photographs(clean):
    """The layers are OpenCV's resize(fx=0.2) of the photographs (exactly for the PNGs, within 2 steps
    where Pillow's and OpenCV's JPEG decoders differ), and frost on black images is weight * a crop of one."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python is not installed (comes with imagecorruptions)")
    try:
        stack, sizes = weather.frost_layers()
    except RobenchError as exc:
        pytest.skip(str(exc))
    import importlib.util
    from pathlib import Path

    folder = Path(importlib.util.find_spec("imagecorruptions").submodule_search_locations[0]) / "frost"
    for k, file in enumerate(weather.FROST_FILES):
        small = cv2.resize(cv2.imread(str(folder / file)), (0, 0), fx=0.2, fy=0.2)[..., ::-1]
        h, w = sizes[k].tolist()
        assert small.shape[:2] == (h, w)
        ours = stack[k, :, :h, :w].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(ours - small).max() <= (0 if file.endswith(".png") else 2), file
    severity, (keep, weight) = 5, CIFAR_SETTINGS["frost"][4]
    out = CORRUPTIONS.create(PREFIX + "frost", severity=severity)(torch.zeros(4, 3, 32, 32))
    windows = [stack[k, :, :h, :w].double().unfold(1, 32, 1).unfold(2, 32, 1)
               for k, (h, w) in enumerate(sizes.tolist())]
    for image in _uint8(out):
        target = torch.from_numpy(image).permute(2, 0, 1).double()
        best = min(float((torch.floor(weight * win) - target[:, None, None]).abs().amax((0, 3, 4)).min())
                   for win in windows)
        assert best == 0


def test_elastic_transform_matches_opencv_and_scipy_for_the_same_draws(clean):
    """OpenCV's getAffineTransform + warpAffine (reflect 101), scipy's gaussian_filter + map_coordinates
    (order 1, 'reflect') on the same draws: within one 8-bit step on 1% of the values."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python is not installed (comes with imagecorruptions)")
    rng = np.random.default_rng(0)
    x = common.pixels(clean)
    rows, cols = np.mgrid[:32, :32]
    for severity in range(1, 6):
        corruption = CORRUPTIONS.create(PREFIX + "elastic_transform", severity=severity)
        alpha, sigma, jitter = corruption.level
        moved = (digital._POINTS + rng.uniform(-jitter, jitter, (N, 3, 2))).astype(np.float32)
        noise = rng.uniform(-1, 1, (2, N, 32, 32))
        ours = _uint8(common.to_images(corruption.warp(x, moved, noise), clean))
        for j, image in enumerate(x.permute(0, 2, 3, 1).numpy().astype(np.float32)):
            affine = cv2.getAffineTransform(digital._POINTS, moved[j])
            warped = cv2.warpAffine(image, affine, (32, 32), borderMode=cv2.BORDER_REFLECT_101)
            dx, dy = ((ndimage.gaussian_filter(u[j], sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
                      for u in noise)
            channels = [ndimage.map_coordinates(warped[..., c], [rows + dy, cols + dx], order=1, mode="reflect")
                        for c in range(3)]
            theirs = np.floor(np.clip(np.stack(channels, -1), 0, 1) * 255)
            diff = np.abs(ours[j] - theirs)
            assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (severity, j, diff.max(), (diff > 0).mean())


# -- fidelity: random corruptions, by statistics ------------------------------------------------------------

def test_glass_blur_loop_is_the_originals_on_rgb_pixels():
    """The wavefront loop with copies equals the original's sequential ``x[h, w], x[h', w'] = x[h', w'],
    x[h, w]`` on an RGB numpy image (whose pixels are views, so the partner keeps its value) for the same
    draws, for every delta of CIFAR-10-C and ImageNet-C."""
    rng = np.random.default_rng(0)
    for delta in (1, 2, 3, 4):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        cells = [(h, w) for h in range(32 - delta, delta, -1) for w in range(32 - delta, delta, -1)]
        moves = rng.integers(-delta, delta, (2, len(cells), 2))  # (iteration, visit, (dx, dy))
        original = image.copy()
        for iteration in moves:
            for (h, w), (dx, dy) in zip(cells, iteration):
                original[h, w], original[h + dy, w + dx] = original[h + dy, w + dx], original[h, w]
        waves = swap_waves(delta, 32)
        order = np.concatenate(waves)  # the visits in wave order
        flat = {h * 32 + w: i for i, (h, w) in enumerate(cells)}
        offsets = np.stack([[it[flat[v]][1] * 32 + it[flat[v]][0] for v in order] for it in moves])[None]
        ours = swap(waves, image.reshape(1, 1024, 3), offsets, copy=True).reshape(32, 32, 3)
        assert np.array_equal(ours, original), delta


def test_noise_statistics_match_imagecorruptions(ic):
    """On mid-grey images: the Gaussian noise's std, shot noise's variance x / c and the fraction of
    impulse values set to 0 or 1 agree with imagecorruptions' within 5% (ImageNet-C settings, some clipped)
    and, with the CIFAR-10 settings (too small to clip), with the setting."""
    grey = torch.full((N, 3, 32, 32), 128 / 255)
    stats = {"gaussian_noise": lambda out: (out - 128).std() / 255,
             "shot_noise": lambda out: ((out - 128) / 255).var(),
             "impulse_noise": lambda out: ((out == 0) | (out == 255)).mean()}
    expected = {"gaussian_noise": lambda c: c, "shot_noise": lambda c: 128 / 255 / c, "impulse_noise": lambda c: c}
    for name, stat in stats.items():
        for severity in (1, 3, 5):
            level = IMAGENET_C_LEVELS[name][severity - 1]
            ours, theirs = stat(_ours(name, grey, level)), stat(_theirs(ic, name, grey, severity))
            assert ours == pytest.approx(theirs, rel=0.05), (name, severity)
            cifar = CIFAR_SETTINGS[name][severity - 1]
            assert stat(_ours(name, grey, severity=severity)) == pytest.approx(expected[name](cifar), rel=0.05)


def test_plasma_fractal_matches_the_original_in_distribution(ic):
    """Mean, std and mean neighbour difference of 32x32 plasma maps agree with imagecorruptions'
    plasma_fractal(mapsize=32) within 5% (400 maps each)."""
    def stats(maps: np.ndarray) -> np.ndarray:
        return np.array([maps.mean(), maps.std(), np.abs(np.diff(maps, axis=2)).mean()])

    for decay in (3, 1.75):
        ours = weather.plasma_fractal(400, decay, torch.Generator().manual_seed(0)).numpy()
        np.random.seed(0)
        theirs = np.stack([ic.plasma_fractal(mapsize=32, wibbledecay=decay) for _ in range(400)])
        assert stats(ours) == pytest.approx(stats(theirs), rel=0.05), decay


#: random corruptions: relative tolerance of the mean absolute change, and of the mean shift as a fraction
#: of that change (fog's plasma is low-frequency: its mean over 64 maps still varies by a few steps)
RANDOM_TOLERANCE = {"glass_blur": (0.03, 0.02), "snow": (0.05, 0.05), "fog": (0.05, 0.1)}


@pytest.mark.parametrize("name", list(RANDOM_TOLERANCE))
def test_random_corruptions_change_images_as_imagecorruptions(name, clean, ic):
    """The mean absolute change and the mean shift from the clean images agree with imagecorruptions'
    (ImageNet-C settings), over 4 draws of N images."""
    change_tolerance, shift_tolerance = RANDOM_TOLERANCE[name]
    x = _uint8(clean)
    for severity in (1, 3, 5):
        level = IMAGENET_C_LEVELS[name][severity - 1]
        ours = np.stack([_ours(name, clean, level, seed=s) for s in range(4)]) - x
        theirs = np.stack([_theirs(ic, name, clean, severity, seed=s) for s in range(4)]) - x
        change = np.abs(theirs).mean()
        assert np.abs(ours).mean() == pytest.approx(change, rel=change_tolerance), severity
        assert abs(ours.mean() - theirs.mean()) <= shift_tolerance * change, severity


# -- invariants ---------------------------------------------------------------------------------------

#: corruptions whose CIFAR-10 settings do not make the change grow with severity: glass blur's blur
#: smooths the swaps more at severity 3 than at 4, elastic's affine jitter shrinks with severity, frost
#: trades image for frost
NOT_MONOTONE = {"glass_blur", "elastic_transform", "frost"}


def test_every_part_keeps_shape_and_range_and_change_grows_with_severity(clean):
    x = clean[:4]
    for name in AVAILABLE:
        changes = []
        for severity in range(1, 6):
            out = CORRUPTIONS.create(PREFIX + name, severity=severity)(x, torch.Generator().manual_seed(1))
            assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
            assert torch.equal(out, (out * 255).round() / 255)  # the 8-bit grid
            changes.append(float((out - x).abs().mean()))
        assert min(changes) > 0, name
        if name not in NOT_MONOTONE:
            assert changes == sorted(changes), (name, changes)


def test_same_seed_same_images_other_seed_other_images(clean):
    x = clean[:4]
    for name in AVAILABLE:
        corruption = CORRUPTIONS.create(PREFIX + name)
        a, b = (corruption(x, torch.Generator().manual_seed(7)) for _ in range(2))
        assert torch.equal(a, b), name
        other = corruption(x, torch.Generator().manual_seed(8))
        assert torch.equal(a, other) == corruption.deterministic, name


# -- the suite threat ---------------------------------------------------------------------------------

def _linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))


def test_the_suite_threat_through_evaluate(clean, tmp_path):
    threat = build_threat("cifar10-c:corruptions=fog|contrast")
    assert threat.label == "CIFAR-10-C" and list(threat.parts()) == [f"{c}/{s}" for c in ("fog", "contrast")
                                                                      for s in range(1, 6)]
    assert issubclass(CORRUPTIONS.get("cifar10-c"), Cifar10C)
    if "frost" in AVAILABLE:
        assert len(build_threat("cifar10-c").corruptions) == 75
    else:
        with pytest.raises(RobenchError, match=r"pip install 'robench\[cifar10c\]'"):
            build_threat("cifar10-c")
    [record] = robench.evaluate(_linear_model(), "cifar10-c:corruptions=fog", dataset="cifar10", n=8,
                                store=str(tmp_path / "s.sqlite"))
    metrics = record.metrics
    assert set(metrics["accuracy"]) == {f"fog/{s}" for s in range(1, 6)}
    assert set(metrics["mean_accuracy_per_severity"]) == {"1", "2", "3", "4", "5"}


def test_robench_run_takes_the_suite(clean, tmp_path):
    (tmp_path / "c10c_model.py").write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n    return "
                                            "torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))\n")
    env = {**__import__("os").environ}
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "robench.cli", "run", "--model", "c10c_model:make", "--dataset",
                           "cifar10", "--n", "4", "--threat", "cifar10-c:corruptions=pixelate|jpeg_compression",
                           "--store", str(tmp_path / "s.sqlite"), "--quiet", "--format", "json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    assert record["threat"].startswith("cifar10-c:") and len(record["metrics"]["accuracy"]) == 10


def test_export_writes_the_published_layout(data_root, tmp_path):
    """OUT/<corruption>.npy holds severities 1-5 in turn (each the MNIST-C layout's part at the same seed) and
    OUT/labels.npy the test labels five times, as the published CIFAR-10-C; a train split is refused."""
    from robench.corruptions.suite import export_corruptions

    suite = Cifar10C(corruptions=("gaussian_noise", "contrast"))
    out = suite.export("cifar10", "test", tmp_path / "c10c", data_root=data_root, seed=1, progress=False)
    labels = robench.load_dataset("cifar10", "test", data_root).labels.numpy()
    n = len(labels)
    assert sorted(p.name for p in out.iterdir()) == ["contrast.npy", "gaussian_noise.npy", "labels.npy"]
    assert np.array_equal(np.load(out / "labels.npy"), np.tile(labels, 5).astype(np.uint8))
    parts = export_corruptions(suite.corruptions, "cifar10", "test", tmp_path / "parts", data_root=data_root,
                               seed=1, progress=False)
    for name in ("gaussian_noise", "contrast"):
        images = np.load(out / f"{name}.npy")
        assert images.shape == (5 * n, 32, 32, 3) and images.dtype == np.uint8
        for severity in range(1, 6):
            block = images[(severity - 1) * n:severity * n]
            assert np.array_equal(block, np.load(parts / name / str(severity) / "test_images.npy"))
    assert not np.array_equal(images[:n], images[4 * n:])  # severities differ
    with pytest.raises(RobenchError, match="test split only"):
        suite.export("cifar10", "train", tmp_path / "train", data_root=data_root, progress=False)
