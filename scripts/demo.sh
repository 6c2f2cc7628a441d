#!/usr/bin/env bash
# The README's first command: build cotyle and run the main job on the embedded default,
# the synthetic paired-style dataset, on this machine's CPU. Outputs go to out/demo/
# (git-ignored). The whole pipeline on tiny configs: synth -> codebook -> extract -> ar -> dit
# -> generate -> eval (descriptor training, the paper's protocols at tiny size, a report).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/demo}"

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs), then run this script again" >&2
  exit 1
fi

echo "== building trainer (release; the first build takes a few minutes)"
cargo build --release --locked --bin trainer
trainer=target/release/trainer

echo "== config check"
for c in configs/tiny/*.yaml; do "$trainer" config check --config "$c"; done

echo "== synthetic paired-style dataset -> $out/synth"
"$trainer" data synth --config configs/tiny/synth.yaml --out "$out/synth" --force
"$trainer" data inspect "$out/synth" --decode 0 | tee "$out/inspect.txt"
"$trainer" data preview "$out/synth" --out "$out/grid.png" --styles 8 --per-style 8

echo "== data loader throughput"
"$trainer" bench data --root "$out/synth" --threads 2 --passes 1 | tee "$out/bench-data.txt"

echo "== stage 1: style codebook (tiny config) -> $out/codebook/demo"
"$trainer" codebook --config configs/tiny/codebook.yaml --set "data.root=$out/synth" \
  --set "train.out_dir=$out/codebook" --set train.run=demo | tee "$out/codebook.txt"
"$trainer" codebook eval --checkpoint "$out/codebook/demo/final" | tee -a "$out/codebook.txt"
"$trainer" extract --checkpoint "$out/codebook/demo/final" | tee -a "$out/codebook.txt"

echo "== stage 3: style generator (tiny config) -> $out/ar/demo"
"$trainer" ar --config configs/tiny/ar.yaml --set "data.indices=$out/codebook/demo" \
  --set "train.out_dir=$out/ar" --set train.run=demo | tee "$out/ar.txt"
"$trainer" sample-style --ar "$out/ar/demo/final" --code 1234 --out "$out/style-1234.json" 2>&1 \
  | tee -a "$out/ar.txt"
"$trainer" sample-style --ar "$out/ar/demo/final" --code 1234 --code 99 --weight 0.3 \
  --out "$out/style-1234-99.json" 2>&1 | tee -a "$out/ar.txt"
"$trainer" sample-style --ar "$out/ar/demo/final" --codes 0..200 2>/dev/null \
  | sed "s/^/suppression on:  /" | tee -a "$out/ar.txt"
"$trainer" sample-style --ar "$out/ar/demo/final" --codes 0..200 --no-suppression 2>/dev/null \
  | sed "s/^/suppression off: /" | tee -a "$out/ar.txt"

echo "== stage 2: style-conditioned DiT (tiny config) -> $out/dit/demo"
"$trainer" dit --config configs/tiny/dit.yaml --set "data.root=$out/synth" \
  --set "codebook=$out/codebook/demo/final" --set "train.out_dir=$out/dit" --set train.run=demo \
  | tee "$out/dit.txt"

echo "== generate: codes and held-out references -> $out/generate"
"$trainer" data export "$out/synth" --split test --styles 2 --out "$out/refs" | tee -a "$out/dit.txt"
refs=()
for f in "$out"/refs/*.png; do refs+=(--style-image "$f"); done
"$trainer" generate --pipeline configs/pipeline.yaml --dit "$out/dit/demo/final" \
  --ar "$out/ar/demo/final" --code 1234 --code 99 "${refs[@]}" \
  --prompt "a large circle" --prompt "two stars and a small heart" \
  --out "$out/generate" --grid | tee -a "$out/dit.txt"

echo "== evaluation: offline style descriptor, then the protocols -> $out/eval"
"$trainer" eval train-descriptor --config configs/descriptor.yaml \
  --set "train.out_dir=$out/descriptor" --set train.run=demo | tee "$out/eval.txt"
"$trainer" eval --config configs/tiny/eval.yaml --set "pipeline.dit=$out/dit/demo/final" \
  --set "pipeline.ar=$out/ar/demo/final" --set "data=$out/synth" \
  --set "descriptor=$out/descriptor/demo" --set "out_dir=$out/eval" \
  --set codes=32 --set images_per_code=4 --set references=32 | tee -a "$out/eval.txt"

echo "done: contact sheets $out/grid.png (data), $out/generate/grid.png (generated) and" \
  "$out/eval/grid.png; report $out/eval/report.md; logs $out/inspect.txt, $out/codebook.txt," \
  "$out/ar.txt, $out/dit.txt and $out/eval.txt"
