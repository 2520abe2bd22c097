"""Input and weight attacks; importing this package registers the built-ins."""
from robench.attacks import foolbox_adapter, pgd  # noqa: F401  (registers)
from robench.attacks import bitflip  # noqa: F401,E402  (registers)
from robench.attacks import smoothadv  # noqa: F401,E402  (registers)
from robench.attacks import apgd  # noqa: F401,E402  (registers)
from robench.attacks import square  # noqa: F401,E402  (registers)
from robench.attacks import fab  # noqa: F401,E402  (registers)
from robench.attacks import autoattack  # noqa: F401,E402  (registers)
from robench.attacks import min_distance  # noqa: F401,E402  (registers)
