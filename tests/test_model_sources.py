"""Model sources (robench.sources): timm, torchvision and RobustBench models through robench.zoo.resolve
and robench.evaluate, offline; checkpoints that are web pages or fail their checksum are one-line errors."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import robench
from robench import zoo
from robench.errors import RobenchError
from robench.naming import model_name
from robench.nets import Normalize

HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>\n"


@pytest.fixture
def offline(monkeypatch):
    """No network: every socket connection fails."""
    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def cifar10():
    """The first 8 CIFAR-10 test images (the 1,000-image subset suffices); skips where there are none."""
    from robench.data import load_dataset

    try:
        return load_dataset("cifar10", "test").select(n=8)
    except RobenchError as exc:
        pytest.skip(f"needs CIFAR-10 (set ROBENCH_DATA): {exc}")


def _fit(net: torch.nn.Module, data, normalization) -> None:
    """BatchNorm statistics from the images, then the last layer fitted to their labels: a network with
    trained BatchNorm that is right on most of the images, so that the attacks have something to break."""
    norm = Normalize(*normalization)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(norm(data.x))
    net.eval()
    head = net.get_classifier() if hasattr(net, "get_classifier") else net.fc
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    with torch.no_grad():
        features = torch.nn.Sequential(*list(net.children())[:-1])(norm(data.x)).flatten(1)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(features), data.y).backward()
        optimizer.step()


@pytest.fixture(scope="module")
def resnets(cifar10, tmp_path_factory):
    """{source: (model name, weights file)}: a timm and a torchvision ResNet-18 sized for CIFAR-10, with
    BatchNorm statistics and a head fitted on the 8 images, saved as safetensors and as a torch checkpoint."""
    timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'robench[timm]')")
    import torchvision

    folder = tmp_path_factory.mktemp("resnets")
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.manual_seed(0)
    t = timm.create_model("resnet18", num_classes=10)
    _fit(t, cifar10, imagenet)
    save_file({k: v.contiguous() for k, v in t.state_dict().items()}, str(folder / "timm-r18.safetensors"))
    v = torchvision.models.resnet18(num_classes=10)
    _fit(v, cifar10, imagenet)
    torch.save(v.state_dict(), folder / "tv-r18.pt")
    return {"timm": ("timm:resnet18", str(folder / "timm-r18.safetensors")),
            "torchvision": ("torchvision:resnet18", str(folder / "tv-r18.pt"))}


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_resnet_with_batchnorm_runs_every_kind_of_threat(source, resnets, cifar10, offline, tmp_path):
    name, weights = resnets[source]
    model = robench.create_model(name, weights=weights, dataset="cifar10", progress=False)
    assert model_name(model) == name
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    norm = model[0]  # the ImageNet normalisation of the model's own configuration, inside the model
    assert isinstance(norm, Normalize)
    assert torch.allclose(norm.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    threats = ["clean", "pgd-linf:eps=8/255,steps=5", "autoattack:eps=8/255",
               "smoothing:sigma=0.25,n0=8,n=32,batch=32,radii=0|0.25"]
    records = robench.evaluate(model, threats, dataset="cifar10", n=4, store=str(tmp_path / "s.sqlite"),
                               progress=False)
    clean, pgd, ensemble, smoothing = (r.metrics for r in records)
    assert all(r.model == name for r in records)
    assert clean["clean_accuracy"]["value"] >= 0.75  # the fitted head
    eps = repr(8 / 255)
    assert pgd["robust_accuracy"][eps]["value"] <= pgd["clean_accuracy"]["value"]
    assert ensemble["robust_accuracy"][eps]["value"] <= ensemble["clean_accuracy"]["value"]
    broken = sum(ensemble["broken_by"][eps].values())  # by APGD-CE, APGD-T, FAB-T or Square
    assert ensemble["robust_accuracy"][eps]["correct"] + broken == ensemble["clean_accuracy"]["correct"]
    assert smoothing["certified_accuracy"]["0.0"]["n"] == 4


def test_normalisation_comes_from_the_configuration_unless_given(resnets):
    name, weights = resnets["torchvision"]
    own = robench.create_model(name, weights=weights, dataset="cifar10")
    given = robench.create_model(name, weights=weights, dataset="cifar10", normalize="0.5,0.25")
    per_channel = robench.create_model(name, weights=weights, dataset="cifar10", normalize="cifar10")
    bare = robench.create_model(name, weights=weights, dataset="cifar10", normalize="none")
    assert torch.allclose(own[0].std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert given[0].mean.flatten().tolist() == [0.5] and given[0].std.flatten().tolist() == [0.25]
    assert torch.allclose(per_channel[0].mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    assert not any(isinstance(m, Normalize) for m in bare.modules())  # none: the bare network
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(given(x), bare((x - 0.5) / 0.25), atol=1e-5)
    user = robench.create_model("torch.nn:Identity", normalize="0.1,2")  # any model: as its first layer
    assert isinstance(user[0], Normalize) and model_name(user) == "torch.nn:Identity"
    with pytest.raises(RobenchError, match="--normalize '0.5,': write MEAN,STD"):
        robench.create_model(name, weights=weights, normalize="0.5,")


def test_source_names_and_weights_are_checked(resnets, tmp_path):
    _, weights = resnets["timm"]
    with pytest.raises(RobenchError, match="unknown timm architecture 'resnet181'. Did you mean 'resnet18'"):
        robench.create_model("timm:resnet181", weights=weights)
    with pytest.raises(RobenchError, match="torchvision:resnet18 has no weights 'V9'; it has IMAGENET1K_V1"):
        robench.create_model("torchvision:resnet18.V9", weights=weights)
    with pytest.raises(RobenchError, match=r"do not fit timm:resnet18: the keys do not match: 2 mis-shaped "
                                           r"\(fc.weight \(10, 512\) in the file, \(1000, 512\) in the model"):
        robench.create_model("timm:resnet18", weights=weights)  # no dataset: timm's 1000 classes
    with pytest.raises(RobenchError, match="Models of a model source are written robustbench:NAME, timm:NAME"):
        robench.create_model("timmm:resnet18")


def test_pretrained_weights_without_network_is_one_line(offline, monkeypatch):
    import torchvision

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", no_network)
    with pytest.raises(RobenchError, match=r"cannot fetch torchvision's weights ResNet18_Weights.IMAGENET1K_V1 "
                                           r"of resnet18: .*give the weights as --weights FILE") as info:
        robench.create_model("torchvision:resnet18")
    assert "\n" not in str(info.value)


def test_weights_that_are_a_web_page_or_fail_their_checksum(tmp_path, resnets):
    page = tmp_path / "resnet18.safetensors"
    page.write_bytes(HTML)
    with pytest.raises(RobenchError, match=f"{page} is an HTML page, not weights") as info:
        robench.create_model("timm:resnet18", weights=str(page), dataset="cifar10")
    assert "\n" not in str(info.value)
    _, weights = resnets["torchvision"]
    with pytest.raises(RobenchError, match=f"checksum mismatch for {weights}: sha256 [0-9a-f]{{64}}, expected 0{{64}}"):
        robench.create_model("torchvision:resnet18", weights=weights, sha256="0" * 64, dataset="cifar10")
    url = page.as_uri()  # a download (urllib fetches file:// URLs as it fetches https://) of the web page
    with pytest.raises(RobenchError, match=f"cannot download weights from {url} .*sha256 [0-9a-f]{{64}} != expected"):
        robench.create_model("timm:resnet18", weights=url, sha256="1" * 64, dataset="cifar10")


def test_cli_runs_a_timm_model_end_to_end_and_refuses_a_web_page_in_one_line(resnets, cifar10, tmp_path):
    _, weights = resnets["timm"]
    cmd = [sys.executable, "-m", "robench.cli", "run", "--model", "timm:resnet18", "--weights", weights,
           "--dataset", "cifar10", "--n", "4", "--threat", "clean", "--threat", "pgd-linf:eps=8/255,steps=3",
           "--store", str(tmp_path / "s.sqlite"), "--quiet", "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [r["model"] for r in records] == ["timm:resnet18"] * 2
    assert records[1]["threat"].startswith("pgd-linf:") and ",eps=0.03137254901960784," in records[1]["threat"]
    page = tmp_path / "model.pt"
    page.write_bytes(HTML)
    cmd[cmd.index(weights)] = str(page)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and f"{page} is an HTML page" in done.stderr


# -- RobustBench -------------------------------------------------------------------------------------

@pytest.fixture
def robustbench(monkeypatch, tmp_path, offline):
    """robustbench's loader, with robench's cache (and so RobustBench's model directory) in `tmp_path`."""
    from robench.sources.robustbench_models import RobustBench

    pytest.importorskip("timm", reason="robustbench needs timm (pip install 'robench[robustbench]')")
    try:
        rb = RobustBench().robustbench()
    except RobenchError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))

    def must_not_download(gid, path):
        raise AssertionError(f"downloaded {gid} to {path}")

    monkeypatch.setattr(rb.utils, "download_gdrive_new", must_not_download)
    return rb


