#!/usr/bin/env python3
"""The PyTorch CPU twin of `trainer bench dit` (issue 6): the style-conditioned MMDiT of
`trainer/src/models/mmdit.rs` rebuilt in plain PyTorch, with the same parameter names and
shapes (diffusers `QwenImageTransformer2DModel` naming: it loads the `dit.` tensors of our
checkpoints with `load_state_dict(strict=True)`) and the same forward op order. Measures one
rectified-flow training step (forward, MSE to the velocity, backward, gradient clipping,
`torch.optim.AdamW`) and Euler sampling with classifier-free guidance (two forwards a step),
random weights and random conditioning tokens, f32, on `--threads` threads.

    pip install torch            # safetensors too, for --check-checkpoint (optional)
    python3 benches/dit_torch.py --config-json '{"in_channels": 3, "patch_size": 8,
        "hidden_size": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0, "text_dim": 128,
        "sample_size": 64, "norm_eps": 1e-6, "zero_init": false}' --batch 16
    python3 benches/dit_torch.py --config-json "$(...)" \
        --check-checkpoint out/dit/demo/final/model.safetensors

`trainer bench dit` runs this script itself (when torch imports) and prints both. Training:
the best seconds per step over --runs steps after one warm-up step; sampling: one timed run
of --sample-steps Euler steps for --sample-batch images together (as the Rust side does).

Timing caveat: PyTorch's OpenMP threads spin while they wait. On a machine whose cores are
busy with other work (more runnable threads than cores) that makes the 2-thread figures tens
of times slower (measured: 50x on a loaded 2-core box); `OMP_WAIT_POLICY=PASSIVE` in the
environment avoids it. On an idle machine the default is the fair setting.

The math, as `mmdit.rs` computes it (every place where the Rust code left a choice is marked
ASSUMPTION below):
  x (B, C, S, S) -> patchify (tokens row-major over the patch grid, features in (c, py, px)
  order) -> img_in + fixed 2D sin-cos positions (MAE/DiT table, not MSRoPE);
  text (B, L, text_dim) -> txt_norm (RMSNorm, gain, eps) -> txt_in;
  t (B) -> [cos | sin](1000 t * 10000^(-i/128)), i < 128 -> linear_1 -> SiLU -> linear_2 = temb;
  per block and stream: (shift1, scale1, gate1, shift2, scale2, gate2) = s_mod.1(silu(temb));
  a = LN(x)(1 + scale1) + shift1 (LayerNorm without affine, eps); q, k, v = Linear(a) split
  into heads, q and k RMSNorm'ed per head (gain of width d); one attention over
  [text; image] keys (text first), scale 1/sqrt(d), additive key mask (0 keep, -inf pad);
  x += gate1 * out(attn); x += gate2 * mlp(LN(x)(1 + scale2) + shift2), mlp = Linear ->
  GELU(tanh) -> Linear. The last block computes only its image stream (its text queries,
  to_add_out and txt_mlp exist, as in Qwen-Image, but cannot change the output: no
  gradient). Then norm_out: (scale, shift) = norm_out.linear(silu(temb)) (scale FIRST),
  LN(img)(1 + scale) + shift -> proj_out -> unpatchify -> the velocity (B, C, S, S).
"""

import argparse
import json
import math
import sys
import time

# MmditConfig's fields with the `tiny` preset's values (`#[serde(default)]` on the Rust side:
# missing keys take these; unknown keys are refused, as `deny_unknown_fields`).
CONFIG_DEFAULTS = {
    "in_channels": 3,
    "patch_size": 2,
    "hidden_size": 128,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "text_dim": 64,
    "sample_size": 32,
    "norm_eps": 1e-6,
    "zero_init": True,
}

# Width of the sinusoidal timestep features (diffusers `Timesteps(num_channels=256)`).
TIME_DIM = 256


