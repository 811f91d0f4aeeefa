"""Training-throughput benchmark of S2LD: pairs/s of a full optimizer step, ``tiny`` vs ``base``.

One step = ``batch_inputs`` + forward + supervised loss + backward + gradient clipping + AdamW
step, exactly what :class:`imatch_s2ld.train.Trainer` does per micro-batch (without DDP). Batches
are MegaDepth-layout training pairs of generated synthetic scenes, loaded once beforehand, so
data loading is excluded (its rate is printed separately: one loader process, pairs/s). Each
config runs ``--warmup`` untimed steps, then ``--steps`` timed ones; both configs see the same
batches. Prints pairs/s per config and the ratio base/tiny (the baseline measured in the same
run).

Usage::

    python benchmarks/bench_train.py [--resize 320] [--batch 2] [--steps 6] [--warmup 2]
        [--threads 2] [--configs tiny,base] [--mixed-precision no|bf16] [--data DIR]

``--data`` reuses a generated folder (default: a temporary one, rendered at 640x480).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from imatch_s2ld.data.megadepth_train import build_megadepth_dataset
from imatch_s2ld.models import S2LD


def load_batches(data: Path, resize: int, batch: int, count: int) -> tuple[list[dict], float]:
    """``count`` collated batches (cycling over the pairs) and the loading rate in pairs/s."""
    ds = build_megadepth_dataset(data / "scene_info", data, {"img_resize": resize, "min_overlap": 0.1})
    t0 = time.perf_counter()
    items = [ds[k % len(ds)] for k in range(batch * count)]
    rate = len(items) / (time.perf_counter() - t0)
    return [default_collate(items[k * batch:(k + 1) * batch]) for k in range(count)], rate


def bench(config: str, batches: list[dict], warmup: int, precision: str) -> tuple[float, float]:
    """(pairs/s over the timed steps, seconds per step) of one named config."""
    torch.manual_seed(0)
    model = S2LD.from_config(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    timed = 0.0
    for k, batch in enumerate(batches):
        t0 = time.perf_counter()
        with autocast:
            pred = model(**model.batch_inputs(batch))
        losses = model.loss(pred, batch)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if k >= warmup:
            timed += time.perf_counter() - t0
    steps = len(batches) - warmup
    pairs = sum(len(b["image0"]) for b in batches[warmup:])
    return pairs / timed, timed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resize", type=int, default=320, help="training img_resize (longer side)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per config")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default="tiny,base")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16"))
    parser.add_argument("--data", default=None, help="generated dataset folder (default: render one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "syn"
        if not args.data:
            from imatch_s2ld.synthetic import generate

            generate("default", data, seed=0, progress=False, views=8, video_frames=0)
        batches, load_rate = load_batches(data, args.resize, args.batch, args.warmup + args.steps)
    h, w = batches[0]["image0"].shape[-2:]
    print(f"training step (fwd+loss+bwd+clip+AdamW) at {w}x{h} (img_resize {args.resize}), batch "
          f"{args.batch}, {args.threads} thread(s), precision {args.mixed_precision}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    print(f"  data loading (1 process, excluded): {load_rate:6.1f} pairs/s")
    rates = {}
    for config in args.configs.split(","):
        rate, per_step = bench(config, batches, args.warmup, args.mixed_precision)
        params = sum(p.numel() for p in S2LD.from_config(config).parameters()) / 1e6
        rates[config] = rate
        print(f"  {config:5s} {params:6.2f} M params  {rate:7.2f} pairs/s  {per_step:6.2f} s/step")
    if "tiny" in rates and "base" in rates:
        print(f"base/tiny throughput ratio: {rates['base'] / rates['tiny']:.3f} "
              f"(tiny is {rates['tiny'] / rates['base']:.1f}x faster)")


if __name__ == "__main__":
    main()
