#!/usr/bin/env python3
"""The PyTorch CPU twin of `trainer bench block` (issue 3): one pre-LN transformer block
(LayerNorm with bias, causal multi-head attention, GELU-tanh MLP, residuals) trained with
AdamW on an MSE loss against a fixed target, with the same shapes, thread count and step
structure as the Rust side, so their times compare.

    pip install torch numpy
    python3 benches/block_torch.py --threads 2 [--json]

`trainer bench block` runs this script itself (when torch imports) and prints both.
Times are medians in ms over --runs steps after --warmup steps: forward, backward,
optimiser, whole step.
"""

import argparse
import json
import math
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="one JSON line on stdout")
    a = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("torch is not installed: pip install torch", file=sys.stderr)
        return 3

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    b, t, c, h = a.batch, a.seq, a.dim, a.heads
    hd = c // h

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = torch.nn.LayerNorm(c)
            self.qkv = torch.nn.Linear(c, 3 * c)
            self.proj = torch.nn.Linear(c, c)
            self.ln2 = torch.nn.LayerNorm(c)
            self.fc1 = torch.nn.Linear(c, a.mlp)
            self.fc2 = torch.nn.Linear(a.mlp, c)

        def forward(self, x):
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    model = Block()
    params = sum(p.numel() for p in model.parameters())
    # Decay on matrices only, as the Rust optimiser does.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-4,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    x = torch.randn(b, t, c)
    target = torch.randn(b, t, c)

    fwd, bwd, optim, step = [], [], [], []
    for i in range(a.warmup + a.runs):
        t0 = time.perf_counter()
        loss = F.mse_loss(model(x), target)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        if i >= a.warmup:
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            optim.append((t3 - t2) * 1e3)
            step.append((t3 - t0) * 1e3)
        if not math.isfinite(loss.item()):
            print(f"loss is {loss.item()} at step {i}", file=sys.stderr)
            return 1

    med = statistics.median
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": params,
        "fwd_ms": med(fwd),
        "bwd_ms": med(bwd),
        "optim_ms": med(optim),
        "step_ms": med(step),
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(
            f"pytorch {out['torch']} ({out['threads']} threads, {params} params): "
            f"step {out['step_ms']:.2f} ms = fwd {out['fwd_ms']:.2f} + bwd {out['bwd_ms']:.2f} "
            f"+ optim {out['optim_ms']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
