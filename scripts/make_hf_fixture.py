#!/usr/bin/env python3
"""Writes data/tests/fixtures/hf_datasets_tiny.parquet with the REAL Hugging Face `datasets`
library, so the Rust readers are tested against what `datasets` itself writes (not against
our own writer's idea of the format).

Layout (the cotyle image convention, see data/src/hf.rs): columns
  image      Image()          -> struct<bytes: binary, path: string>, encoded PNG/JPEG/WebP
  style_id   Value("int64")
  prompt     Value("string")
  content_id Value("int64")
8 rows, 3 styles (ids 3, 7, 11: non-contiguous and ordering "11" < "3" lexically, so the
reader's numeric style sort is exercised), 8x8 images, one JPEG and one WebP among the PNGs.

Run once from the repository root:  python3 scripts/make_hf_fixture.py
Needs: pip install datasets pyarrow pillow
"""
import io
import os
import sys

from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

OUT = os.path.join("data", "tests", "fixtures", "hf_datasets_tiny.parquet")


def encoded(color, fmt):
    """An 8x8 solid-colour image with one contrasting pixel, encoded as `fmt`."""
    img = PILImage.new("RGB", (8, 8), color)
    img.putpixel((0, 0), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def main():
    rows = [
        # (style_id, content_id, colour, format)
        (3, 0, (200, 30, 30), "PNG"),
        (3, 1, (210, 40, 40), "PNG"),
        (3, 2, (220, 50, 50), "JPEG"),
        (7, 0, (30, 200, 30), "PNG"),
        (7, 1, (40, 210, 40), "WEBP"),
        (7, 2, (50, 220, 50), "PNG"),
        (11, 0, (30, 30, 200), "PNG"),
        (11, 1, (40, 40, 210), "PNG"),
    ]
    ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
    data = {
        "image": [
            {"bytes": encoded(c, f), "path": f"s{s}_c{k}.{ext[f]}"} for s, k, c, f in rows
        ],
        "style_id": [s for s, _, _, _ in rows],
        "prompt": [f"a picture of thing {k} in style {s}" for s, k, _, _ in rows],
        "content_id": [k for _, k, _, _ in rows],
    }
    features = Features(
        {
            "image": Image(),
            "style_id": Value("int64"),
            "prompt": Value("string"),
            "content_id": Value("int64"),
        }
    )
    ds = Dataset.from_dict(data, features=features)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    ds.to_parquet(OUT)
    print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes, {len(ds)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
