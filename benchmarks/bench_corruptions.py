"""Our batched corruptions against `imagecorruptions`, side by side on the same images.

    python benchmarks/bench_corruptions.py [--n 1000] [--severity 3] [--ref-seconds 1.5]

Images: N smooth synthetic 32x32 RGB images (bicubic upsampling of random 6x6
images, uint8 grid). Ours: `harness.data.corruptions.corrupt` on the whole (N, 3,
32, 32) float batch, constants="imagenet" (the package's severities).
imagecorruptions 1.1.2: `corrupt(image, corruption_name=kind, severity=s)` one
uint8 HxWx3 image at a time as it works, over the same images for up to
`--ref-seconds` per run. Per kind the two alternate for `--rounds` rounds and
each side's best rate counts (robust to other load on the machine). One torch thread (torch.set_num_threads(1));
numpy/OpenCV as configured. glass_blur and fog fail inside imagecorruptions
under NumPy 2 / current scikit-image: ours is printed, they are left out of the
geometric mean. Frost compares like with like: ours blends the same frost
photos as imagecorruptions (installed with it; decoded and resized once per
process, where the package reads and resizes a photo per image); if ours ran
the procedural texture instead, frost is printed but left out of the mean.
Last line: `corruption_speedup=<geometric mean over kinds>`.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.corruptions import CORRUPTIONS, corrupt, frost_texture


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=32, mode="bicubic", align_corners=False)
    return torch.floor(x.clamp(0, 1) * 255) / 255


def _ours(x: torch.Tensor, kind: str, severity: int) -> float:
    t = time.perf_counter()
    corrupt(x, kind, severity, constants="imagenet")
    return len(x) / (time.perf_counter() - t)


def _theirs(arr: np.ndarray, kind: str, severity: int, budget: float, ic) -> float | None:
    try:
        ic.corrupt(arr[0], corruption_name=kind, severity=severity)
    except Exception as e:  # noqa: BLE001 - report which kinds the package cannot run
        print(f"  imagecorruptions {kind}: fails ({type(e).__name__}: {str(e)[:60]})")
        return None
    done, t = 0, time.perf_counter()
    while done < len(arr) and time.perf_counter() - t < budget:
        ic.corrupt(arr[done], corruption_name=kind, severity=severity)
        done += 1
    return done / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--ref-seconds", type=float, default=0.6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions as ic
    x = _images(args.n)
    arr = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    texture = frost_texture()
    print(f"{args.n} images 32x32, severity {args.severity}, torch threads {torch.get_num_threads()}, "
          f"our frost: {texture}")
    print(f"{'kind':18s} {'ours img/s':>12s} {'imagecorruptions img/s':>24s} {'speedup':>9s}")
    speedups = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind in CORRUPTIONS:
            corrupt(x[:8], kind, args.severity, constants="imagenet")  # warm caches (kernels, schedules)
            ours, theirs = 0.0, _theirs(arr, kind, args.severity, args.ref_seconds, ic)
            for _ in range(args.rounds):
                ours = max(ours, _ours(x, kind, args.severity))
                if theirs is not None:
                    theirs = max(theirs, _theirs(arr, kind, args.severity, args.ref_seconds, ic))
            if theirs is None:
                print(f"{kind:18s} {ours:12.0f} {'(fails)':>24s} {'-':>9s}")
                continue
            if kind == "frost" and texture != "photos":
                print(f"{kind:18s} {ours:12.0f} {theirs:24.0f} {'(unlike)':>9s}")
                continue
            speedups.append(ours / theirs)
            print(f"{kind:18s} {ours:12.0f} {theirs:24.0f} {ours / theirs:9.1f}")
    gm = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
    print(f"kinds compared: {len(speedups)}")
    print(f"corruption_speedup={gm:.2f}")


if __name__ == "__main__":
    main()
