"""The self-supervised fine-tuning loss of a window (iMatching with S2LD).

Given a window whose bundle adjustment succeeded (poses ``T*`` and landmarks ``p*``, treated as fixed at
the BA optimum), every pair ``(a, b)`` of the window is matched again **with** gradient:

- **Reprojection term.** For each match ``(i, j)`` whose two keypoints are inlier observations of the
  same BA track, the match is appended to the network's matches (``extra_matches``) so that S2LD refines
  it: its keypoint in frame ``a`` (detected position, with the keypoint head's sub-cell offset) and its
  local-dense prediction in frame ``b`` are pulled towards the projections ``pi(T*_a p*)`` and
  ``pi(T*_b p*)``. Residuals are divided by the image's longer side (image-size invariant) and pass
  through a Cauchy kernel of width ``reprojection_scale_px`` (robust to BA outliers), weighted by the
  BA observation weight. With ``ba_grad: implicit`` (``--ba-grad implicit``; needs
  ``reprojection_weight > 0`` and theseus-ai) both predictions are instead observations of their landmark
  in a Theseus re-solve of the window's BA (from ``T*``, ``p*``), compared with the landmark's re-solved
  projections and differentiated through the solution too (:mod:`imatch_s2ld.finetune.implicit`).
- **Matching term.** The matching probabilities (``scores``) get pseudo-labels from the BA
  geometry: track matches and predicted matches within ``epipolar_pos_px`` (Sampson distance with
  the BA relative pose) are positives, predicted matches beyond ``epipolar_neg_px`` negatives
  (focal loss, as in pretraining). This is what teaches the coarse matcher to drop matches the
  window's geometry rejects and to find the ones its tracks imply.
- **Triangulation term.** The network's own predicted matches of the pair go through the same
  :class:`imatch_s2ld.losses.TriangulationRegularizer` as pretraining, supervised by the BA relative
  pose ``T*_b T*_a^-1`` (no depth: the reprojection form is scale-free).
- **Track term** (``track_weight``). A keypoint of frame ``a`` predicted in two or more later frames is
  a track of the matcher's output; it is triangulated from all its observations with the BA poses
  (:meth:`TriangulationRegularizer.tracks`) and penalised for its reprojection error, which two views
  alone cannot see along the epipolar line.

Each term is a small object in :mod:`.terms` (one file each, registered in :data:`.terms.TERMS`): it
declares its options and weight (merged flat into ``model.loss``), the metrics it logs and whether it
needs S2LD's tracks from a no-gradient pass; this module matches the pairs and sums the weighted terms.

The network runs in eval mode (BatchNorm statistics frozen: a window is a tiny, correlated batch);
gradients still flow. In eval mode S2LD's keypoints of a frame do not depend on its partner, so the
keypoint indices of the (no-gradient) matching pass stay valid here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..conf import merge_conf
from ..models.s2ld import S2LD
from ..models.s2ld_loss import LossOutput
from .targets import WindowTargets, sampson_px, track_matches
from .terms import TERMS, LossTerm, Pair, Window
from .window import WindowMatches, encode_frames

__all__ = ["DEFAULT_CONF", "TERM_KEYS", "FinetuneLoss"]

#: Defaults chosen by measurement (docs/finetuning.md): on short-baseline windows the landmark depths
#: (hence the reprojection targets of predictions) are noisier than S2LD's own predictions, and the
#: matching pseudo-labels shift the shared backbone away from the fine stage; the depth-free epipolar
#: (triangulation) term on every local-dense level is the one that improves the matcher. The keypoint
#: reprojection term trains the keypoint head, which the default ``model.trainable`` holds fixed, so its
#: default weight is 0. Each term's options: :mod:`.terms`.
DEFAULT_CONF: dict[str, Any] = {k: v for term in TERMS.values() for k, v in term.default_conf.items()}

#: the detached ``terms`` of :meth:`FinetuneLoss.__call__` (a skipped window reports them as NaN)
TERM_KEYS = (*TERMS, *(m for term in TERMS.values() for m in term.metrics), "num_pairs", "num_matches")


class FinetuneLoss:
    """Callable ``(model, images, K, matches, targets) -> LossOutput`` (see the module docstring).

    Raises (at construction):
        InputError: an unknown option or a bad value (one line naming ``model.loss.<key>``).
    """

    def __init__(self, conf: Mapping[str, Any] | None = None) -> None:
        self.conf = merge_conf(DEFAULT_CONF, conf)
        self.terms: dict[str, LossTerm] = {name: cls(self.conf) for name, cls in TERMS.items()}

    @property
    def needs_tracks(self) -> bool:
        """Whether a term needs S2LD's tracks from a no-gradient matching pass before the step."""
        return any(term.active and term.needs_tracks() for term in self.terms.values())

    def __call__(self, model: S2LD, images: Tensor, K: Tensor, matches: WindowMatches,
                 targets: WindowTargets) -> LossOutput:
        """Args:
            model: the S2LD being fine-tuned (its mode is restored afterwards).
            images: ``(N, C, H, W)`` window frames in [0, 1] (RGB or gray); K: ``(N, 3, 3)`` or ``(3, 3)``.
            matches: the window's (no-gradient) matches; targets: its BA targets.
        Returns:
            ``total`` (0-d) and detached ``terms`` (:data:`TERM_KEYS`): each term's value and metrics
            (``reproj_px``: mean target distance in pixels, ``num_targets``, ``num_output_tracks``,
            ``pseudo_positives``, ``pseudo_negatives``), ``num_pairs`` and ``num_matches`` (predicted
            matches of the pairs, tracked ones excluded).
        """
        dev = images.device
        H, W = images.shape[-2:]
        Kn = K.to(dev).float().expand(images.shape[0], 3, 3)
        targets = targets.to(dev)  # once, not per pair
        window = Window(images, Kn, targets, (int(W), int(H)), float(max(H, W)))
        active = [t for t in self.terms.values() if t.active]
        for term in active:
            term.start(window)
        gate = self.conf["triangulation_gate_px"]
        n_pairs = n_pred = 0
        was_training = model.training
        model.eval()
        try:
            registered = targets.registered.tolist()
            used = [(pm.i, pm.j) for pm in matches.pairs if registered[pm.i] and registered[pm.j]]
            encodings = encode_frames(model, images, used)  # each frame once (eval mode)
            for a, b in used:
                # every pair of keypoints of the same landmark (transitive)
                i, j = track_matches(targets.track[a], targets.track[b])
                extra = (torch.zeros_like(i), i, j) if len(i) else None
                out = model.match_encoded(encodings[a], encodings[b], extra_matches=extra)
                ex = out.matches_extra
                T_ab = targets.T_cw[b] @ torch.linalg.inv(targets.T_cw[a])
                Ka, Kb = window.K[a], window.K[b]
                pred = ~ex
                if gate is not None and bool(pred.any()):  # matches off the BA epipolar geometry
                    pred = pred & (sampson_px(out.mkpts0, out.mkpts1, T_ab, Ka, Kb) <= float(gate))
                pair = Pair(a, b, out, ex, i, j, pred, T_ab, Ka, Kb)
                for term in active:
                    term.add_pair(window, pair)
                n_pairs += 1
                n_pred += int((~ex).sum())
        finally:
            model.train(was_training)
        new = images.new_tensor
        total = images.new_zeros(())
        terms: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            if term.active:
                loss, metrics = term.finish(window)
                total = total + term.weight * loss
            else:
                loss, metrics = images.new_zeros(()), {m: images.new_zeros(()) for m in term.metrics}
            terms[name] = loss.detach()
            terms.update({k: v.detach() for k, v in metrics.items()})
        terms.update(num_pairs=new(float(n_pairs)), num_matches=new(float(n_pred)))
        return LossOutput(total.float(), terms)
