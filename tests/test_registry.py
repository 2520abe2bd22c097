import subprocess
import sys
import textwrap

import pytest

from robench.errors import RobenchError
from robench.registry import ATTACKS, CORRUPTIONS, DATASETS, DEFENSES, MODELS, Registry


def test_duplicates_are_refused_and_unknown_names_suggest_the_closest():
    reg = Registry("widgets")
    reg.register("alpha", object())
    with pytest.raises(RobenchError, match="already registered"):
        reg.register("alpha", object())
    with pytest.raises(RobenchError, match="Did you mean 'alpha'"):
        reg.get("alpha2")
    assert reg.names("al*") == ["alpha"]


def test_built_in_families():
    assert {"pgd-linf", "pgd-l2", "fgsm", "foolbox:LinfDeepFoolAttack"} <= set(ATTACKS.names())
    assert "clean" in CORRUPTIONS
    assert {"mnist", "fashion-mnist", "cifar10", "mnist-5k"} <= set(DATASETS.names())
    assert "mnist5k-small-cnn" in MODELS
    assert DEFENSES.group == "robench.defenses"


PLUGIN = textwrap.dedent('''
    """A third-party attack package."""
    import torch
    from robench.attacks.base import Attack

    class SignNoise(Attack):
        """Random sign noise of size eps (an outside plugin)."""
        norm = "linf"

        def __init__(self, *, scale: float = 1.0):
            self.scale = scale

        def run(self, model, x, y, eps, generator):
            noise = torch.randint(0, 2, x.shape, generator=generator).float() * 2 - 1
            return (x + self.scale * eps * noise).clamp(0, 1)
''')


def test_outside_plugin_through_a_real_entry_point_runs_from_the_cli(tmp_path, embedded_model):
    (tmp_path / "robench_signnoise.py").write_text(PLUGIN)
    dist = tmp_path / "robench_signnoise-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: robench-signnoise\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[robench.attacks]\nsign-noise = robench_signnoise:SignNoise\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "robench.cli", "list", "attacks", "sign*"], capture_output=True,
                            text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "sign-noise" in listed.stdout and "outside plugin" in listed.stdout
    run = subprocess.run([sys.executable, "-m", "robench.cli", "run", "--model", "mnist5k-small-cnn",
                          "--dataset", "mnist-5k", "--n", "50", "--threat", "sign-noise:eps=0.3,scale=1",
                          "--format", "csv", "--quiet", "--store", str(tmp_path / "s.sqlite")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    header, row = run.stdout.strip().splitlines()[:2]
    assert "sign-noise 0.3" in header and row.startswith("mnist5k-small-cnn,")


CERTIFIER_AND_DATASET = textwrap.dedent('''
    """A third-party certifier and dataset."""
    import numpy as np
    import torch
    from robench.data import DataSplit, Dataset, DatasetInfo
    from robench.threats import Threat

    class ZeroCert(Threat):
        """Certifies nothing (an outside certifier)."""
        kind = "certification"

        @classmethod
        def as_threat(cls):
            return cls()

        def evaluate_shard(self, model, x, y, generator):
            return {"radius": np.zeros(len(y))}

        def summarize(self, outputs):
            return {"average_certified_radius": 0.0}

    def _load(dataset, split, root, download):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        return DataSplit(dataset.info, split, torch.randint(0, 256, (50, 1, 6, 6), generator=g, dtype=torch.uint8),
                         torch.randint(0, 2, (50,), generator=g))

    DATASET = Dataset(DatasetInfo("tiny-noise", 1, 6, 2, (0.5,), (0.25,)), loader=_load,
                      description="random 6x6 images (an outside dataset)")
''')


def test_outside_certifier_and_dataset_through_entry_points(tmp_path):
    (tmp_path / "robench_outside.py").write_text(CERTIFIER_AND_DATASET)
    dist = tmp_path / "robench_outside-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: robench-outside\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[robench.certifiers]\nzero-cert = robench_outside:ZeroCert\n\n"
                                           "[robench.datasets]\ntiny-noise = robench_outside:DATASET\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    code = ("import robench; from robench.cli import main; from robench.zoo import ModelEntry; "
            "main(['list', 'threats', 'zero*']); main(['list', 'datasets', 'tiny*']); "
            "m = ModelEntry('tiny-mlp', 'tiny-noise', 'mlp').build(); "
            "r = robench.evaluate(m, ['clean', 'zero-cert'], dataset='tiny-noise', n=10, store=%r); "
            "print([x.dataset for x in r], r[1].kind)" % str(tmp_path / "s.sqlite"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:2] == ["zero-cert", "certifier"] and "outside certifier" in lines[0]
    assert lines[1].startswith("tiny-noise") and "outside dataset" in lines[1]
    assert lines[2] == "['tiny-noise', 'tiny-noise'] certification"
