"""ResNet-FPN backbone options: ``blocks_per_stage`` and the ``light`` fine head (used by ``base``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imatch_s2ld.errors import InputError
from imatch_s2ld.models import S2LD, named_configs
from imatch_s2ld.models.backbone import ResNetFPN

SMALL = {"initial_dim": 16, "block_dims": [16, 24, 32]}


def _conv_macs(model: nn.Module, image: torch.Tensor) -> int:
    """Multiply-adds of all convolutions of one forward pass on ``image``."""
    total = 0

    def hook(mod: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(image)
    for h in handles:
        h.remove()
    return total


def test_default_conf_keeps_the_fpn_parameter_names():
    net = ResNetFPN(SMALL)
    prefixes = {".".join(k.split(".")[:2]) if k.startswith("layer") else k.split(".")[0]
                for k in net.state_dict()}
    assert prefixes == {"stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                        "out3", "lat2", "smooth2", "lat1", "smooth1"}
    assert net.lat2.weight.shape == (32, 24, 1, 1) and net.smooth1[3].weight.shape == (16, 24, 3, 3)


@pytest.mark.parametrize("blocks", [[1, 2, 2], [1, 1, 3]])
def test_light_head_shapes_and_gradients(blocks):
    torch.manual_seed(0)
    net = ResNetFPN({**SMALL, "blocks_per_stage": blocks, "fine_head": "light"})
    assert [len(s) for s in (net.layer1, net.layer2, net.layer3)] == blocks
    feats = net(torch.rand(2, 1, 32, 48))
    coarse, fine = feats.coarse, feats.fine
    assert feats.score is None and coarse.shape == (2, 32, 4, 6) and fine.shape == (2, 16, 16, 24)
    (coarse.square().mean() + fine.square().mean()).backward()
    assert all(p.grad is not None and (p.grad != 0).any() for p in net.parameters())


def test_base_backbone_is_lighter_than_loftr_layout():
    image = torch.rand(1, 1, 48, 64)  # the multiply-add ratio does not depend on the image size
    base = named_configs()["base"]["backbone"]
    assert base["block_dims"] == [128, 196, 256]
    light = _conv_macs(ResNetFPN(base).eval(), image)
    loftr_layout = _conv_macs(ResNetFPN({"initial_dim": 128, "block_dims": [128, 196, 256]}).eval(), image)
    assert light < 0.6 * loftr_layout


def test_bad_backbone_conf():
    with pytest.raises(InputError, match="fine_head"):
        ResNetFPN({"fine_head": "heavy"})
    with pytest.raises(InputError, match="blocks_per_stage"):
        ResNetFPN({"blocks_per_stage": [0, 2, 2]})
    with pytest.raises(InputError, match="block_dims"):
        ResNetFPN({"block_dims": [16, 24]})


def test_checkpoints_with_and_without_the_new_keys(tmp_path):
    torch.manual_seed(0)
    light = S2LD.from_config("tiny", backbone={"blocks_per_stage": [1, 2, 2], "fine_head": "light"}).eval()
    path = light.save_checkpoint(tmp_path / "light.pt")
    image = torch.rand(1, 1, 32, 48)
    with torch.inference_mode():
        a, b = light.backbone(image), S2LD.from_checkpoint(path).backbone(image)
    assert torch.equal(a.fine, b.fine)
    old = S2LD.from_config("tiny")  # a checkpoint written before the keys existed still loads
    conf = {k: v for k, v in old.conf.items() if k not in ("descriptor", "freeze")}
    conf["backbone"] = {k: v for k, v in old.conf["backbone"].items()
                        if k not in ("blocks_per_stage", "fine_head", "name")}
    conf["keypoints"] = {k: v for k, v in old.conf["keypoints"].items()
                         if k not in ("source", "nms_radius", "detection_threshold")}
    conf["attention"] = {k: v for k, v in old.conf["attention"].items() if k != "init"}
    conf["coarse"] = {k: v for k, v in old.conf["coarse"].items() if k != "mode"}
    torch.save({"conf": conf, "state_dict": old.state_dict()}, tmp_path / "old.pt")
    assert S2LD.from_checkpoint(tmp_path / "old.pt").backbone.fine_head == "fpn"
