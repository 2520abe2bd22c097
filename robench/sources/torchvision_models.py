"""``torchvision:ARCH`` and ``torchvision:ARCH.WEIGHTS``: torchvision's classification architectures, with
weights from a file or torchvision's own (which need network access), normalised as the weights' meta
(their transforms' mean and std) says."""
from __future__ import annotations

from robench.errors import RobenchError
from robench.sources.base import Loaded, ModelSource, close_names
from robench.sources.timm_models import check_classes


class TorchVision(ModelSource):
    """torchvision classifiers (torchvision:resnet18, torchvision:resnet50.IMAGENET1K_V2): --weights FILE,
    or torchvision's weights; input normalised by the weights' transforms (for a file: those of the named or
    default weights)."""

    name = "torchvision"
    install = "pip install torchvision"

    def load(self, name: str, *, weights: str | None, sha256: str | None, dataset: str | None,
             progress: bool) -> Loaded:
        from robench import zoo
        from robench.data import dataset_info
        from robench.zoo import first_line

        models = self.require("torchvision.models")
        arch, _, tag = name.partition(".")
        known = models.list_models(module=models)
        if arch not in known:
            raise close_names(arch, known, "torchvision classifier", "torchvision.models.list_models()")
        choices = models.get_model_weights(arch)
        if tag and tag not in choices.__members__:
            raise RobenchError(f"torchvision:{arch} has no weights {tag!r}; it has {', '.join(choices.__members__)}.")
        meta = choices[tag or "DEFAULT"]
        if weights:
            size = {} if dataset is None else {"num_classes": dataset_info(dataset).classes}
            net = models.get_model(arch, weights=None, **size)
            zoo.load_into(net, weights, sha256, f"weights {weights} do not fit torchvision:{arch}"
                          + (f" built for {dataset}" if dataset else ""))
        else:
            try:
                net = models.get_model(arch, weights=meta)
            except Exception as exc:
                raise RobenchError(f"cannot fetch torchvision's weights {meta} of {arch}: {first_line(exc)}. "
                                   "Without network access, give the weights as --weights FILE.") from None
            check_classes(f"torchvision:{name}", len(meta.meta["categories"]), dataset)
        transform = meta.transforms()
        return Loaded(net.eval(), (tuple(transform.mean), tuple(transform.std)))
