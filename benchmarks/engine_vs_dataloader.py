"""Engine vs DataLoader: images/s of `unlearnable.train.fit` against a conventional PyTorch loop.

Both sides train the same seeded model with the same SGD optimizer (momentum 0.9, weight decay
5e-4, lr 0.1, batch 128) for the same number of optimizer steps on the same images, with the same
augmentation (random crop with zero padding, horizontal flip):

(a) engine      `unlearnable.train.fit`: the whole dataset as one uint8 tensor on the device,
                batches sliced from a seeded permutation, crop and flip applied to the batch at
                once (one gather, one `where`);
(b) dataloader  what the paper's released code does: a `torch.utils.data.Dataset` whose
                `__getitem__` turns one image into a PIL image and runs torchvision's
                `RandomCrop(padding)`, `RandomHorizontalFlip()` and `ToTensor()` on it (`pil`,
                written out call for call), or the same steps on one tensor (`torch`), a
                `DataLoader(batch_size, shuffle=True, num_workers=W)`, and the usual
                `for x, y in loader:` loop. Timed with W = 2 (the cores we have) and W = 0.

Run (CPU; the target is >= 2x on 2 cores):

    .venv/bin/python benchmarks/engine_vs_dataloader.py --steps 40 --repeats 2 --compute-only [--threads 1]

GPU (ResNet-18 on CIFAR-shaped random data, 3x32x32 x 50,000; target >= 5x):

    .venv/bin/python benchmarks/engine_vs_dataloader.py --device cuda --arch resnet18 \
        --data random --steps 1000 --workers 2,4,8

On CUDA the engine uses bf16 autocast and channels_last; the conventional loop uses fp32 NCHW as
the released code does, unless `--same-precision` gives it the engine's autocast and layout too
(which isolates the data pipeline). The time of each side includes everything a training epoch
pays for: DataLoader worker start-up, host-to-device copies, augmentation, forward, backward,
step. The first few steps of each side are run once untimed to warm up kernels and allocators.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from unlearnable.data import load_data
from unlearnable.models import build_model
from unlearnable.train import RECIPES, fit
from unlearnable.train.loop import crop_padding_for


class PerSampleDataset(torch.utils.data.Dataset):
    """One image at a time, as torchvision's `ToTensor, RandomCrop(padding), RandomHorizontalFlip`
    pipeline does, written in plain torch (no PIL) so only the per-sample structure differs."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray, padding: int, flip: bool = True):
        self.images, self.labels, self.padding, self.flip = images_nhwc, labels, padding, flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255)  # ToTensor
        c, h, w = x.shape
        p = self.padding
        if p:
            xp = F.pad(x, (p, p, p, p))
            top = int(torch.randint(0, 2 * p + 1, (1,)))
            left = int(torch.randint(0, 2 * p + 1, (1,)))
            x = xp[:, top:top + h, left:left + w]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(2)
        return x.contiguous(), int(self.labels[i])


