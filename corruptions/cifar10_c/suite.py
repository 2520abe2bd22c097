"""The CIFAR-10-C suite: its 15 corruptions at severities 1-5, as a `CorruptionSuite`."""
from __future__ import annotations

from robench.corruptions.cifar10_c.common import PREFIX
from robench.corruptions.suite import CorruptionSuite, register_suite

#: in the published order (Hendrycks & Dietterich 2019)
CIFAR10_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
             "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")


@register_suite
class Cifar10C(CorruptionSuite):
    """The CIFAR-10-C suite: the chosen corruptions ("all" for the 15), each at severities 1-5."""

    name = "cifar10-c"
    label = "CIFAR-10-C"
    members = CIFAR10_C
    severities = (1, 2, 3, 4, 5)
    prefix = PREFIX
