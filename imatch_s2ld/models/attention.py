"""Interleaved self- and cross-attention over keypoint descriptors (linear or softmax attention)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import merge_conf
from ..errors import InputError

ATTENTION_MODES = ("linear", "sdpa")


class TransformerOutput(NamedTuple):
    """desc0 (B, N0, d), desc1 (B, N1, d) transformed; ``depth`` layers run; kept0 (B, N0), kept1
    (B, N1) bool: valid keypoints that point pruning kept (pruned ones keep the descriptor of the
    layer that pruned them and cannot be matched; without pruning: the valid ones)."""

    desc0: torch.Tensor
    desc1: torch.Tensor
    depth: int
    kept0: torch.Tensor
    kept1: torch.Tensor

#: ``attention.mode`` of the keypoint transformer: the two above (S2LD's layers) or ``lightglue``.
TRANSFORMER_MODES = (*ATTENTION_MODES, "lightglue")


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     key_mask: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Kernel attention with feature map ``elu(x) + 1`` (Katharopoulos et al. 2020).

    Memory is linear in the number of tokens: only (B, H, D, D) summaries are formed, never an
    L x S matrix. Computed in float32 (also under autocast).

    Args:
        q: (B, L, H, D); k, v: (B, S, H, D); key_mask: (B, S) bool, True = attend.
    Returns:
        (B, L, H, D) in the dtype of ``q``.
    """
    dtype = q.dtype
    with torch.autocast(q.device.type, enabled=False):
        q = F.elu(q.float()) + 1
        k = F.elu(k.float()) + 1
        v = v.float()
        if key_mask is not None:
            k = k * key_mask[:, :, None, None].to(k.dtype)
        n = v.shape[1]
        v = v / max(n, 1)  # keep the summed values in a well-scaled range
        kv = torch.einsum("bshd,bshv->bhdv", k, v)
        z = 1.0 / (torch.einsum("blhd,bhd->blh", q, k.sum(dim=1)) + eps)
        out = torch.einsum("blhd,bhdv,blh->blhv", q, kv, z) * max(n, 1)
    return out.to(dtype)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``scaled_dot_product_attention``; shapes as :func:`linear_attention`."""
    mask = None
    if key_mask is not None:
        # a query with no valid key at all would give NaN: let it attend everywhere instead
        key_mask = key_mask | ~key_mask.any(dim=1, keepdim=True)
        mask = key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask)
    return out.transpose(1, 2)


class AttentionLayer(nn.Module):
    """Multi-head attention message + MLP update with a residual (LoFTR-style encoder layer)."""

    def __init__(self, d_model: int, n_heads: int, mode: str = "linear") -> None:
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise InputError(f"attention mode {mode!r} is not one of {', '.join(ATTENTION_MODES)}")
        if d_model % n_heads:
            raise InputError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.mode, self.n_heads = mode, n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(2 * d_model, 2 * d_model, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(2 * d_model, d_model, bias=False))
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, source: torch.Tensor, pe_x: torch.Tensor | None = None,
                pe_source: torch.Tensor | None = None,
                source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: (B, L, d) queries; source: (B, S, d) keys/values; pe_x, pe_source: optional
            positional encodings added to queries / keys; source_mask: (B, S) bool.
        Returns:
            (B, L, d) updated ``x``.
        """
        b, l_, d = x.shape
        s, h = source.shape[1], self.n_heads
        q = self.q(x if pe_x is None else x + pe_x).view(b, l_, h, d // h)
        k = self.k(source if pe_source is None else source + pe_source).view(b, s, h, d // h)
        v = self.v(source).view(b, s, h, d // h)
        if self.mode == "linear":
            msg = linear_attention(q, k, v, source_mask)
        else:
            msg = softmax_attention(q, k, v, source_mask)
        msg = self.norm1(self.merge(msg.reshape(b, l_, d)))
        msg = self.norm2(self.mlp(torch.cat([x, msg.to(x.dtype)], dim=-1)))
        return x + msg


class KeypointTransformer(nn.Module):
    """``n_layers`` x (self-attention in each image, then cross-attention between the images)."""

    default_conf: dict[str, Any] = {
        "n_layers": 4, "n_heads": 8, "mode": "linear",
        "init": None,  # lightglue mode: start from LightGlue weights (aliked_lightglue | disk_lightglue)
        # lightglue mode: per-layer exits (token confidences and assignment heads, from LightGlue's weights)
        # and the share of confident keypoints above which inference stops early (<= 0: every layer runs)
        "exits": False,
        "depth_confidence": -1.0,
        # lightglue mode: point pruning (LightGlue's adaptive width: per-layer token confidences and
        # matchability heads, 514 parameters a layer) and its threshold (<= 0: every keypoint runs)
        "pruning": False,
        "width_confidence": -1.0,
    }

    def __init__(self, d_model: int, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        n, heads, mode = int(conf["n_layers"]), int(conf["n_heads"]), str(conf["mode"])
        self.self_layers = nn.ModuleList([AttentionLayer(d_model, heads, mode) for _ in range(n)])
        self.cross_layers = nn.ModuleList([AttentionLayer(d_model, heads, mode) for _ in range(n)])

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, pe0: torch.Tensor, pe1: torch.Tensor,
                valid0: torch.Tensor | None = None, valid1: torch.Tensor | None = None) -> TransformerOutput:
        """Args:
            desc0 (B, N0, d), desc1 (B, N1, d); pe0/pe1 positional encodings of the same shapes
            (added to queries and keys of self-attention); valid0 (B, N0), valid1 (B, N1) bool.
        Returns:
            :class:`TransformerOutput` (every layer runs, nothing is pruned).
        """
        kept0 = _all_valid(desc0, valid0)
        kept1 = _all_valid(desc1, valid1)
        for self_layer, cross_layer in zip(self.self_layers, self.cross_layers):
            desc0, desc1 = (self_layer(desc0, desc0, pe0, pe0, valid0),
                            self_layer(desc1, desc1, pe1, pe1, valid1))
            desc0, desc1 = (cross_layer(desc0, desc1, None, None, valid1),
                            cross_layer(desc1, desc0, None, None, valid0))
        return TransformerOutput(desc0, desc1, len(self.self_layers), kept0, kept1)


def _all_valid(desc: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(desc.shape[:2], dtype=torch.bool, device=desc.device) if valid is None else valid.bool()


def cross_attention(block: nn.Module, x0: torch.Tensor,
                    x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """kornia's LightGlue ``CrossBlock`` (bidirectional cross-attention with a shared query/key map)
    with each direction through ``scaled_dot_product_attention``: torch's fused kernel, also on the
    CPU, where kornia builds the (heads, N0, N1) similarity and both softmaxes explicitly and keeps
    them for the backward pass. Same values to float rounding; about 2x faster on the CPU at 2048
    keypoints (one layer, 1 thread: 0.25 -> 0.12 s), and training the transformer keeps no (N0, N1)
    matrices.

    Args:
        block: a ``kornia.feature.lightglue.CrossBlock``; x0 (B, N0, d), x1 (B, N1, d).
    Returns:
        the updated ``(x0, x1)``, shapes unchanged.
    """
    qk0, qk1 = block.to_qk(x0), block.to_qk(x1)
    v0, v1 = block.to_v(x0), block.to_v(x1)
    qk0, qk1, v0, v1 = (t.unflatten(-1, (block.heads, -1)).transpose(1, 2) for t in (qk0, qk1, v0, v1))
    m0 = F.scaled_dot_product_attention(qk0, qk1, v1, scale=block.scale)
    m1 = F.scaled_dot_product_attention(qk1, qk0, v0, scale=block.scale)
    m0, m1 = (block.to_out(m.transpose(1, 2).flatten(start_dim=-2)) for m in (m0, m1))
    return x0 + block.ffn(torch.cat([x0, m0], -1)), x1 + block.ffn(torch.cat([x1, m1], -1))


class LightGlueTransformer(nn.Module):
    """``n_layers`` of LightGlue's layer (kornia's ``TransformerLayer``: self-attention with rotary
    position encodings, then bidirectional cross-attention), so LightGlue's weights load into it
    (``layers.i`` = LightGlue's ``transformers.i``). ``attention.mode=lightglue``.

    LightGlue's adaptive computation, in eval mode, from LightGlue's weights (a frozen transformer,
    S2LD ``freeze``, stays in eval mode, so training sees what inference runs):

    - ``exits`` (depth): after layer i each keypoint's confidence (``confidence.i``: sigmoid of a
      linear map of its descriptor) is compared with ``0.8 + 0.1 exp(-4 i / n_layers)``; the pass
      stops when the share of confident keypoints of every pair exceeds ``depth_confidence`` (pruned
      keypoints count as confident), and the coarse matcher uses the assignment head of that layer.
    - ``pruning`` (width): after layer i < n_layers - 1 a keypoint whose matchability
      (``matchability.i``) is at most ``1 - width_confidence`` and whose confidence is above that
      threshold leaves the later layers and cannot be matched.
    """

    default_conf = KeypointTransformer.default_conf

    def __init__(self, d_model: int, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        from kornia.feature.lightglue import TransformerLayer

        self.conf = conf = merge_conf(self.default_conf, conf)
        n, heads = int(conf["n_layers"]), int(conf["n_heads"])
        if d_model % heads:
            raise InputError(f"d_model={d_model} is not divisible by attention.n_heads={heads}")
        # flash=True only selects torch's fused kernel on CUDA (flash=False would switch it off process-wide)
        self.layers = nn.ModuleList([TransformerLayer(d_model, heads, True) for _ in range(n)])
        self.depth_confidence = float(conf["depth_confidence"])
        self.width_confidence = float(conf["width_confidence"])
        if self.depth_confidence > 0 and not conf["exits"]:
            raise InputError("attention.depth_confidence > 0 needs attention.exits=true")
        if self.width_confidence > 0 and not conf["pruning"]:
            raise InputError("attention.width_confidence > 0 needs attention.pruning=true")
        heads_ = [nn.Sequential(nn.Linear(d_model, 1), nn.Sigmoid()) for _ in range(n - 1)]
        self.confidence = nn.ModuleList(heads_ if conf["exits"] or conf["pruning"] else [])
        self.matchability = nn.ModuleList([nn.Linear(d_model, 1) for _ in range(n - 1)]
                                          if conf["pruning"] else [])

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, pe0: torch.Tensor, pe1: torch.Tensor,
                valid0: torch.Tensor | None = None, valid1: torch.Tensor | None = None) -> TransformerOutput:
        """Args:
            desc0 (B, N0, d), desc1 (B, N1, d); pe0, pe1 rotary encodings (2, B, 1, N, d / heads)
            (:class:`~.keypoints.KeypointDescriptor` with ``positional="rotary"``); valid0 (B, N0),
            valid1 (B, N1) bool (padded keypoints neither attend nor are attended to).
        Returns:
            :class:`TransformerOutput`.
        """
        adaptive = self.depth_confidence > 0 and not self.training
        prune = self.width_confidence > 0 and not self.training
        b = desc0.shape[0]
        kept0, kept1 = _all_valid(desc0, valid0), _all_valid(desc1, valid1)
        whole = bool(kept0.all()) and bool(kept1.all()) and not (prune and b > 1)
        if whole:
            parts = [(slice(None), torch.arange(desc0.shape[1], device=desc0.device),
                      torch.arange(desc1.shape[1], device=desc1.device))]
        else:
            # Padded keypoints or pruning: each pair runs alone on its own keypoints (no attention
            # mask: on the CPU a masked attention takes a slower kernel than this loop).
            parts = [(slice(i, i + 1), kept0[i].nonzero()[:, 0], kept1[i].nonzero()[:, 0]) for i in range(b)]
            parts = [p for p in parts if p[1].numel() and p[2].numel()]  # a pair with nothing to match
        # per pair: descriptors, encodings and the keypoint indices they stand for
        state = [[desc0[s, i0], desc1[s, i1], pe0[:, s, :, i0], pe1[:, s, :, i1], i0, i1]
                 for s, i0, i1 in parts]
        totals = [i0.numel() + i1.numel() for _, i0, i1 in parts]  # keypoints of each pair
        out0, out1 = desc0.clone(), desc1.clone()
        depth = len(self.layers)
        for i, layer in enumerate(self.layers):
            for st in state:
                d0, d1 = layer.self_attn(st[0], st[2]), layer.self_attn(st[1], st[3])
                st[0], st[1] = cross_attention(layer.cross_attn, d0, d1)
            if i == depth - 1 or not (adaptive or prune):
                continue
            confs = [(self.confidence[i](st[0].detach())[..., 0], self.confidence[i](st[1].detach())[..., 0])
                     for st in state]
            # one depth for the batch: it stops when every pair is confident
            if adaptive and all(self._confident(c0, c1, i, n) for (c0, c1), n in zip(confs, totals)):
                depth = i + 1
                break
            if prune:
                for (s, _, _), st, (c0, c1) in zip(parts, state, confs):
                    for side, conf, out in ((0, c0, out0), (1, c1, out1)):
                        keep = self._keep(st[side], conf, i)[0]
                        if bool(keep.all()):
                            continue
                        out[s, st[4 + side][~keep]] = st[side][:, ~keep]  # the pruned keep this layer's
                        st[side], st[4 + side] = st[side][:, keep], st[4 + side][keep]
                        st[2 + side] = st[2 + side][..., keep, :]
        kept0, kept1 = torch.zeros_like(kept0), torch.zeros_like(kept1)
        for (s, _, _), (d0, d1, _, _, i0, i1) in zip(parts, state):
            out0[s, i0], out1[s, i1] = d0, d1
            kept0[s, i0], kept1[s, i1] = True, True
        return TransformerOutput(out0, out1, depth, kept0, kept1)

    def _threshold(self, layer: int) -> float:
        return min(max(0.8 + 0.1 * math.exp(-4.0 * layer / len(self.layers)), 0.0), 1.0)

    def _confident(self, conf0: torch.Tensor, conf1: torch.Tensor, layer: int, total: int) -> bool:
        """Whether every pair (token confidences (B, n0), (B, n1) of the keypoints still running, out
        of ``total`` a pair) has more than ``depth_confidence`` of its keypoints confident after
        ``layer``."""
        threshold = self._threshold(layer)
        unconfident = (conf0 < threshold).sum(dim=1) + (conf1 < threshold).sum(dim=1)
        return bool((1.0 - unconfident.float() / max(total, 1) > self.depth_confidence).all())

    def _keep(self, desc: torch.Tensor, conf: torch.Tensor, layer: int) -> torch.Tensor:
        """(1, n) bool: the keypoints that run on after ``layer`` (matchable or not yet confident)."""
        matchable = torch.sigmoid(self.matchability[layer](desc.detach()))[..., 0]
        return (matchable > 1.0 - self.width_confidence) | (conf <= self._threshold(layer))


def build_transformer(d_model: int, conf: dict[str, Any] | None) -> nn.Module:
    """The keypoint transformer for ``conf["mode"]`` (:data:`TRANSFORMER_MODES`)."""
    conf = merge_conf(KeypointTransformer.default_conf, conf)
    mode = conf["mode"]
    if mode not in TRANSFORMER_MODES:
        raise InputError(f"attention.mode: expected one of {', '.join(TRANSFORMER_MODES)}, got {mode!r}")
    return LightGlueTransformer(d_model, conf) if mode == "lightglue" else KeypointTransformer(d_model, conf)
