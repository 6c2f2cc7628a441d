#!/usr/bin/env python3
"""Checks that parquet shards written by cotyle's ShardWriter open in Hugging Face `datasets`
as an image dataset: `features["image"]` is `Image()`, the other columns have the dtypes
`datasets` itself would write, and one image decodes with PIL.

Usage: python3 scripts/check_hf_compat.py DIR   (DIR holds SPLIT-xxxxx-of-yyyyy.parquet)
Exits 0 when compatible, non-zero with a message otherwise. Used by data/tests/hf_compat.rs.
"""
import glob
import os
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_hf_compat.py DIR")
    root = sys.argv[1]
    files = sorted(glob.glob(os.path.join(root, "*.parquet")))
    if not files:
        sys.exit(f"{root}: no .parquet files")
    splits = {}
    for f in files:
        splits.setdefault(os.path.basename(f).split("-")[0], []).append(f)

    import datasets
    from datasets import Image, Value

    loaded = datasets.load_dataset("parquet", data_files=splits)
    for split, ds in loaded.items():
        features = ds.features
        if not isinstance(features["image"], Image):
            sys.exit(f"{split}: features['image'] is {features['image']!r}, not Image()")
        expected = {"style_id": Value("int64"), "prompt": Value("string"), "content_id": Value("int64")}
        for name, feature in expected.items():
            if features.get(name) != feature:
                sys.exit(f"{split}: features[{name!r}] is {features.get(name)!r}, expected {feature!r}")
        if len(ds) == 0:
            sys.exit(f"{split}: zero rows")
        img = ds[0]["image"]  # decoded by datasets into a PIL image
        img.load()
        print(f"{split}: {len(ds)} rows, first image {img.size} {img.mode}, features ok")


if __name__ == "__main__":
    main()