def parse_config(text):
    cfg = dict(CONFIG_DEFAULTS)
    given = json.loads(text)
    unknown = sorted(set(given) - set(CONFIG_DEFAULTS))
    if unknown:
        raise SystemExit(f"unknown MmditConfig keys {unknown} (known: {sorted(CONFIG_DEFAULTS)})")
    cfg.update(given)
    c, h, p, s = cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"], cfg["sample_size"]
    problems = []
    if c <= 0 or c % 4:
        problems.append("hidden_size must be a positive multiple of 4")
    if h <= 0 or c % h or (c // h) % 2:
        problems.append(f"num_heads {h} must divide hidden_size {c} into even head widths")
    if p <= 0 or s <= 0 or s % p:
        problems.append(f"sample_size {s} must be a positive multiple of patch_size {p}")
    if int(c * cfg["mlp_ratio"]) <= 0:
        problems.append("mlp_ratio must give an MLP of at least 1 unit")
    if cfg["norm_eps"] <= 0:
        problems.append("norm_eps must be positive")
    if problems:
        raise SystemExit("invalid MMDiT config: " + "; ".join(problems))
    return cfg


def build(torch):
    """The model classes (defined here so that the module imports without torch)."""
    nn = torch.nn
    F = torch.nn.functional

    class RMSNorm(nn.Module):
        """x / sqrt(mean(x^2) + eps) * weight over the last dim (`kernels::rms_norm`)."""

        def __init__(self, dim, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))
            self.eps = eps

        def forward(self, x):
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)

    class GeluProj(nn.Module):
        """diffusers `GELU(approximate="tanh")`: `proj` then GELU-tanh (name `net.0.proj`)."""

        def __init__(self, dim, hidden):
            super().__init__()
            self.proj = nn.Linear(dim, hidden)

        def forward(self, x):
            return F.gelu(self.proj(x), approximate="tanh")

    class FeedForward(nn.Module):
        """diffusers `FeedForward`: net = [GELU(proj), Dropout, Linear] (`net.0.proj`, `net.2`)."""

        def __init__(self, dim, hidden):
            super().__init__()
            self.net = nn.ModuleList([GeluProj(dim, hidden), nn.Identity(), nn.Linear(hidden, dim)])

        def forward(self, x):
            return self.net[2](self.net[0](x))

    class Attention(nn.Module):
        """The projections of both streams (diffusers `Attention` with `added_kv_proj_dim`)."""

        def __init__(self, c, d, eps):
            super().__init__()
            self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
            self.norm_q, self.norm_k = RMSNorm(d, eps), RMSNorm(d, eps)
            self.to_out = nn.ModuleList([nn.Linear(c, c)])
            self.add_q_proj, self.add_k_proj = nn.Linear(c, c), nn.Linear(c, c)
            self.add_v_proj = nn.Linear(c, c)
            self.norm_added_q, self.norm_added_k = RMSNorm(d, eps), RMSNorm(d, eps)
            self.to_add_out = nn.Linear(c, c)

    def modulate(x, shift, scale, eps):
        # PlainNorm::modulate: LN(x) * (1 + scale) + shift; LN has no affine parameters.
        return F.layer_norm(x, (x.shape[-1],), eps=eps) * (1 + scale) + shift

    class Block(nn.Module):
        """diffusers `QwenImageTransformerBlock`; `mmdit.rs` `Block::forward`."""

        def __init__(self, cfg):
            super().__init__()
            c, self.heads, self.eps = cfg["hidden_size"], cfg["num_heads"], cfg["norm_eps"]
            f = int(c * cfg["mlp_ratio"])  # MmditConfig::mlp_hidden: int(c * ratio), truncating
            d = c // self.heads
            # `*_mod.1`: index 0 is diffusers' SiLU. The Rust model takes silu(temb) once for
            # every block, so forward calls [1] on the activated temb (same math).
            self.img_mod = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
            self.txt_mod = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
            self.attn = Attention(c, d, self.eps)
            self.img_mlp = FeedForward(c, f)
            self.txt_mlp = FeedForward(c, f)

        def split(self, y):
            # (B, T, D) -> (B, T, H, d)
            b, t, c = y.shape
            return y.view(b, t, self.heads, c // self.heads)

        def forward(self, img, txt, temb_act, mask, last):
            b, n, c = img.shape
            l = txt.shape[1]
            eps, a = self.eps, self.attn
            # (B, 1, 6D) -> shift1, scale1, gate1, shift2, scale2, gate2, each (B, 1, D).
            mi = self.img_mod[1](temb_act).unsqueeze(1).chunk(6, dim=2)
            mt = self.txt_mod[1](temb_act).unsqueeze(1).chunk(6, dim=2)
            ai = modulate(img, mi[0], mi[1], eps)
            at = modulate(txt, mt[0], mt[1], eps)
            # Joint sequence [text; image], text first; (B, T, H, d) -> (B, H, T, d).
            k = torch.cat([a.norm_added_k(self.split(a.add_k_proj(at))),
                           a.norm_k(self.split(a.to_k(ai)))], 1).transpose(1, 2)
            v = torch.cat([self.split(a.add_v_proj(at)), self.split(a.to_v(ai))], 1).transpose(1, 2)
            qi = a.norm_q(self.split(a.to_q(ai)))
            if last:
                q = qi.transpose(1, 2)  # the last block's text queries are never used
            else:
                q = torch.cat([a.norm_added_q(self.split(a.add_q_proj(at))), qi], 1).transpose(1, 2)
            # softmax(q k^T / sqrt(d) + mask) v, as `kernels::attention` with default opts.
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Tq, d)
            tq = o.shape[2]
            o = o.transpose(1, 2).reshape(b, tq, c)

            def residuals(x, attn, m, out, mlp):
                # Stream::residuals: attention residual first, then the MLP on the updated x.
                x = x + m[2] * out(attn)
                return x + m[5] * mlp(modulate(x, m[3], m[4], eps))

            img = residuals(img, o[:, tq - n:], mi, a.to_out[0], self.img_mlp)
            txt = None if last else residuals(txt, o[:, :l], mt, a.to_add_out, self.txt_mlp)
            return img, txt

    class TimestepEmbedder(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.linear_1 = nn.Linear(TIME_DIM, c)
            self.linear_2 = nn.Linear(c, c)

        def forward(self, e):
            return self.linear_2(F.silu(self.linear_1(e)))

    class TimeTextEmbed(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.timestep_embedder = TimestepEmbedder(c)

    class NormOut(nn.Module):
        """AdaLayerNormContinuous: `linear` gives (scale, shift), scale first."""

        def __init__(self, c):
            super().__init__()
            self.linear = nn.Linear(c, 2 * c)

    def timestep_embedding(t):
        # init.rs timestep_embedding: f32, [cos(a) | sin(a)], a_i = 1000 t exp(-ln(1e4) i / 128).
        half = TIME_DIM // 2
        i = torch.arange(half, dtype=torch.float32)
        freqs = torch.exp(-math.log(10000.0) * i / half)
        a = t.float().reshape(-1, 1) * freqs.reshape(1, half) * 1000.0
        return torch.cat([a.cos(), a.sin()], 1)

    def pos_embed_2d(dim, grid):
        # init.rs pos_embed_2d, in f64 then f32: token m = row * grid + col; the first dim/2
        # features embed the column, the rest the row, each [sin(pos w_j) | cos(pos w_j)],
        # w_j = 10000^(-j / (dim/4)).
        q = dim // 4
        w = 1.0 / (10000.0 ** (torch.arange(q, dtype=torch.float64) / q))
        rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                                    torch.arange(grid, dtype=torch.float64), indexing="ij")
        parts = []
        for pos in (cols.reshape(-1, 1), rows.reshape(-1, 1)):
            ang = pos * w.reshape(1, q)
            parts += [ang.sin(), ang.cos()]
        return torch.cat(parts, 1).float()  # (grid^2, dim)

    class Mmdit(nn.Module):
        """diffusers `QwenImageTransformer2DModel` as `mmdit.rs` builds it."""

        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg
            c, p, ch = cfg["hidden_size"], cfg["patch_size"], cfg["in_channels"]
            if cfg["text_dim"] <= 0:
                raise SystemExit("invalid MMDiT config: model.text_dim: is not set")
            patch_dim = ch * p * p
            self.img_in = nn.Linear(patch_dim, c)
            self.txt_norm = RMSNorm(cfg["text_dim"], cfg["norm_eps"])
            self.txt_in = nn.Linear(cfg["text_dim"], c)
            self.time_text_embed = TimeTextEmbed(c)
            self.transformer_blocks = nn.ModuleList([Block(cfg) for _ in range(cfg["depth"])])
            self.norm_out = NormOut(c)
            self.proj_out = nn.Linear(c, patch_dim)
            grid = cfg["sample_size"] // p
            # Fixed table, not a parameter: kept out of the state dict (as in our checkpoints).
            self.register_buffer("pos", pos_embed_2d(c, grid), persistent=False)

        def forward(self, x, t, text, text_mask=None):
            cfg = self.cfg
            b, ch, h, w = x.shape
            p, eps = cfg["patch_size"], cfg["norm_eps"]
            gh, gw = h // p, w // p
            n, l = gh * gw, text.shape[1]
            mask = None
            if text_mask is not None:
                # key_mask: (B, 1, 1, L + N), 0 for kept text keys and all image keys, -inf
                # for padding. ASSUMPTION: a row with every key masked cannot happen (image
                # keys are never masked), so -inf is safe here as in Rust.
                keep = text_mask.to(torch.float32) != 0
                txt_bias = torch.zeros(b, l).masked_fill(~keep, float("-inf"))
                mask = torch.cat([txt_bias, torch.zeros(b, n)], 1).view(b, 1, 1, l + n).to(x.dtype)
            # patchify: (B, C, gh, p, gw, p) -> (B, gh, gw, C, p, p) -> (B, N, C p p).
            tok = x.reshape(b, ch, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, n, ch * p * p)
            img = self.img_in(tok) + self.pos
            txt = self.txt_in(self.txt_norm(text))
            temb = self.time_text_embed.timestep_embedder(timestep_embedding(t).to(x.dtype))
            temb_act = F.silu(temb)
            depth = len(self.transformer_blocks)
            for i, block in enumerate(self.transformer_blocks):
                img, y = block(img, txt, temb_act, mask, last=i + 1 == depth)
                if y is not None:
                    txt = y
            scale, shift = self.norm_out.linear(temb_act).unsqueeze(1).chunk(2, dim=2)
            out = self.proj_out(modulate(img, shift, scale, eps))  # (B, N, C p p)
            # unpatchify: (B, gh, gw, C, p, p) -> (B, C, gh, p, gw, p) -> (B, C, H, W).
            return out.reshape(b, gh, gw, ch, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, ch, h, w)

    return Mmdit


def random_init(torch, model, std=0.02):
    """Every Linear weight N(0, std^2) and bias 0, every RMSNorm gain 1. Deliberately NOT
    adaLN-Zero whatever `zero_init` says: zero modulation and output layers would make every
    block the identity and the output 0 (speed is the same; this way nothing is trivially
    zero). The Rust bench likewise sets zero_init false (it draws xavier-uniform instead)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() >= 2:
                p.normal_(0.0, std)
            else:
                p.fill_(1.0)


def read_safetensors(torch, path):
    """name -> tensor: with the `safetensors` package when installed, else a small reader."""
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:
        pass
    import struct
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = bytearray(data[8 + n:])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(body[a:b], dtype=dtypes[info["dtype"]]) if b > a else \
            torch.empty(0, dtype=dtypes[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def check_checkpoint(torch, Mmdit, cfg, path, as_json):
    tensors = read_safetensors(torch, path)
    dit = {k[len("dit."):]: v for k, v in tensors.items() if k.startswith("dit.")}
    if not dit:
        print(f"{path}: no tensors under `dit.`", file=sys.stderr)
        return 1
    if cfg["text_dim"] <= 0 and "txt_norm.weight" in dit:
        cfg["text_dim"] = dit["txt_norm.weight"].shape[0]  # as the stage resolves it
    model = Mmdit(cfg)
    try:
        model.load_state_dict({k: v.float() for k, v in dit.items()}, strict=True)
    except RuntimeError as e:
        print(f"{path}: the `dit.` tensors do not fit the config: {e}", file=sys.stderr)
        return 1
    params = sum(p.numel() for p in model.parameters())
    if as_json:
        print(json.dumps({"ok": True, "tensors": len(dit), "params": params}))
    else:
        print(f"OK: {len(dit)} `dit.` tensors of {path} load strictly; {params} parameters "
              f"({params / 1e6:.2f}M)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-json", required=True, help="our MmditConfig as JSON (serde keys)")
    ap.add_argument("--batch", type=int, default=16, help="training batch")
    ap.add_argument("--text-len", type=int, default=40, help="conditioning tokens per example")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed training steps after a warm-up")
    ap.add_argument("--sample-steps", type=int, default=20, help="Euler steps per sample")
    ap.add_argument("--sample-batch", type=int, default=8, help="images sampled together")
    ap.add_argument("--guidance", type=float, default=3.0,
                    help="CFG scale; not 1: two forwards (conditional, unconditional) a step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01,
                    help="AdamW decay on matrices only (our AdamW's rule; TrainConfig default)")
    ap.add_argument("--grad-clip", type=float, default=1.0,
                    help="global gradient-norm clip, 0: none (TrainConfig default, as our step)")
    ap.add_argument("--check-checkpoint", metavar="MODEL_SAFETENSORS",
                    help="load its `dit.` tensors strictly, print OK and the parameter count")
    ap.add_argument("--json", action="store_true", help="one JSON line on stdout")
    a = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"needs torch ({e}): pip install torch", file=sys.stderr)
        return 1

    torch.set_num_threads(a.threads)
    cfg = parse_config(a.config_json)
    Mmdit = build(torch)
    if a.check_checkpoint:
        return check_checkpoint(torch, Mmdit, cfg, a.check_checkpoint, a.json)
    if min(a.batch, a.runs, a.sample_steps, a.sample_batch, a.text_len) <= 0:
        print("--batch, --runs, --sample-steps, --sample-batch and --text-len must be positive",
              file=sys.stderr)
        return 1

    torch.manual_seed(0)
    model = Mmdit(cfg)
    random_init(torch, model)
    params = sum(p.numel() for p in model.parameters())
    ch, s, td, l = cfg["in_channels"], cfg["sample_size"], cfg["text_dim"], a.text_len

    # (1) One training step. As `bench_dit.rs`, the batch is drawn once and every step reuses
    # it: only forward, loss, backward and the optimizer step are timed.
    b = a.batch
    x0 = torch.randn(b, ch, s, s)
    noise = torch.randn(b, ch, s, s)
    t = torch.rand(b)
    tb = t.view(b, 1, 1, 1)
    xt = (1 - tb) * x0 + tb * noise
    v = noise - x0
    text = torch.randn(b, l, td)
    mask = torch.ones(b, l)
    # Our AdamW decays matrices (rank >= 2) only, never biases or norm gains.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    model.train()
    best = float("inf")
    for i in range(a.runs + 1):  # step 0 is the warm-up
        started = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(xt, t, text, mask), v)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i > 0:
            best = min(best, time.perf_counter() - started)
    if not math.isfinite(loss.item()):
        print(f"training loss is {loss.item()}", file=sys.stderr)
        return 1

    # (2) Sampling: Euler from noise (t = 1) to data (t = 0) on equal steps (shift 1), with
    # classifier-free guidance as `dit_sample::guide` (v = u + w (c - u), rescaled per sample
    # to the norm of c); the unconditional branch gets all-zero text with the same mask, as
    # `bench_dit.rs`. One timed run, as the Rust side.
    n = a.sample_batch
    text = torch.randn(n, l, td)
    mask = torch.ones(n, l)
    uncond = torch.zeros_like(text)
    x = torch.randn(n, ch, s, s)
    ts = [(a.sample_steps - i) / a.sample_steps for i in range(a.sample_steps + 1)]
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for t_now, t_next in zip(ts[:-1], ts[1:]):
            tt = torch.full((n,), t_now)
            vel = model(x, tt, text, mask)
            if a.guidance != 1.0:
                u = model(x, tt, uncond, mask)
                g = u + a.guidance * (vel - u)
                ratio = vel.reshape(n, -1).norm(dim=1) / g.reshape(n, -1).norm(dim=1).clamp_min(1e-12)
                vel = g * ratio.view(n, 1, 1, 1)
            x = x + (t_next - t_now) * vel
    sample_s = (time.perf_counter() - started) / n
    assert x.shape == (n, ch, s, s) and torch.isfinite(x).all()

    if a.json:
        print(json.dumps({
            "train_step_s": best,
            "train_images_per_s": b / best,
            "sample_s_per_image": sample_s,
            "params": params,
            "threads": a.threads,
            "torch": torch.__version__,
        }))
    else:
        fw = 2 if a.guidance != 1.0 else 1
        print(f"pytorch {torch.__version__} MMDiT, {params / 1e6:.2f}M parameters, {a.threads} threads")
        print(f"training: batch {b}, {l} text tokens: {best:.3f} s/step (best of {a.runs}), "
              f"{b / best:.1f} images/s")
        print(f"sampling: {n} images, {a.sample_steps} Euler steps, guidance {a.guidance} "
              f"({fw} forwards a step): {sample_s:.3f} s/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
