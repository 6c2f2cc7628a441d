#!/usr/bin/env python3
"""Writes trainer/tests/fixtures/mmdit_tiny.safetensors with the PyTorch twin of our MMDiT
(`build()` in benches/dit_torch.py: diffusers `QwenImageTransformer2DModel` naming and op
order, written independently of candle), so `trainer/src/models/mmdit.rs` is tested against
a plain-PyTorch forward built from torch's own ops (F.layer_norm, F.rms_norm,
F.scaled_dot_product_attention, F.gelu(approximate="tanh"), ...).

The tiny config (keep in step with `fixture_config()` in trainer/src/models/mmdit/tests.rs):
  in_channels 3, patch 4, sample 16 (a 4x4 grid: 16 image tokens), hidden 32, depth 2,
  heads 2 (head_dim 16), mlp_ratio 2.0 (MLP 64), text_dim 24, norm_eps 1e-6, zero_init false.
Weights are drawn with a fixed seed at scales far from any init (matrices N(0, 0.2^2), biases
N(0, 0.2^2), every RMSNorm gain 1 + 0.2 N(0, 1)) so that every term of the forward (the
modulation shifts, scales and gates, the qk-norm and txt_norm gains) moves the output. Tensor
names are the diffusers checkpoint's; the last block's text-stream outputs (unused by the
forward, `init::unused_params`) are stored too, as `Mmdit::new` loads every parameter.
Inputs and output (float32): `golden.x` (2, 3, 16, 16), `golden.t` (2) = [0.3, 0.85],
`golden.text` (2, 5, 24), `golden.mask` (2, 5) with the second example's last two tokens
padding (0), and `golden.out` (2, 3, 16, 16), the twin's velocity.

Run once from the repository root:  python3 scripts/make_mmdit_golden.py
Needs: pip install torch safetensors  (tested with torch 2.15.0)
"""
import importlib.util
import json
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join("trainer", "tests", "fixtures", "mmdit_tiny.safetensors")
TWIN = os.path.join("benches", "dit_torch.py")

CONFIG = dict(
    in_channels=3,
    patch_size=4,
    hidden_size=32,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    text_dim=24,
    sample_size=16,
    norm_eps=1e-6,
    zero_init=False,
)


def load_twin():
    spec = importlib.util.spec_from_file_location("dit_torch", TWIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    twin = load_twin()
    cfg = twin.parse_config(json.dumps(CONFIG))
    torch.manual_seed(0)
    model = twin.build(torch)(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif p.dim() == 1:  # RMSNorm gains: txt_norm and the per-head qk-norms
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
        c, s = cfg["in_channels"], cfg["sample_size"]
        x = torch.randn(2, c, s, s)
        t = torch.tensor([0.3, 0.85])
        text = torch.randn(2, 5, cfg["text_dim"])
        mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
        out = model(x, t, text, mask)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["golden.x"] = x
    tensors["golden.t"] = t
    tensors["golden.text"] = text
    tensors["golden.mask"] = mask
    tensors["golden.out"] = out.contiguous()
    save_file(tensors, OUT)
    print(f"wrote {OUT}: {len(tensors)} tensors, out {tuple(out.shape)}, "
          f"max |out| {out.abs().max().item():.3f}")


if __name__ == "__main__":
    main()
