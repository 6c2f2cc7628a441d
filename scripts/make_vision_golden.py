#!/usr/bin/env python3
"""Writes trainer/tests/fixtures/qwen2_5_vl_vision_tiny.safetensors with the REAL Hugging Face
`transformers` Qwen2.5-VL vision tower (`Qwen2_5_VisionTransformerPretrainedModel`,
models/qwen2_5_vl/modeling_qwen2_5_vl.py) and its image processor's patch layout
(`Qwen2VLImageProcessorPil.patchify`), so `trainer/src/models/vision.rs` is tested against
the reference itself, not against our reading of it.

The tiny config (keep in step with `fixture_config()` in trainer/src/models/vision/tests.rs):
  depth 2, hidden 32, heads 2 (head_dim 16), intermediate 64, patch 4, temporal patch 2,
  merge 2, window 16 px (2x2 merged units per window), full attention in block 1, out 32.
Inputs, all packed into ONE HF call (grid_thw [[1,8,8],[1,8,8],[1,10,6]]), which also checks
that HF's packed multi-image sequence equals our per-image batch:
  input.a: (2, 3, 32, 32)  two square images   -> output.a: (2, 16, 32)
  input.b: (1, 3, 40, 24)  one non-square image, merged grid 5x3, so the windows at the
                           bottom and right edges are partial -> output.b: (1, 15, 32)
Weights are drawn with a fixed seed at scales larger than HF's 0.02 init (biases and norm
weights too) so that every term of the forward moves the output. Tensor names are the HF
checkpoint's, under `visual.`; `hidden.*` hold each image's tokens after the last block in
window order (HF's `last_hidden_state`), which helps to localise a mismatch.

Run once from the repository root:  python3 scripts/make_vision_golden.py
Needs: pip install torch transformers safetensors numpy  (tested with transformers 5.24.0)
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

OUT = os.path.join("trainer", "tests", "fixtures", "qwen2_5_vl_vision_tiny.safetensors")

CONFIG = dict(
    depth=2,
    hidden_size=32,
    num_heads=2,
    intermediate_size=64,
    patch_size=4,
    temporal_patch_size=2,
    spatial_merge_size=2,
    window_size=16,
    fullatt_block_indexes=[1],
    out_hidden_size=32,
    hidden_act="silu",
)


def randomise(model, gen):
    """Weights ~ N(0, 1/fan_in) (unit-scale activations), biases ~ N(0, 0.1^2), norm weights
    ~ 1 + N(0, 0.1^2): far from HF's init, so a missing bias or norm weight shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name or "ln_q" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(noise / np.sqrt(fan_in))


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20251114)
    config = Qwen2_5_VLVisionConfig(**CONFIG)
    model = Qwen2_5_VisionTransformerPretrainedModel._from_config(
        config, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    randomise(model, gen)

    # "Already normalised" images: roughly unit scale, like CLIP-normalised pixels.
    images_a = torch.randn((2, 3, 32, 32), generator=gen, dtype=torch.float32)
    images_b = torch.randn((1, 3, 40, 24), generator=gen, dtype=torch.float32)
    processor = Qwen2VLImageProcessorPil()
    patches, grids = [], []
    for image in list(images_a) + list(images_b):
        flat, gh, gw = processor.patchify(
            image.numpy(),
            patch_size=CONFIG["patch_size"],
            merge_size=CONFIG["spatial_merge_size"],
            temporal_patch_size=CONFIG["temporal_patch_size"],
        )
        patches.append(torch.from_numpy(np.ascontiguousarray(flat)))
        grids.append([1, gh, gw])
    pixel_values = torch.cat(patches, dim=0)
    grid_thw = torch.tensor(grids, dtype=torch.int64)

    with torch.no_grad():
        out = model(pixel_values, grid_thw=grid_thw)
    merged = out.pooler_output  # (sum of tokens, out_hidden), image by image, row-major
    hidden = out.last_hidden_state  # (sum of patches, hidden), window order

    tokens = [gh * gw // 4 for _, gh, gw in grids]
    per_image = list(torch.split(merged, tokens, dim=0))
    per_image_hidden = list(torch.split(hidden, [t * 4 for t in tokens], dim=0))

    tensors = {f"visual.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["input.a"] = images_a.contiguous()
    tensors["input.b"] = images_b.contiguous()
    tensors["output.a"] = torch.stack(per_image[:2]).contiguous()
    tensors["output.b"] = per_image[2].unsqueeze(0).contiguous()
    tensors["hidden.a"] = torch.stack(per_image_hidden[:2]).contiguous()
    tensors["hidden.b"] = per_image_hidden[2].unsqueeze(0).contiguous()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    import transformers

    save_file(
        tensors,
        OUT,
        metadata={
            "made_by": "scripts/make_vision_golden.py",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "config": repr(CONFIG),
        },
    )
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
    for k, v in tensors.items():
        if not k.startswith("visual."):
            print(f"  {k}: {tuple(v.shape)}  mean|x| {v.abs().mean():.4f}")


if __name__ == "__main__":
    main()
