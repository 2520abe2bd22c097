"""``timm:ARCH`` and ``timm:ARCH.TAG``: timm architectures, with weights from a file or timm's pretrained
weights (which need network access), normalised as the architecture's pretrained configuration says."""
from __future__ import annotations

from robench.errors import RobenchError
from robench.sources.base import Loaded, ModelSource, close_names


class Timm(ModelSource):
    """timm architectures (timm:resnet18, timm:resnet18.a1_in1k): --weights FILE, or timm's pretrained
    weights; input normalised by the pretrained configuration's mean and std."""

    name = "timm"
    install = "pip install 'robench[timm]'"

    def load(self, name: str, *, weights: str | None, sha256: str | None, dataset: str | None,
             progress: bool) -> Loaded:
        from robench import zoo
        from robench.data import dataset_info
        from robench.zoo import first_line

        timm = self.require("timm")
        if not timm.is_model(name):
            raise close_names(name, timm.list_models(), "timm architecture", "timm.list_models()")
        if weights:
            size = {} if dataset is None else {"num_classes": dataset_info(dataset).classes,
                                               "in_chans": dataset_info(dataset).channels}
            net = timm.create_model(name, pretrained=False, **size)
            zoo.load_into(net, weights, sha256, f"weights {weights} do not fit timm:{name}"
                          + (f" built for {dataset}" if dataset else ""))
        else:
            try:
                net = timm.create_model(name, pretrained=True)
            except Exception as exc:
                raise RobenchError(f"cannot fetch timm's pretrained weights of {name}: {first_line(exc)}. Without "
                                   "network access, give the weights as --weights FILE.") from None
            check_classes(f"timm:{name}", net.num_classes, dataset)
        cfg = getattr(net, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean"), cfg.get("std")
        return Loaded(net.eval(), (tuple(mean), tuple(std)) if mean and std else None)


def check_classes(model: str, classes: int, dataset: str | None) -> None:
    """Refuse a library's pretrained weights whose number of classes is not the dataset's."""
    from robench.data import dataset_info

    if dataset is not None and classes != dataset_info(dataset).classes:
        raise RobenchError(f"{model}'s pretrained weights predict {classes} classes, {dataset} has "
                           f"{dataset_info(dataset).classes}: give weights trained on {dataset} as --weights FILE.")
