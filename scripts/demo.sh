#!/usr/bin/env bash
# The README's first command: build cotyle and run the main job on the embedded default, the
# synthetic paired-style dataset, on this machine's CPU: `trainer pipeline` on the tiny configs
# (synth -> codebook -> extract -> ar -> dit -> offline descriptor -> generate -> eval), then a
# few looks around (the data's contact sheet, loader speed, style-code statistics, images from
# held-out references). Outputs go to out/demo/ (git-ignored); run it again and finished steps
# are skipped.
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

echo "== the pipeline (configs/tiny/pipeline.yaml) -> $out"
mkdir -p "$out"
"$trainer" pipeline --config configs/tiny/pipeline.yaml --set "run.out=$out" \
  --set "dit=$out/runs/dit/final" --set "ar=$out/runs/ar/final" | tee "$out/pipeline.txt"

echo "== the data: inspection, contact sheet, loader throughput"
"$trainer" data inspect "$out/synth" --decode 0 > "$out/inspect.txt"
tail -4 "$out/inspect.txt"
"$trainer" data preview "$out/synth" --out "$out/grid.png" --styles 8 --per-style 8
"$trainer" bench data --root "$out/synth" --threads 2 --passes 1 | tee "$out/bench-data.txt"

echo "== style codes: one code, an interpolation, suppression on and off over 200 codes"
ar="$out/runs/ar/final"
"$trainer" sample-style --ar "$ar" --code 1234 --out "$out/style-1234.json" 2>&1 | tee "$out/ar.txt"
"$trainer" sample-style --ar "$ar" --code 1234 --code 99 --weight 0.3 \
  --out "$out/style-1234-99.json" 2>&1 | tee -a "$out/ar.txt"
"$trainer" sample-style --ar "$ar" --codes 0..200 2>/dev/null \
  | sed "s/^/suppression on:  /" | tee -a "$out/ar.txt"
"$trainer" sample-style --ar "$ar" --codes 0..200 --no-suppression 2>/dev/null \
  | sed "s/^/suppression off: /" | tee -a "$out/ar.txt"

echo "== images from held-out reference images -> $out/generate-refs"
"$trainer" data export "$out/synth" --split test --styles 2 --out "$out/refs"
refs=()
for f in "$out"/refs/*.png; do refs+=(--style-image "$f"); done
"$trainer" generate --pipeline configs/tiny/pipeline.yaml --dit "$out/runs/dit/final" \
  --ar "$out/runs/ar/final" "${refs[@]}" --prompt "a large circle" \
  --prompt "two stars and a small heart" --out "$out/generate-refs" --grid

echo "done: contact sheets $out/generate/grid.png (codes), $out/generate-refs/grid.png" \
  "(references), $out/eval/grid.png and $out/grid.png (data); report $out/eval/report.md"