class PilDataset(torch.utils.data.Dataset):
    """What torchvision's `FashionMNIST`/`CIFAR10` datasets with
    `Compose([RandomCrop(size, padding), RandomHorizontalFlip(), ToTensor()])` do per sample, call
    for call (torchvision has no CPU wheel here, so its PIL path is written out): the array becomes
    a PIL image, `ImageOps.expand` pads it, `torch.randint` draws the corner, `Image.crop`,
    `torch.rand(1) < 0.5` then `Image.transpose`, and ToTensor's copy/view/permute/div."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray, padding: int, flip: bool = True):
        from PIL import Image
        self.Image = Image
        self.images, self.labels, self.padding, self.flip = images_nhwc, labels, padding, flip
        self.mode = "L" if images_nhwc.shape[3] == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import ImageOps
        a = self.images[i]
        img = self.Image.fromarray(a[:, :, 0] if self.mode == "L" else a, mode=self.mode)
        w, h = img.size
        if self.padding:
            img = ImageOps.expand(img, border=self.padding, fill=0)
            top = torch.randint(0, 2 * self.padding + 1, size=(1,)).item()
            left = torch.randint(0, 2 * self.padding + 1, size=(1,)).item()
            img = img.crop((left, top, left + w, top + h))
        if self.flip and torch.rand(1) < 0.5:
            img = img.transpose(self.Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(h, w, len(img.getbands()))
        x = x.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
        return x, int(self.labels[i])


PIPELINES = {"torch": PerSampleDataset, "pil": PilDataset}


def conventional_train(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, steps: int,
                       batch_size: int, workers: int, device: torch.device, same_precision: bool,
                       padding: int, seed: int, pipeline: str = "pil") -> float:
    """Train for `steps` optimizer steps the DataLoader way; returns seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ds = PIPELINES[pipeline](images, labels, padding)
    gen = torch.Generator().manual_seed(seed)
    cuda = device.type == "cuda"
    model.to(device).train()
    if cuda and same_precision:
        model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    done = 0
    while done < steps:  # a new iterator per epoch: worker start-up is part of what an epoch costs
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                             num_workers=workers, pin_memory=cuda, generator=gen,
                                             drop_last=True)
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if cuda and same_precision:
                xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(xb), yb)
            else:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def engine_train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int,
                 device: torch.device, seed: int) -> float:
    """Train for `steps` optimizer steps with `fit` (one epoch over steps*batch_size images)."""
    recipe = RECIPES["paper"].replace(epochs=1, batch_size=batch_size, schedule="constant")
    n = steps * batch_size
    t0 = time.perf_counter()
    fit(model, (x[:n], y[:n]), None, recipe, seed=seed, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def compute_only(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int,
                 device: torch.device) -> float:
    """Forward, backward and step on batches already on the device, with no augmentation: the
    floor that no data pipeline can beat (seconds)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.to(device).train()
    xb = x[:batch_size].to(device).float().div_(255)
    yb = y[:batch_size].to(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def get_data(name: str, n: int, data_root: str | None, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    if name == "random":
        rng = np.random.default_rng(seed)
        return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                rng.integers(0, 10, n).astype(np.int64), 10)
    ds = load_data(name, "train", data_root)
    return ds.images, ds.labels, ds.num_classes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per side (default 60)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--arch", default="convnet")
    ap.add_argument("--data", default="fashion-mnist",
                    help="a dataset name, or 'random' (CIFAR-shaped 3x32x32 x 50,000 random images)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="2,0", help="DataLoader num_workers values to time (default 2,0)")
    ap.add_argument("--pipelines", default="pil,torch",
                    help="per-sample pipelines to time: pil (torchvision's PIL transforms, as the "
                         "released code), torch (the same steps on tensors) (default pil,torch)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per side first (default 5)")
    ap.add_argument("--same-precision", action="store_true",
                    help="CUDA: give the DataLoader loop the engine's bf16 autocast and channels_last")
    ap.add_argument("--compute-only", action="store_true",
                    help="also time forward/backward/step on one fixed batch: the ceiling of any data pipeline")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best is reported (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but CUDA is not available", file=sys.stderr)
        return 2
    images, labels, k = get_data(args.data, 50_000, args.data_root, args.seed)
    need = args.steps * args.batch_size
    if need > len(images):
        print(f"--steps {args.steps} x --batch-size {args.batch_size} needs {need} images; "
              f"{args.data} has {len(images)}", file=sys.stderr)
        return 2
    # The same images for both sides: a seeded random subset of exactly steps*batch images.
    idx = np.sort(np.random.default_rng(args.seed).permutation(len(images))[:args.steps * args.batch_size])
    images, labels = np.ascontiguousarray(images[idx]), labels[idx]
    n, h, w, c = images.shape
    padding = crop_padding_for(4, w)

    def new_model() -> torch.nn.Module:
        torch.manual_seed(args.seed)
        return build_model(args.arch, k, c, (h, w))

    workers = [int(v) for v in args.workers.split(",") if v != ""]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print("# Engine vs DataLoader")
    print(f"device: {device} ({dev_name}); cpu cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; "
          f"torch {torch.__version__}; python {platform.python_version()}")
    print(f"model: {args.arch}; data: {args.data} {n}x{c}x{h}x{w}; steps: {args.steps}; batch: {args.batch_size}; "
          f"augmentation: crop (padding {padding}) + flip; optimizer: SGD 0.9, wd 5e-4, lr 0.1")

    x_u8 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_t = torch.from_numpy(labels)
    # Warm-up (untimed): kernels, allocator and, on CUDA, cuDNN autotuning for both sides.
    if args.warmup:
        engine_train(new_model(), x_u8, y_t, args.warmup, args.batch_size, device, args.seed)
        conventional_train(new_model(), images, labels, args.warmup, args.batch_size, 0, device,
                           args.same_precision, padding, args.seed)

    imgs = args.steps * args.batch_size
    runs = {"engine (fit)": lambda: engine_train(new_model(), x_u8, y_t, args.steps, args.batch_size,
                                                   device, args.seed)}
    if args.compute_only:
        runs["compute only (no data)"] = lambda: compute_only(new_model(), x_u8, y_t, args.steps,
                                                              args.batch_size, device)
    for pl in [p for p in args.pipelines.split(",") if p]:
        if pl not in PIPELINES:
            print(f"unknown pipeline {pl!r} (known: {', '.join(PIPELINES)})", file=sys.stderr)
            return 2
        for wk in workers:
            runs[f"dataloader {pl} (workers={wk})"] = (
                lambda wk=wk, pl=pl: conventional_train(new_model(), images, labels, args.steps,
                                                        args.batch_size, wk, device, args.same_precision,
                                                        padding, args.seed, pl))
    # Interleaved repeats, best of each: on a shared machine the minimum is the least disturbed run.
    best: dict[str, tuple[float, float]] = {}
    for r in range(args.repeats):
        for name, fn in runs.items():
            wall, cpu = measure(fn)
            print(f"  repeat {r + 1}: {name:<28} {wall:8.2f} s wall  {cpu:8.2f} s cpu", flush=True)
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], wall), min(old[1], cpu))
    ew, ec = best["engine (fit)"]
    print(f"\n{'best of ' + str(args.repeats):<28} {'images/s':>10} {'images/cpu-s':>13} "
          f"{'engine speed-up (wall)':>23} {'(cpu)':>7}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<28} {imgs / wall:10.0f} {imgs / cpu:13.0f} {wall / ew:22.2f}x {cpu / ec:6.2f}x")
    return 0


def measure(fn) -> tuple[float, float]:
    """(wall seconds as `fn` reports them, CPU seconds of this process and its reaped children,
    i.e. DataLoader workers). CPU time is what a loaded machine cannot inflate much."""
    c0 = time.process_time()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = fn()
    gc.collect()  # drop any DataLoader iterator so its workers are joined and counted
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, time.process_time() - c0 + children

if __name__ == "__main__":
    sys.exit(main())
