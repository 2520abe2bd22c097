"""The 15 corruptions of CIFAR-10-C (Hendrycks & Dietterich 2019), batched and seeded, and the `cifar10-c`
suite threat (each corruption at severities 1-5).

Each works on RGB 32x32 images (N, 3, 32, 32) in [0, 1] with the CIFAR-10 settings of the original
(github.com/hendrycks/robustness, ``make_cifar_c.py``; they differ from ImageNet-C's), reimplemented in torch
and scipy: the same operations and library conventions (OpenCV's borders, Pillow's BOX weights,
ImageMagick's motion blur, scipy's zoom), on the 8-bit grid as the published uint8 files (which truncate).
Randomness comes only from the torch generator, so the pixels differ from the original's but the
distribution is the same. Registered as ``cifar10-c:<corruption>`` (``cifar10-c:fog:severity=5``), severity
3 by default. Frost needs the frost photographs of ``imagecorruptions`` (see `weather`).

Modules: `common` (the grid, the base class, shared operations), `noise`, `blur`, `weather`, `digital`,
and `suite` (the `cifar10-c` CorruptionSuite).
"""
from robench.corruptions.cifar10_c import noise, blur, weather, digital  # noqa: F401 (registers)
from robench.corruptions.cifar10_c.common import PREFIX, CifarCCorruption
from robench.corruptions.cifar10_c.suite import CIFAR10_C, IMAGENET_C_LEVELS, Cifar10C

__all__ = ["CIFAR10_C", "IMAGENET_C_LEVELS", "Cifar10C", "CifarCCorruption", "PREFIX"]
