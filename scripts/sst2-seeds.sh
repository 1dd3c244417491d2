#!/usr/bin/env bash
# Runs the SST-2 recipe of configs/sentiment.toml once per seed and prints one line each:
# dev accuracy, training time, throughput and peak memory (from the run's all_results.json).
#
#   scripts/sst2-seeds.sh            # seeds 42 43 44
#   scripts/sst2-seeds.sh 1 2 3      # other seeds
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(42 43 44)
printf '%-6s %-10s %-10s %-12s %-10s\n' seed accuracy train_s examples/s peak_MB
for seed in "${seeds[@]}"; do
  out="runs/sentiment-seed$seed"
  ./target/release/bertcls train --config configs/sentiment.toml --seed "$seed" \
    --output-dir "$out" --overwrite-output-dir > "$out.log" 2>&1 || { tail -3 "$out.log"; exit 1; }
  python3 - "$out/all_results.json" "$seed" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<6} {r['eval_accuracy']:<10.4f} {r['train_runtime']:<10.1f} "
      f"{r['train_samples_per_second']:<12.1f} {r['peak_rss_mb']:<10.0f}")
PY
done
