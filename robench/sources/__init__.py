"""Model sources: ``source:name`` models from other libraries (installed as robench.sources).

robench.zoo.resolve dispatches a model name whose prefix is a registered source (robench.registry.SOURCES;
third-party sources through the entry-point group ``robench.sources``) to that source's `load`. Each
built-in source needs its library only when used, installed by its extra: ``robustbench:NAME``
(robench[robustbench]), ``timm:ARCH`` (robench[timm]) and ``torchvision:ARCH`` (torchvision, a requirement).
"""
from robench.registry import SOURCES
from robench.sources.base import Loaded, ModelSource
from robench.sources.robustbench_models import RobustBench
from robench.sources.timm_models import Timm
from robench.sources.torchvision_models import TorchVision

for _source in (RobustBench, Timm, TorchVision):
    SOURCES.register(_source.name, _source)

__all__ = ["Loaded", "ModelSource", "RobustBench", "Timm", "TorchVision"]
