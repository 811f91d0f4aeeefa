"""Matching losses: focal loss on the coarse score matrix, inverse-variance fine loss,
keypoint repeatability/localisation. All computed in float32 and safe under autocast."""

from __future__ import annotations

import torch
from torch import Tensor


def focal_loss(
    scores: Tensor, target: Tensor, valid: Tensor | None = None, alpha: float = 0.25, gamma: float = 2.0,
    pos_weight: float = 1.0, neg_weight: float = 1.0,
) -> Tensor:
    """Focal loss on a matching probability matrix.

    Args:
        scores: ``(B, N0, N1)`` probabilities in [0, 1] (e.g. dual softmax).
        target: ``(B, N0, N1)`` bool ground-truth matches.
        valid: ``(B, N0, N1)`` bool entries to use (default all).
        alpha, gamma: focal parameters; pos_weight, neg_weight: class weights.
    Returns:
        Scalar: mean focal loss over positives plus mean over negatives (0 for an empty class).
    """
    if scores.shape != target.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and target {tuple(target.shape)} differ")
    p = scores.float().clamp(1e-6, 1 - 1e-6)
    target = target.bool()
    valid = torch.ones_like(target) if valid is None else valid.bool()
    pos, neg = target & valid, ~target & valid
    loss_pos = -alpha * (1 - p) ** gamma * p.log()
    loss_neg = -(1 - alpha) * p**gamma * (1 - p).log()
    zero = p.sum() * 0.0  # keeps the graph when a class is empty
    lp = loss_pos[pos].mean() if pos.any() else zero
    ln = loss_neg[neg].mean() if neg.any() else zero
    return pos_weight * lp + neg_weight * ln


def fine_loss(expectation: Tensor, std: Tensor, target: Tensor, valid: Tensor | None = None,
              max_error_px: float | None = None) -> Tensor:
    """L2 between predicted and ground-truth locations, weighted by the inverse predicted variance.

    The weights ``1 / std^2`` are detached and normalised to mean 1 (as in LoFTR's fine loss), so
    confident predictions count more while the std itself is trained by :func:`uncertainty_nll`.

    Args:
        expectation: ``(M, 2)`` predicted pixels; std: ``(M,)`` predicted std in pixels.
        target: ``(M, 2)`` ground-truth pixels; valid: ``(M,)`` bool.
        max_error_px: ignore targets farther than this from the prediction (outside the window).
    Returns:
        Scalar loss in squared pixels (0 when nothing is valid).
    """
    expectation, std, target = expectation.float(), std.float(), target.float()
    valid = torch.ones(expectation.shape[0], dtype=torch.bool, device=expectation.device) \
        if valid is None else valid.bool()
    err2 = ((expectation - target) ** 2).sum(-1)
    if max_error_px is not None:
        valid = valid & (err2.detach() < max_error_px**2)
    valid = valid & torch.isfinite(err2)
    if not valid.any():
        return expectation.sum() * 0.0
    w = 1.0 / std[valid].detach().clamp_min(1e-3) ** 2
    w = w / w.mean()
    return (w * err2[valid]).mean()


def bilinear_cell_targets(offset: Tensor, size: int) -> Tensor:
    """Spread sub-cell target positions over the four nearest cells of a ``size x size`` window.

    Args:
        offset: ``(M, 2)`` target ``(x, y)`` in cell units from the window's top-left cell centre
            (``0 .. size - 1`` inside the window).
        size: cells per side.
    Returns:
        ``(M, size * size)`` row-major target distribution: bilinear weights of the four cells around
        each target (cells outside the window get none; a target inside sums to 1).
    """
    if offset.ndim != 2 or offset.shape[-1] != 2:
        raise ValueError(f"offset must be (M, 2), got {tuple(offset.shape)}")
    offset = offset.float()
    base = offset.floor()
    frac = offset - base
    target = offset.new_zeros(offset.shape[0], size * size)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = base[:, 0] + dx, base[:, 1] + dy
            w = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            cell = (y.clamp(0, size - 1) * size + x.clamp(0, size - 1)).long()
            target.scatter_add_(1, cell[:, None], (w * inside)[:, None])
    return target


