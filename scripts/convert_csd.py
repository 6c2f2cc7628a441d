#!/usr/bin/env python3
"""CSD checkpoint -> safetensors for `eval::csd::Csd` (eval/src/csd.rs).

CSD: Somepalli et al. 2024, "Measuring Style Similarity in Diffusion Models" (arXiv
2404.01292), github.com/learn2phoenix/CSD (`CSD/model.py`, `CSD_CLIP`). Its backbone is the
OpenAI CLIP ViT-L/14 visual tower (Radford et al. 2021, github.com/openai/CLIP,
`clip/model.py`, `VisionTransformer`) with `proj` set to None; its heads `last_layer_style` and
`last_layer_content` are (1024, 768) nn.Parameters applied as `feature @ W`.

The public checkpoint (`checkpoint.pth`, linked from the CSD README) is a torch pickle
holding a dict with `model_state_dict`, whose keys carry DataParallel's `module.` prefix:
`module.backbone.conv1.weight`, ..., `module.last_layer_style`, `module.last_layer_content`.
This script strips `module.`, drops `backbone.proj` if present, checks every name and shape
the Rust model reads (the config is inferred from the shapes), and writes fp32 safetensors
with the remaining names (`backbone.conv1.weight`, `last_layer_style`, ...).

Usage (from the repository root):
  python3 scripts/convert_csd.py checkpoint.pth checkpoints/csd/csd_vit_l14.safetensors
      Convert. Loads with torch.load(weights_only=True); a checkpoint that pickles other
      objects beside the tensors needs --trust-pickle (full unpickling: runs code from the
      file; only for files you trust). --allow-extra keeps going past unexpected tensors.
  python3 scripts/convert_csd.py --make-tiny-pickle /tmp/csd_tiny.pth
      Write a tiny random checkpoint in the exact real format (a torch pickle with
      `model_state_dict` and the `module.` prefix) for `CsdConfig::tiny()` (32 px, patch 8,
      width 32, 2 layers, 4 heads, MLP 128, heads 32 -> 24), to test the conversion itself.
  python3 scripts/convert_csd.py --golden eval/tests/fixtures/csd_tiny.safetensors
      Write the fixture of eval/tests/csd.rs: the tiny pickle, converted by the same code
      path, plus `golden.input` (2, 3, 32, 32) and the reference `golden.feature` (2, 32),
      `golden.style` and `golden.content` (2, 24) computed by OpenAI's own
      `VisionTransformer` and CSD's forward; and two noise images `golden.image.{a,b}`
      (37, 45, 3) and (13, 20, 3) u8 with `golden.pixels.{a,b}` (3, 32, 32), their CSD
      preprocessing by PIL (torchvision's Resize on a PIL image is
      `Image.resize(.., BICUBIC)`; its size and crop rules are copied in `pil_preprocess`).

Needs: torch, safetensors, numpy; --golden also PIL and OpenAI's `clip/model.py` importable as
`clip.model` (pip install git+https://github.com/openai/CLIP; `--make-tiny-pickle` uses it too
when present, and a name/shape table otherwise). Tested with torch 2.15, safetensors 0.8.
"""
import argparse
import copy
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

