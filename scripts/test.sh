#!/usr/bin/env bash
# The test command (README): every crate's unit and integration tests on CPU. Tiny configs,
# seconds each, no network, no downloaded weights.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked "$@"