def window_classification_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """S2DNet's correspondence-map loss: cross-entropy of the window's softmax against the target
    distribution (:func:`bilinear_cell_targets`), i.e. classification of the cell the match falls in.

    Args:
        logits: ``(M, K)`` window logits (before the softmax); target: ``(M, K)`` distributions.
        valid: ``(M,)`` bool, the matches whose target lies inside the window.
    Returns:
        Scalar mean cross-entropy in nats (0 when nothing is valid); its minimum over the logits is the
        target's entropy, reached when the softmax equals the target.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    valid = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device) if valid is None else valid
    valid = valid.bool() & (target.sum(-1) > 0.5)
    if not valid.any():
        return logits.sum() * 0.0
    logp = logits.float()[valid].log_softmax(dim=-1)
    return -(target[valid] * logp).sum(-1).mean()


def uncertainty_nll(expectation: Tensor, std: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Gaussian negative log-likelihood that calibrates the predicted std (prediction detached).

    Args: as :func:`fine_loss`. Returns a scalar (0 when nothing is valid).
    """
    expectation, std, target = expectation.float().detach(), std.float(), target.float()
    valid = torch.ones(expectation.shape[0], dtype=torch.bool, device=expectation.device) \
        if valid is None else valid.bool()
    err2 = ((expectation - target) ** 2).sum(-1)
    valid = valid & torch.isfinite(err2)
    if not valid.any():
        return std.sum() * 0.0
    var = std[valid].clamp_min(1e-3) ** 2
    return (err2[valid] / (2 * var) + var.log()).mean()


def keypoint_loss(
    logits0: Tensor, logits1: Tensor, kpts0: Tensor, kpts1: Tensor, matrix: Tensor, warped0: Tensor,
    warped1: Tensor, valid0: Tensor, valid1: Tensor, kpts_valid0: Tensor | None = None,
    kpts_valid1: Tensor | None = None, loc_weight: float = 1.0, radius_px: float = 8.0,
) -> tuple[Tensor, Tensor]:
    """Repeatability and localisation terms for the keypoint head.

    Repeatability: binary cross-entropy on the detection logits, positive where the keypoint has a
    ground-truth partner (``matrix`` row/column non-empty), negative where its warp is valid but
    it has none (keypoints without valid depth are ignored). Localisation: for every ground-truth
    pair (i, j) the distance between keypoint j and the warp of keypoint i (and symmetrically),
    so the sub-cell offsets move detections of both views onto the same 3D points. Warps carry
    gradient only through the keypoint being moved.

    Args:
        logits0: ``(B, N0)``, logits1: ``(B, N1)`` detection logits.
        kpts0: ``(B, N0, 2)``, kpts1: ``(B, N1, 2)`` keypoints with gradient.
        matrix: ``(B, N0, N1)`` bool ground-truth pairs; warped0 ``(B, N0, 2)`` / warped1
            ``(B, N1, 2)`` the (detached) warps; valid0/valid1 their validity.
        radius_px: localisation errors are clamped here (robustness to wrong pairs).
    Returns:
        ``(repeatability, localisation)`` scalars.
    """
    has0, has1 = matrix.any(2), matrix.any(1)
    kv0 = torch.ones_like(valid0) if kpts_valid0 is None else kpts_valid0
    kv1 = torch.ones_like(valid1) if kpts_valid1 is None else kpts_valid1
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    use0, use1 = valid0 & kv0, valid1 & kv1
    terms = []
    for logits, has, use in ((logits0, has0, use0), (logits1, has1, use1)):
        if use.any():
            terms.append(bce(logits.float()[use], has[use].float()))
    rep = torch.stack(terms).mean() if terms else logits0.float().sum() * 0.0
    b, i, j = matrix.nonzero(as_tuple=True)
    if b.numel() == 0:
        return rep, (kpts0.float().sum() + kpts1.float().sum()) * 0.0
    # Pair (i, j): keypoint j should sit on the warp of i, keypoint i on the warp of j.
    e1 = (kpts1[b, j].float() - warped0[b, i].detach().float()).norm(dim=-1)
    e0 = (kpts0[b, i].float() - warped1[b, j].detach().float()).norm(dim=-1)
    loc = (e0.clamp(max=radius_px) + e1.clamp(max=radius_px)).mean() * 0.5
    return rep, loc_weight * loc
