#!/usr/bin/env python3
"""Python reference for `trainer bench data`: the same decode + resize + normalise pipeline
with pyarrow + Pillow + numpy, streaming the same parquet shards by record batch.

    pip install pyarrow pillow numpy
    python3 benches/data_python.py --root DIR --threads 2 --size 56

Work per image, as the Rust side: decode PNG to RGB, resize the short side to SIZE (Pillow
BILINEAR, antialiased when shrinking), centre-crop SIZE x SIZE, scale to [0, 1], normalise
with mean 0.5 / std 0.5, transpose to (3, H, W); images are stacked into float32 batches.
Decoding runs on a thread pool (Pillow releases the GIL while decoding and resizing).
"""
import argparse
import glob
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

MEAN = np.array([0.5, 0.5, 0.5], dtype=np.float32)
STD = np.array([0.5, 0.5, 0.5], dtype=np.float32)


def transform(data: bytes, size: int) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    if (rw, rh) != (w, h):
        img = img.resize((rw, rh), Image.BILINEAR)
    left, top = (rw - size) // 2, (rh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--passes", type=int, default=2)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.root, f"{a.split}-*.parquet")))
    if not files:
        raise SystemExit(f"no {a.split}-*.parquet files in {a.root}")
    pool = ThreadPoolExecutor(a.threads)
    print(f"python bench: {a.split} in {a.root}, output {a.size}x{a.size}, {a.threads} threads, batch {a.batch}")
    best = 0.0
    for p in range(1, a.passes + 1):
        start = time.perf_counter()
        n, checksum = 0, 0.0
        for f in files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=a.batch, columns=["image"]):
                blobs = [d["bytes"] for d in rb.column(0).to_pylist()]
                batch = np.stack(list(pool.map(lambda b: transform(b, a.size), blobs)))
                n += len(blobs)
                checksum += float(batch.mean())
        secs = time.perf_counter() - start
        best = max(best, n / secs)
        print(f"pass {p}: {n} images in {secs:.2f}s = {n / secs:.0f} images/s (checksum {checksum:.4f})")
    print(f"best: {best:.0f} images/s")


if __name__ == "__main__":
    main()
