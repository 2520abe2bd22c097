"""The 15 corruptions of MNIST-C (Mu & Gilmer 2019), batched and seeded, and the `mnist-c` suite threat.

Each works on 28x28 grey images (N, 1, 28, 28) in [0, 1] and reproduces the original implementation
(github.com/google-research/mnist-c): the same operations, the same library conventions (including its
quirks: glass blur blurs along rows only, the zigzag's last segment formula), and outputs on the 8-bit
grid like the published uint8 files (``round(255 * x)`` as the reference does). Randomness comes only
from the torch generator, so the pixels differ from the reference's but the distribution is the same.
`severity` (1-5) picks the original's setting; the defaults are those of the published dataset.

Modules by kind: `common` (the 28x28 grid, base classes), `noise`, `blur`, `geometric` (affine maps),
`digital` (brightness, stripe), `weather` (fog, spatter), `overlays` (dotted line, zigzag), `edges`
(Canny), and `suite` (the `mnist-c` CorruptionSuite). Importing the package registers them all, in the
order of the published suite's listing.
"""
from robench.corruptions.mnist_c import noise, blur, geometric, digital, weather, overlays, edges  # noqa: F401 (registers)
from robench.corruptions.mnist_c.blur import GlassBlur, MotionBlur
from robench.corruptions.mnist_c.common import Graded, MnistCCorruption
from robench.corruptions.mnist_c.digital import Brightness, Stripe
from robench.corruptions.mnist_c.edges import CannyEdges, canny
from robench.corruptions.mnist_c.geometric import Rotate, Scale, Shear, Translate
from robench.corruptions.mnist_c.noise import ImpulseNoise, ShotNoise
from robench.corruptions.mnist_c.overlays import DottedLine, Zigzag
from robench.corruptions.mnist_c.suite import MNIST_C, MnistC
from robench.corruptions.mnist_c.weather import Fog, Spatter, plasma_corner

__all__ = ["MNIST_C", "MnistC", "MnistCCorruption", "Graded", "ShotNoise", "ImpulseNoise", "GlassBlur",
           "MotionBlur", "Shear", "Rotate", "Scale", "Translate", "Brightness", "Stripe", "Fog", "Spatter",
           "plasma_corner", "DottedLine", "Zigzag", "CannyEdges", "canny"]