PREFIX = "module."
BACKBONE = "backbone."
HEADS = ("last_layer_style", "last_layer_content")
# CsdConfig::tiny() in eval/src/csd/config.rs.
TINY = dict(image_size=32, patch_size=8, width=32, layers=2, heads=4, mlp_width=128, out_dim=24)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def param_shapes(cfg):
    """Every tensor eval::csd::Csd reads, {name: shape} (eval/src/csd.rs, `param_shapes`)."""
    c, p, m = cfg["width"], cfg["patch_size"], cfg["mlp_width"]
    tokens = (cfg["image_size"] // p) ** 2 + 1
    b = BACKBONE
    out = {
        b + "class_embedding": (c,),
        b + "positional_embedding": (tokens, c),
        b + "conv1.weight": (c, 3, p, p),
        b + "ln_pre.weight": (c,),
        b + "ln_pre.bias": (c,),
    }
    for i in range(cfg["layers"]):
        r = f"{b}transformer.resblocks.{i}."
        out.update({
            r + "attn.in_proj_weight": (3 * c, c),
            r + "attn.in_proj_bias": (3 * c,),
            r + "attn.out_proj.weight": (c, c),
            r + "attn.out_proj.bias": (c,),
            r + "ln_1.weight": (c,),
            r + "ln_1.bias": (c,),
            r + "mlp.c_fc.weight": (m, c),
            r + "mlp.c_fc.bias": (m,),
            r + "mlp.c_proj.weight": (c, m),
            r + "mlp.c_proj.bias": (c,),
            r + "ln_2.weight": (c,),
            r + "ln_2.bias": (c,),
        })
    out[b + "ln_post.weight"] = (c,)
    out[b + "ln_post.bias"] = (c,)
    for h in HEADS:
        out[h] = (c, cfg["out_dim"])
    return out


def fail(msg):
    sys.exit(f"convert_csd: {msg}")


def load_state_dict(path, trust):
    """The `model_state_dict` of a CSD checkpoint, names as stored."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except Exception as e:  # weights_only refuses other pickled objects
        hint = "" if trust else " (if you trust this file, rerun with --trust-pickle)"
        fail(f"{path}: cannot load: {e}{hint}")
    if not isinstance(ckpt, dict):
        fail(f"{path}: expected a dict with 'model_state_dict', got {type(ckpt).__name__}")
    for key in ("model_state_dict", "state_dict"):
        if key in ckpt:
            return ckpt[key]
    if ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt  # a bare state dict
    fail(f"{path}: no 'model_state_dict' among its keys {sorted(ckpt)[:20]}")


def infer_config(sd, path, heads):
    """CsdConfig from the tensor shapes; heads are not in the weights: CLIP's width // 64."""
    def get(name):
        if name not in sd:
            fail(f"{path}: missing tensor {name}")
        return sd[name].shape
    width = get(BACKBONE + "class_embedding")[0]
    patch = get(BACKBONE + "conv1.weight")[-1]
    tokens = get(BACKBONE + "positional_embedding")[0]
    grid = math.isqrt(tokens - 1)
    if grid * grid + 1 != tokens:
        fail(f"{path}: {BACKBONE}positional_embedding has {tokens} rows, not grid^2 + 1")
    layers = 0
    while f"{BACKBONE}transformer.resblocks.{layers}.ln_1.weight" in sd:
        layers += 1
    mlp = get(f"{BACKBONE}transformer.resblocks.0.mlp.c_fc.weight")[0]
    out_dim = get(HEADS[0])[-1]
    return dict(image_size=grid * patch, patch_size=patch, width=width, layers=layers,
                heads=heads or max(width // 64, 1), mlp_width=mlp, out_dim=out_dim)


def convert(path, trust=False, allow_extra=False, heads=None):
    """(tensors {our name: fp32 contiguous}, config) of the checkpoint at `path`."""
    raw = load_state_dict(path, trust)
    sd = {}
    for k, v in raw.items():
        k = k[len(PREFIX):] if k.startswith(PREFIX) else k
        if k in sd:
            fail(f"{path}: tensor {k} appears with and without the {PREFIX!r} prefix")
        sd[k] = v
    if sd.pop(BACKBONE + "proj", None) is not None:
        print(f"convert_csd: dropped {BACKBONE}proj (CSD sets it to None; unused)")
    cfg = infer_config(sd, path, heads)
    want = param_shapes(cfg)
    missing = [k for k in want if k not in sd]
    if missing:
        fail(f"{path}: missing tensors {missing[:10]} (of {len(missing)})")
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            fail(f"{path}: tensor {k} has shape {tuple(sd[k].shape)}, expected {shape}")
    extra = sorted(k for k in sd if k not in want)
    if extra:
        msg = f"{path}: unexpected tensors {extra[:10]} (of {len(extra)})"
        if any(k.startswith(HEADS[1] + ".") for k in extra):
            msg += "; a content head with sub-tensors is CSD's content_proj_head='custom', " \
                   "which eval::csd does not implement"
        if not allow_extra:
            fail(msg + " (--allow-extra drops them)")
        print(f"convert_csd: warning: {msg}; dropped")
    tensors = {k: sd[k].detach().to(torch.float32).contiguous() for k in want}
    return tensors, cfg


def randomise(model, gen):
    """Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2), LayerNorm weights ~ 1 + N(0, 0.1^2),
    embeddings ~ N(0, 0.5^2): every term of the forward moves the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if ".ln_" in name or name.startswith("backbone.ln_"):
                p.copy_((1.0 + 0.1 * noise) if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "embedding" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / math.sqrt(int(np.prod(p.shape[1:]))))


class TinyCsd(torch.nn.Module):
    """CSD_CLIP's structure (CSD/model.py): heads copied from the tower's proj, proj dropped."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.last_layer_style = copy.deepcopy(backbone.proj)
        self.last_layer_content = copy.deepcopy(backbone.proj)
        self.backbone.proj = None

    def forward(self, x):
        feature = self.backbone(x)
        style = torch.nn.functional.normalize(feature @ self.last_layer_style, dim=1, p=2)
        content = torch.nn.functional.normalize(feature @ self.last_layer_content, dim=1, p=2)
        return feature, content, style


def tiny_model(seed, need_clip):
    """(the tiny CSD as a module, or None, and its state dict without `module.`)."""
    try:
        from clip.model import VisionTransformer
    except ImportError:
        if need_clip:
            fail("--golden needs OpenAI's clip/model.py importable as clip.model")
        VisionTransformer = None
    gen = torch.Generator().manual_seed(seed)
    if VisionTransformer is None:
        print("convert_csd: clip.model not importable; tiny weights from the name table")
        sd = {k: torch.randn(s, generator=gen) / math.sqrt(s[-1]) for k, s in
              param_shapes(TINY).items()}
        return None, sd
    t = TINY
    vt = VisionTransformer(input_resolution=t["image_size"], patch_size=t["patch_size"],
                           width=t["width"], layers=t["layers"], heads=t["heads"],
                           output_dim=t["out_dim"])
    model = TinyCsd(vt).eval()
    randomise(model, gen)
    return model, model.state_dict()


def make_tiny_pickle(out, seed, need_clip=False):
    model, sd = tiny_model(seed, need_clip)
    if model is not None:
        # DataParallel adds `module.` as CSD's training did (works on CPU without GPUs).
        sd = torch.nn.DataParallel(model).state_dict()
    else:
        sd = {PREFIX + k: v for k, v in sd.items()}
    torch.save({"epoch": 0, "model_state_dict": sd}, out)
    print(f"wrote {out}: {len(sd)} tensors, e.g. {next(iter(sd))}")
    return model


def pil_preprocess(img, size):
    """CSD's transforms_branch0 on a PIL image, as torchvision does it."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    if (nw, nh) != (w, h):
        from PIL import Image
        img = img.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    x = x.to(torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return x.sub(mean).div(std)


def golden(out, seed):
    from PIL import Image
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "csd_tiny.pth")
        model = make_tiny_pickle(pth, seed, need_clip=True)
        tensors, cfg = convert(pth, heads=TINY["heads"])
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((2, 3, TINY["image_size"], TINY["image_size"]), generator=gen)
    with torch.no_grad():
        feature, content, style = model(x)
    # Uniform noise, the hardest case for matching a resize: 45 x 37 (downscaled to 38 x 32,
    # crop at x = 3) and 20 x 13 (upscaled to 49 x 32, crop at x = round(8.5) = 8).
    rng = np.random.default_rng(seed)
    imgs = {k: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for k, (w, h) in {"a": (45, 37), "b": (20, 13)}.items()}
    tensors.update({
        "golden.input": x.contiguous(),
        "golden.feature": feature.contiguous(),
        "golden.style": style.contiguous(),
        "golden.content": content.contiguous(),
    })
    for k, arr in imgs.items():
        tensors[f"golden.image.{k}"] = torch.from_numpy(arr).contiguous()
        pixels = pil_preprocess(Image.fromarray(arr, "RGB"), TINY["image_size"])
        tensors[f"golden.pixels.{k}"] = pixels.contiguous()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    import PIL
    save_file(tensors, out, metadata={
        "made_by": "scripts/convert_csd.py --golden",
        "torch": torch.__version__, "pil": PIL.__version__, "csd_config": json.dumps(cfg),
    })
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="CSD checkpoint.pth")
    ap.add_argument("out", nargs="?", help="output .safetensors")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="full unpickling (runs code from the file)")
    ap.add_argument("--allow-extra", action="store_true", help="drop unexpected tensors")
    ap.add_argument("--heads", type=int,
                    help="recorded in the metadata only (not in the weights); default CLIP's width // 64")
    ap.add_argument("--make-tiny-pickle", metavar="OUT")
    ap.add_argument("--golden", metavar="OUT")
    ap.add_argument("--seed", type=int, default=20240402)
    a = ap.parse_args()
    if a.make_tiny_pickle:
        make_tiny_pickle(a.make_tiny_pickle, a.seed)
        return
    if a.golden:
        golden(a.golden, a.seed)
        return
    if not (a.checkpoint and a.out):
        ap.error("give CHECKPOINT and OUT, or --make-tiny-pickle OUT, or --golden OUT")
    tensors, cfg = convert(a.checkpoint, a.trust_pickle, a.allow_extra, a.heads)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    save_file(tensors, a.out, metadata={
        "format": "pt", "made_by": "scripts/convert_csd.py",
        "source": os.path.basename(a.checkpoint), "csd_config": json.dumps(cfg),
    })
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {a.out}: {len(tensors)} tensors, {n} parameters, config {json.dumps(cfg)}")


if __name__ == "__main__":
    main()