def test_robustbench_model_with_random_weights_where_its_loader_looks_loads_and_evaluates(robustbench, tmp_path,
                                                                                          cifar10):
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    net = robustbench.model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]["Ding2020MMA"]["model"]()
    path = tmp_path / "robustbench" / "cifar10" / "Linf" / "Ding2020MMA.pt"  # robustbench's model_dir layout
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)  # as RobustBench's are
    model = robench.create_model("robustbench:Linf/Ding2020MMA", dataset="cifar10")
    assert model_name(model) == "robustbench:Linf/Ding2020MMA"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))
    records = robench.evaluate(model, ["clean", "pgd-linf:eps=8/255,steps=2"], dataset="cifar10", n=2,
                               store=str(tmp_path / "s.sqlite"), progress=False)
    assert [r.metrics["clean_accuracy"]["n"] for r in records] == [2, 2]
    assert records[0].model == "robustbench:Linf/Ding2020MMA"


def test_robustbench_names_are_checked(robustbench):
    with pytest.raises(RobenchError, match="in RobustBench's Linf and L2 lists for cifar10; say which: "
                                           "robustbench:Linf/Ding2020MMA or robustbench:L2/Ding2020MMA"):
        robench.create_model("robustbench:Ding2020MMA", dataset="cifar10")
    with pytest.raises(RobenchError, match="unknown RobustBench model for cifar10 'Carmon2019Unlabelled'. "
                                           "Did you mean 'Carmon2019Unlabeled'"):
        robench.create_model("robustbench:Carmon2019Unlabelled", dataset="cifar10")
    with pytest.raises(RobenchError, match="robustbench models are for cifar10, cifar100, imagenet; give the dataset"):
        robench.create_model("robustbench:Carmon2019Unlabeled")
    with pytest.raises(RobenchError, match="threat models for cifar10 are Linf, L2, corruptions, not 'linf'"):
        robench.create_model("robustbench:linf/Carmon2019Unlabeled", dataset="cifar10")


