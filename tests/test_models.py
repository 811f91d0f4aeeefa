"""The S2LD network (tiny config, small images): shapes, masks, gradients, attention memory,
bf16 autocast, checkpoints, strict configuration and the numpy ``match`` interface."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from imatch_s2ld.errors import InputError
from imatch_s2ld.matchers import Matcher, wants_grayscale
from imatch_s2ld.models import S2LD, S2LDOutput, merge_conf, s2ld_matcher
from imatch_s2ld.models.attention import linear_attention

H, W = 64, 80


def _images(seed: int = 0, batch: int = 1, h: int = H, w: int = W) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 1, h // 4, w // 4, generator=g)
    image0 = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    image1 = torch.roll(image0, shifts=(3, 5), dims=(2, 3))
    return image0, image1


def _model(seed: int = 0, **overrides) -> S2LD:
    torch.manual_seed(seed)
    return S2LD.from_config("tiny", **overrides)


def _extra(n: int = 6, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = torch.arange(n) % batch
    return b, torch.arange(n), torch.arange(n).flip(0)


def _float_tensors(out: S2LDOutput) -> dict[str, torch.Tensor]:
    fields = {k: v for k, v in vars(out).items() if isinstance(v, torch.Tensor)}
    for lvl, (exp, std) in enumerate((lv.expectation, lv.std) for lv in out.fine_levels):
        fields[f"fine{lvl}.expectation"], fields[f"fine{lvl}.std"] = exp, std
    return {k: v for k, v in fields.items() if v.is_floating_point()}


def test_output_shapes_and_dtypes():
    model = _model()
    image0, image1 = _images(batch=2)
    out = model(image0, image1, extra_matches=_extra(6, batch=2))
    n = min(model.conf["keypoints"]["max_keypoints"], (H // 8) * (W // 8))
    m = out.matches_b.shape[0]
    assert m >= 6 and out.matches_extra.sum() == 6
    expect = {
        "kpts0": (2, n, 2), "kpts1": (2, n, 2), "kpts_logits0": (2, n), "kpts_logits1": (2, n),
        "kpts_valid0": (2, n), "kpts_valid1": (2, n), "scores": (2, n, n), "matches_b": (m,),
        "matches_i": (m,), "matches_j": (m,), "matches_conf": (m,), "matches_extra": (m,),
        "mkpts0": (m, 2), "mkpts1": (m, 2), "mconf": (m,), "muncertainty": (m,),
    }
    for name, shape in expect.items():
        assert tuple(getattr(out, name).shape) == shape, name
    for name in ("matches_b", "matches_i", "matches_j"):
        assert getattr(out, name).dtype == torch.long
    assert out.kpts_valid0.dtype == torch.bool and out.matches_extra.dtype == torch.bool
    assert len(out.fine_levels) >= 2
    for exp, std in ((lv.expectation, lv.std) for lv in out.fine_levels):
        assert exp.shape == (m, 2) and std.shape == (m,) and (std > 0).all()
    for name, t in _float_tensors(out).items():
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), name
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    # the final estimate stays within the level windows around the coarse match
    pts1 = out.kpts1[out.matches_b, out.matches_j]
    assert (out.mkpts1 - pts1).abs().max() <= 6 + 2 + 1e-4
    torch.testing.assert_close(out.mkpts0, out.kpts0[out.matches_b, out.matches_i])
    # keypoints: inside the image, near their cell (max_offset 0.75 cell)
    assert (out.kpts0[..., 0] >= 0).all() and (out.kpts0[..., 0] <= W - 1).all()
    assert (out.kpts0[..., 1] >= 0).all() and (out.kpts0[..., 1] <= H - 1).all()
    with pytest.raises(AttributeError):
        out.mconf = out.mconf  # frozen


def test_forward_on_each_device_like_on_the_cpu(device):
    model = _model()
    image0, image1 = _images(batch=2)
    ref = model(image0, image1)
    out = model.to(device)(image0.to(device), image1.to(device))
    assert out.mkpts0.device.type == device.type and out.mkpts0.shape == ref.mkpts0.shape
    torch.testing.assert_close(out.mkpts1.cpu(), ref.mkpts1, rtol=0, atol=1e-3)
    torch.testing.assert_close(out.mconf.cpu(), ref.mconf, rtol=0, atol=1e-4)


def test_zero_matches():
    model = _model(coarse={"threshold": 1.1})  # nothing can pass
    image0, image1 = _images()
    out = model(image0, image1)
    assert out.matches_b.shape == (0,) and out.mkpts0.shape == (0, 2) and out.mkpts1.shape == (0, 2)
    assert out.mconf.shape == (0,) and out.muncertainty.shape == (0,)
    for exp, std in ((lv.expectation, lv.std) for lv in out.fine_levels):
        assert exp.shape == (0, 2) and std.shape == (0,)
    loss = out.kpts_logits0.mean() + out.scores.sum() + out.mkpts1.sum() + out.muncertainty.sum()
    loss.backward()  # M = 0 is also fine for the backward pass


def test_masks_exclude_padded_cells():
    model = _model()
    image0, image1 = _images()
    mask0 = torch.ones(1, H // 8, W // 8, dtype=torch.bool)
    mask0[:, :, -3:] = False  # the 3 right-most cell columns are padding
    mask0[:, -2:, :] = False
    mask1 = torch.ones_like(mask0)
    out = model(image0, image1, mask0, mask1)
    n_valid = int(mask0.sum())
    assert int(out.kpts_valid0.sum()) == n_valid and out.kpts_valid1.all()
    valid_kpts = out.kpts0[out.kpts_valid0]
    assert (valid_kpts[:, 0] < (W // 8 - 3) * 8 + 6).all() and (valid_kpts[:, 1] < (H // 8 - 2) * 8 + 6).all()
    assert (out.scores[~out.kpts_valid0] == 0).all()
    assert out.kpts_valid0[0, out.matches_i].all()


def test_gradients_reach_every_parameter():
    model = _model()
    model.train()
    image0, image1 = _images(batch=2)
    out = model(image0, image1, extra_matches=_extra(8, batch=2))
    g = torch.Generator().manual_seed(1)

    def rnd(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g)

    loss = (rnd(out.kpts_logits0) * out.kpts_logits0).sum() + (rnd(out.kpts_logits1) * out.kpts_logits1).sum()
    loss = loss + (rnd(out.scores) * out.scores).sum() * 100
    for exp, std in ((lv.expectation, lv.std) for lv in out.fine_levels):
        loss = loss + (rnd(exp) * exp).sum() + (rnd(std) * std).sum()
    loss.backward()
    bad = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            bad.append(f"{name}: None")
        elif not torch.isfinite(p.grad).all():
            bad.append(f"{name}: not finite")
        elif not (p.grad != 0).any():
            bad.append(f"{name}: all zero")
    assert not bad, "parameters without a useful gradient:\n" + "\n".join(bad)
    prefixes = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert {"backbone", "keypoints", "descriptor", "transformer", "coarse", "fine"} <= prefixes


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_encode_then_match_equals_forward_and_shares_gradients():
    """Eval mode: forward == encode each image + match_encoded; an encoding reused by two pairs
    accumulates both pairs' gradients (what fine-tuning's window step relies on)."""
    model = _model().eval()
    image0, image1 = _images()
    image2 = torch.roll(image0, shifts=(-2, 4), dims=(2, 3))
    with torch.no_grad():
        ref = model(image0, image1, extra_matches=_extra())
        got = model.match_encoded(model.encode(image0), model.encode(image1), extra_matches=_extra())
    for key, value in _float_tensors(ref).items():
        torch.testing.assert_close(_float_tensors(got)[key], value, atol=1e-4, rtol=1e-4, msg=key)
    images = (image0, image1, image2)

    def grads(shared: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        enc = [model.encode(im) for im in images]
        for b in (1, 2):
            e0 = enc[0] if shared else model.encode(image0)
            model.match_encoded(e0, enc[b], extra_matches=_extra()).mkpts1.sum().backward(retain_graph=True)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    shared, separate = grads(True), grads(False)
    assert shared.keys() == separate.keys() and any(n.startswith("backbone.") for n in shared)
    for name, g in separate.items():
        torch.testing.assert_close(shared[name], g, atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(InputError, match="batch sizes differ"):
        model.match_encoded(model.encode(torch.cat([image0, image0])), model.encode(image1))


def test_linear_attention_matches_reference_and_is_linear_in_memory():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 7, 2, 4, generator=g) for _ in range(3))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    a = torch.einsum("blhd,bshd->bhls", fq, fk) * mask[:, None, None, :]
    ref = torch.einsum("bhls,bshd->blhd", a / a.sum(-1, keepdim=True), v)
    torch.testing.assert_close(linear_attention(q, k, v, mask), ref, rtol=1e-4, atol=1e-5)

    n = 20_000
    q, k, v = (torch.randn(1, n, 2, 8, generator=g) for _ in range(3))
    start = time.perf_counter()
    with _LargestTensor() as rec:
        out = linear_attention(q, k, v)
    elapsed = time.perf_counter() - start
    assert torch.isfinite(out).all() and out.shape == (1, n, 2, 8)
    assert rec.largest <= 4 * n * 2 * 8, f"an op returned {rec.largest} elements (N^2 = {n * n})"
    assert elapsed < 5.0


def test_cross_attention_equals_lightglues_block_and_keeps_no_n0_by_n1_matrix():
    from kornia.feature.lightglue import CrossBlock

    from imatch_s2ld.models.attention import cross_attention

    torch.manual_seed(0)
    block = CrossBlock(32, 4, False).double()
    x0, x1 = torch.randn(2, 50, 32, dtype=torch.float64), torch.randn(2, 37, 32, dtype=torch.float64)

    def run(fn):
        a0, a1 = x0.clone().requires_grad_(), x1.clone().requires_grad_()
        largest = [0]

        def pack(t):
            largest[0] = max(largest[0], t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y0, y1 = fn(a0, a1)
        (y0.square().sum() + y1.sin().sum()).backward()
        grads = [a0.grad, a1.grad, *(q.grad for q in block.parameters())]
        block.zero_grad()
        return (y0, y1), grads, largest[0]

    ref, ref_grads, ref_largest = run(block)
    out, grads, largest = run(partial(cross_attention, block))
    for a, b in zip((*out, *grads), (*ref, *ref_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert ref_largest >= 2 * 4 * 50 * 37  # kornia keeps the (B, heads, N0, N1) attention for backward
    assert largest < 2 * 4 * 50 * 37 / 2, largest  # the fused kernel keeps (B, heads, N, d) tensors


@pytest.mark.parametrize("mode", ["linear", "sdpa"])
def test_attention_modes_run(mode: str):
    model = _model(attention={"mode": mode})
    image0, image1 = _images()
    out = model(image0, image1, extra_matches=_extra())
    assert all(torch.isfinite(t).all() for t in _float_tensors(out).values())


def test_bf16_autocast_is_finite():
    model = _model()
    image0, image1 = _images()
    mask = torch.ones(1, H // 8, W // 8, dtype=torch.bool)
    mask[:, :, -1] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image0, image1, mask, mask, extra_matches=_extra())
    for name, t in _float_tensors(out).items():
        assert torch.isfinite(t).all(), name
    assert out.mkpts1.shape == (out.matches_b.shape[0], 2)


def test_checkpoint_round_trip(tmp_path):
    model = _model(attention={"mode": "sdpa"}).eval()
    path = model.save_checkpoint(tmp_path / "sub" / "s2ld.pt", extra={"step": 7})
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 7 and ckpt["conf"]["attention"]["mode"] == "sdpa"
    loaded = S2LD.from_checkpoint(path)
    assert not loaded.training and loaded.conf == model.conf
    image0, image1 = _images()
    with torch.no_grad():
        a = model(image0, image1, extra_matches=_extra())
        b = loaded(image0, image1, extra_matches=_extra())
    for name, t in _float_tensors(a).items():
        torch.testing.assert_close(t, _float_tensors(b)[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(a.matches_i, b.matches_i)


def test_bad_checkpoints_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="corrupt.pt"):
        S2LD.from_checkpoint(corrupt)
    with pytest.raises(InputError, match="missing.pt"):
        S2LD.from_checkpoint(tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {}}, wrong)
    with pytest.raises(InputError, match="wrong.pt"):
        S2LD.from_checkpoint(wrong)
    mismatch = tmp_path / "mismatch.pt"
    tiny = _model()
    torch.save({"conf": merge_conf(tiny.conf, {"d_model": 32}), "state_dict": tiny.state_dict()}, mismatch)
    with pytest.raises(InputError, match="mismatch.pt"):
        S2LD.from_checkpoint(mismatch)


def test_strict_conf_merge():
    default = {"a": 1, "sub": {"b": [1, 2]}}
    merged = merge_conf(default, {"sub": {"b": (3,)}})
    assert merged == {"a": 1, "sub": {"b": [3]}} and default == {"a": 1, "sub": {"b": [1, 2]}}
    merged["sub"]["b"].append(4)
    assert default["sub"]["b"] == [1, 2]
    with pytest.raises(InputError, match="'bogus'"):
        merge_conf(default, {"bogus": 1})
    with pytest.raises(InputError, match="sub.nope"):
        merge_conf(default, {"sub": {"nope": 1}})
    with pytest.raises(InputError, match="max_keypointz"):
        S2LD.from_config("tiny", keypoints={"max_keypointz": 10})
    with pytest.raises(InputError, match="huge"):
        S2LD.from_config("huge")
    with pytest.raises(InputError, match="mode"):
        S2LD.from_config("tiny", attention={"mode": "quadratic"})


def test_bad_inputs_raise_input_error():
    model = _model()
    with pytest.raises(InputError, match="multiples of 8"):
        model(torch.rand(1, 1, 60, 80), torch.rand(1, 1, 64, 80))
    with pytest.raises(InputError, match="mask0"):
        model(*_images(), mask0=torch.ones(1, 3, 3, dtype=torch.bool))


def _texture_pair(h: int = 70, w: int = 93) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (h + 8, w + 8, 3)).astype(np.uint8)
    return big[:h, :w].copy(), big[4:h + 4, 6:w + 6].copy()


def test_numpy_match_interface():
    model = _model(coarse={"threshold": 0.0})  # mutual nearest neighbours only: some matches
    image0, image1 = _texture_pair()
    assert isinstance(model, Matcher) and model.name == "s2ld" and wants_grayscale(model)
    model.train()
    k0, k1, conf = model.match(image0, image1[..., 0])
    assert model.training  # mode restored
    assert k0.dtype == k1.dtype == conf.dtype == np.float32
    assert k0.ndim == 2 and k0.shape[1] == 2 and k0.shape == k1.shape and conf.shape == (len(k0),)
    assert len(k0) > 0
    for k, (h, w) in ((k0, image0.shape[:2]), (k1, image1.shape[:2])):
        assert (k[:, 0] >= -0.5).all() and (k[:, 0] <= w - 0.5).all()
        assert (k[:, 1] >= -0.5).all() and (k[:, 1] <= h - 0.5).all()
    with pytest.raises(InputError, match="uint8"):
        model.match(image0.astype(np.float32), image1)


def test_matcher_factory(tmp_path):
    assert s2ld_matcher(None).conf["coarse"]["threshold"] == 0.1  # the shipped default checkpoint
    with pytest.raises(InputError, match="nothere.pt"):
        s2ld_matcher(str(tmp_path / "nothere.pt"))
    path = _model().save_checkpoint(tmp_path / "w.pt")
    matcher = s2ld_matcher(str(path), coarse={"threshold": 0.0})
    assert matcher.conf["coarse"]["threshold"] == 0.0
    k0, k1, conf = matcher.match(*_texture_pair(48, 64))
    assert k0.shape == k1.shape and conf.shape == (len(k0),)
