#!/usr/bin/env python3
"""The PyTorch CPU twin of `trainer bench ar` (issue 5): sampling a style generator of the
same Qwen2 config with Hugging Face `transformers` (`Qwen2ForCausalLM.generate`, KV cache,
do_sample with temperature 1.0, top-k 200, top-p 0.95), random weights, `--batch` sequences
of exactly `--len` tokens from one random first token each, on `--threads` threads.

    pip install torch transformers
    python3 benches/ar_torch.py --config-json "$(cat RUN/config.json)" --batch 1 --len 196

`trainer bench ar` runs this script itself (when torch and transformers import) and prints
both. Prints the best wall time in seconds over --runs runs after one warm-up.
"""

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-json", required=True, help="a Qwen2 config.json, as text")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--len", type=int, default=196)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="one JSON line on stdout")
    a = ap.parse_args()
    try:
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM
    except ImportError as e:
        print(f"needs torch and transformers ({e}): pip install torch transformers", file=sys.stderr)
        return 1

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = Qwen2Config(**json.loads(a.config_json))
    model = Qwen2ForCausalLM(cfg).eval()
    first = torch.randint(0, cfg.vocab_size, (a.batch, 1))

    def sample(length):
        with torch.inference_mode():
            out = model.generate(
                input_ids=first,
                attention_mask=torch.ones_like(first),
                do_sample=True,
                temperature=1.0,
                top_k=200,
                top_p=0.95,
                max_length=length,
                min_length=length,
                use_cache=True,
                pad_token_id=0,
                eos_token_id=None,
            )
        assert out.shape == (a.batch, length), out.shape
        return out

    sample(min(a.len, 8))  # warm-up
    best = float("inf")
    for _ in range(a.runs):
        t = time.perf_counter()
        sample(a.len)
        best = min(best, time.perf_counter() - t)
    tokens = a.batch * a.len
    if a.json:
        print(json.dumps({"secs": best, "tokens_per_s": tokens / best, "codes_per_s": a.batch / best}))
    else:
        print(f"batch {a.batch} x {a.len} tokens: {best:.2f} s, {tokens / best:.1f} tokens/s, "
              f"{a.batch / best:.2f} codes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
