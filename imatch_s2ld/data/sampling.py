"""Scene-balanced, distributed-aware, resumable sampler over a ``ConcatDataset`` of scenes.

Each epoch draws ``n_samples_per_scene`` indices from every scene (a scene with fewer items is
sampled with replacement: whole random permutations repeated until enough, so every item appears
``floor(n / size)`` or ``ceil(n / size)`` times), shuffles them globally, and gives rank ``r`` the
positions ``r, r + R, r + 2R, ...`` of that list (``R = num_replicas``; the list is padded by
wrapping around, or truncated with ``drop_last``, to a multiple of ``R``, like
``torch.utils.data.DistributedSampler``). The order is a deterministic function of
``(scene sizes, n_samples_per_scene, seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import ConcatDataset, Sampler


class SceneBalancedSampler(Sampler[int]):
    """Draw the same number of samples from every scene each epoch.

    Args:
        scene_sizes: number of items of each scene, in ``ConcatDataset`` order (indices of scene
            ``s`` are ``sum(scene_sizes[:s]) + [0, scene_sizes[s])``). Empty scenes are skipped.
        n_samples_per_scene: draws per scene and epoch.
        seed: base seed (the epoch is mixed in).
        num_replicas, rank: distributed setting; each rank gets a disjoint, equal-length slice.
        shuffle: shuffle the concatenated draws (otherwise scene order is kept).
        drop_last: truncate (instead of pad) the epoch to a multiple of ``num_replicas``.

    Resuming: :meth:`state_dict` stores the epoch and how many samples of it this rank has
    consumed; after :meth:`load_state_dict` the next ``__iter__`` skips them, later epochs are full.
    ``len(sampler)`` is always the full per-rank epoch length.
    """

    def __init__(
        self,
        scene_sizes: Sequence[int],
        n_samples_per_scene: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if n_samples_per_scene < 1:
            raise ValueError(f"n_samples_per_scene must be >= 1, got {n_samples_per_scene}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad distributed setting: rank {rank} of {num_replicas} replicas")
        if any(int(n) < 0 for n in scene_sizes):
            raise ValueError(f"scene sizes must be >= 0, got {list(scene_sizes)}")
        self.scene_sizes = tuple(int(n) for n in scene_sizes)
        if not any(self.scene_sizes):
            raise ValueError("no scene has any item to sample")
        self.n_samples_per_scene = int(n_samples_per_scene)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._skip = 0  # samples of the current epoch already consumed (set by load_state_dict)
        self._yielded = 0  # samples of the current epoch yielded so far by __iter__
        total = self.n_samples_per_scene * sum(1 for n in self.scene_sizes if n > 0)
        if self.drop_last:
            self.num_samples = total // self.num_replicas
        else:
            self.num_samples = -(-total // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    @classmethod
    def from_concat(
        cls, dataset: ConcatDataset, n_samples_per_scene: int, **kwargs: object
    ) -> SceneBalancedSampler:
        """Sampler over a ``ConcatDataset`` whose parts are the scenes (see ``build_megadepth_dataset``)."""
        sizes = [len(d) for d in dataset.datasets]  # type: ignore[arg-type]
        return cls(sizes, n_samples_per_scene, **kwargs)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the draws); resets the resume offset unless it is the resumed epoch."""
        if int(epoch) != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """All ``total_size`` indices of an epoch across ranks (before the per-rank slicing)."""
        epoch = self.epoch if epoch is None else int(epoch)
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        draws: list[torch.Tensor] = []
        offset = 0
        n = self.n_samples_per_scene
        for size in self.scene_sizes:
            if size > 0:
                reps = -(-n // size)
                perms = [torch.randperm(size, generator=g) for _ in range(reps)]
                draws.append(torch.cat(perms)[:n] + offset)
            offset += size
        indices = torch.cat(draws)
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        out = indices.tolist()
        if len(out) < self.total_size:
            pad = self.total_size - len(out)
            out = out + (out * (-(-pad // len(out))))[:pad]
        return out[: self.total_size]

    def rank_indices(self, epoch: int | None = None) -> list[int]:
        """This rank's ``num_samples`` indices of an epoch."""
        return self.epoch_indices(epoch)[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        indices = self.rank_indices()
        start = self._skip
        self._skip = 0
        self._yielded = start
        for idx in indices[start:]:
            self._yielded += 1
            yield idx

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self, num_consumed: int | None = None) -> dict[str, object]:
        """Resume state (a new dict).

        Args:
            num_consumed: samples of the current epoch this rank has actually trained on. A
                ``DataLoader`` prefetches, so pass ``batches_done * batch_size`` for an exact resume;
                by default the number of indices the iterator has yielded so far.
        """
        consumed = self._yielded if num_consumed is None else int(num_consumed)
        return {"epoch": self.epoch, "num_consumed": consumed, **self._setup()}

    def _setup(self) -> dict[str, object]:
        """The sampling setup a saved state must share to be restored."""
        return {
            "seed": self.seed,
            "n_samples_per_scene": self.n_samples_per_scene,
            "scene_sizes": list(self.scene_sizes),
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore :meth:`state_dict`; the sampling setup must match (else ``ValueError``)."""
        expected = self._setup()
        for key, value in expected.items():
            if key not in state:
                raise ValueError(f"sampler state lacks '{key}'")
            got = list(state[key]) if key == "scene_sizes" else state[key]  # type: ignore[call-overload]
            if got != value:
                raise ValueError(f"sampler state has {key}={got!r}, this sampler has {value!r}")
        consumed = int(state["num_consumed"])  # type: ignore[call-overload]
        if not 0 <= consumed <= self.num_samples:
            raise ValueError(f"sampler state num_consumed={consumed} is outside [0, {self.num_samples}]")
        self.epoch = int(state["epoch"])  # type: ignore[call-overload]
        self._skip = consumed
        self._yielded = consumed
