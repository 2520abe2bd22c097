"""The MNIST-C suite: its 15 corruptions at the published severities, as a `CorruptionSuite`."""
from __future__ import annotations

from robench.corruptions.suite import CorruptionSuite, register_suite

MNIST_C = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
           "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")


@register_suite
class MnistC(CorruptionSuite):
    """The MNIST-C suite: the chosen corruptions ("all" for the 15) at the published severities."""

    name = "mnist-c"
    label = "MNIST-C"
    members = MNIST_C