def test_robustbench_download_of_a_web_page_is_one_line_naming_the_file(robustbench, monkeypatch, tmp_path):
    def quota_page(gid, path):
        open(path, "wb").write(HTML)

    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", quota_page)
    path = tmp_path / "robustbench" / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt"
    with pytest.raises(RobenchError, match=f"the download of {path} returned an HTML page, not a checkpoint") as info:
        robench.create_model("robustbench:Carmon2019Unlabeled", dataset="cifar10")
    assert "\n" not in str(info.value) and "Google Drive file 15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ" in str(info.value)
    assert not path.exists()  # removed, so the next try downloads again
    path.write_bytes(HTML)  # a page left by an earlier robustbench run is refused before robustbench reads it
    with pytest.raises(RobenchError, match=f"{path} is an HTML page, not weights"):
        robench.create_model("robustbench:Carmon2019Unlabeled", dataset="cifar10")


@pytest.mark.slow
def test_a_resnet50_runs_every_kind_of_threat_on_a_few_cpu_images(cifar10, tmp_path):
    """A ResNet-50 (25.6M parameters, BatchNorm, residual blocks) with BatchNorm statistics and a head fitted
    on the 8 images: each family of threats on 4 of them; bound propagation refuses it in one line."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50(num_classes=10)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    _fit(net, cifar10, imagenet)
    model = torch.nn.Sequential(Normalize(*imagenet), net).eval()
    assert sum(p.numel() for p in model.parameters()) > 23e6
    eps = 8 / 255
    threats = ["clean", "fgsm:eps=8/255", "pgd-linf:eps=8/255,steps=5", "pgd-l2:eps=0.5,steps=5",
               "autoattack:eps=8/255", "foolbox:FGSM:eps=8/255", "smoothing:sigma=0.25,n0=8,n=32,batch=32,radii=0",
               "bitflip:batch=8,dataset=cifar10,flips=2,k=1,seeds=1,target=0.5", "bitflip-random:flips=4,seeds=1",
               "cifar10-c:corruptions=jpeg_compression|contrast", "gaussian:sigma=0.1"]
    records = robench.evaluate(model, threats, dataset="cifar10", n=4, store=str(tmp_path / "s.sqlite"),
                               progress=False)
    metrics = dict(zip(threats, (r.metrics for r in records)))
    clean = metrics["clean"]["clean_accuracy"]
    assert clean["value"] >= 0.75 and clean["n"] == 4
    for spec in threats[1:6]:
        robust = metrics[spec]["robust_accuracy"]
        assert next(iter(robust.values()))["value"] <= clean["value"], spec
    assert metrics["smoothing:sigma=0.25,n0=8,n=32,batch=32,radii=0"]["certified_accuracy"]["0.0"]["n"] == 4
    assert all(r.n == 4 and r.provenance["model"] == records[0].provenance["model"] for r in records)
    unsupported = r"bound propagation cannot handle the layer ResNet\(\.\.\.\); supported: Linear"
    with pytest.raises(RobenchError, match=unsupported):
        robench.evaluate(model, f"ibp:eps={eps}", dataset="cifar10", n=4, store=str(tmp_path / "s.sqlite"),
                         progress=False)
