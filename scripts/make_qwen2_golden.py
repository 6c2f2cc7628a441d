#!/usr/bin/env python3
"""Writes trainer/tests/fixtures/qwen2_tiny.safetensors with the REAL Hugging Face
`transformers` Qwen2 decoder (`Qwen2ForCausalLM`, models/qwen2/modeling_qwen2.py), so
`trainer/src/models/qwen2.rs` is tested against the reference itself.

The tiny config (keep in step with `fixture_config()` in trainer/src/models/qwen2/tests.rs):
  vocab 48, hidden 32, intermediate 64, 2 layers, 4 heads, 2 KV heads (head_dim 8),
  context 24, rope_theta 10000, rms_norm_eps 1e-6, untied head.
Weights are drawn with a fixed seed at scales larger than HF's 0.02 init (biases and norm
gains too) so that every term of the forward moves the logits. Tensor names are the HF
checkpoint's; `golden.tokens` (2, 13) int64 and `golden.logits` (2, 13, 48) are the input and
HF's output (eager attention, float32).

Run once from the repository root:  python3 scripts/make_qwen2_golden.py
Needs: pip install torch transformers safetensors  (tested with transformers 5.24.0)
"""
import os

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

OUT = os.path.join("trainer", "tests", "fixtures", "qwen2_tiny.safetensors")

CONFIG = dict(
    vocab_size=48,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=24,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    hidden_act="silu",
    use_sliding_window=False,
    attention_dropout=0.0,
)


def main():
    torch.manual_seed(0)
    cfg = Qwen2Config(**CONFIG)
    cfg._attn_implementation = "eager"
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(0.25 * torch.randn_like(p))
        tokens = torch.randint(0, CONFIG["vocab_size"], (2, 13), dtype=torch.int64)
        logits = model(input_ids=tokens).logits
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["golden.tokens"] = tokens
    tensors["golden.logits"] = logits.contiguous()
    save_file(tensors, OUT)
    print(f"wrote {OUT}: {len(tensors)} tensors, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
