"""Training-time and inference-time defenses; importing this package registers the built-ins."""
from robench.defenses import adversarial, noise, smoothing  # noqa: F401  (registers)
from robench.defenses import clustering  # noqa: F401,E402  (registers)
from robench.defenses import verified  # noqa: F401,E402  (registers)
from robench.defenses import bound_training  # noqa: F401,E402  (registers)
from robench.defenses import distillation  # noqa: F401,E402  (registers)
