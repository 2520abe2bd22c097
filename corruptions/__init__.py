"""Corruptions; importing this package registers the built-ins."""
from robench.corruptions import base  # noqa: F401  (registers)
from robench.corruptions import cifar10_c, mnist_c, noise  # noqa: F401,E402  (registers)
