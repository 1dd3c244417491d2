#!/usr/bin/env bash
# Trains the task recipes whose figures the README's Results give, one after the other, and
# prints one JSON line of figures per run (also in runs/NAME/recipe.json):
#
#   scripts/task-recipes.sh                     # all of them, about 45 minutes on 2 cores
#   scripts/task-recipes.sh emotions trec       # some
#
#   similarity           configs/similarity.toml (STS-B, regression on sentence pairs)
#   emotions             configs/emotions.toml (GoEmotions, multi-label, balanced pos_weight,
#                        thresholds tuned on 10% of train held out), then dev measured by
#                        `bertcls eval` with the tuned thresholds and at 0.5
#   emotions-unweighted  the same with class_weights = "none": what pos_weight adds
#   trec                 configs/trec.toml as it is
#   trec-balanced        the same with class_weights = "balanced"
#
# Figures are the validation set's (eval_results.json), and for the GoEmotions runs also dev's.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin bertcls
mkdir -p runs

recipe() {
  case "$1" in
    similarity) echo "configs/similarity.toml" ;;
    emotions) echo "configs/emotions.toml" ;;
    emotions-unweighted) echo "configs/emotions.toml --set class_weights=\"none\"" ;;
    trec) echo "configs/trec.toml" ;;
    trec-balanced) echo "configs/trec.toml --set class_weights=\"balanced\"" ;;
    *) echo "unknown recipe $1" >&2; exit 2 ;;
  esac
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(similarity emotions emotions-unweighted trec trec-balanced)
for name in "${names[@]}"; do
  # shellcheck disable=SC2046 # the recipe is a config and its --set flags
  target/release/bertcls train --config $(recipe "$name") --output-dir "runs/$name" \
    --overwrite-output-dir >"runs/$name.log" 2>&1 || { tail -3 "runs/$name.log"; exit 1; }
  if [[ $name == emotions* ]]; then
    for threshold in tuned 0.5; do
      flag=(); [ "$threshold" = tuned ] || flag=(--threshold "$threshold")
      target/release/bertcls eval --model "runs/$name" --data data/goemotions/dev.jsonl \
        --label-column labels --json "${flag[@]}" >"runs/$name/dev-$threshold.json" 2>>"runs/$name.log"
    done
  fi
  python3 - "$name" <<'PY' | tee "runs/$name/recipe.json"
import json, sys
name = sys.argv[1]
run = f"runs/{name}"
results = json.load(open(f"{run}/all_results.json"))
state = json.load(open(f"{run}/trainer_state.json"))
keys = ["eval_accuracy", "eval_macro_f1", "eval_micro_f1", "eval_pearson", "eval_spearman", "eval_mse"]
out = {"recipe": name, **{k: round(results[k], 4) for k in keys if k in results}}
best = state.get("best_report") or {}
if "thresholds" in results:
    out["validation_at_0.5"] = {k: round(best[k], 4) for k in ("macro_f1", "micro_f1") if k in best}
for threshold in ("tuned", "0.5"):
    try:
        dev = json.load(open(f"{run}/dev-{threshold}.json"))
    except FileNotFoundError:
        continue
    out[f"dev_{threshold}"] = {k: round(dev[k], 4) for k in ("macro_f1", "micro_f1", "subset_accuracy")}
out["train_runtime_s"] = round(results["train_runtime"], 1)
out["peak_rss_mb"] = round(results.get("peak_rss_mb") or 0)
out["global_step"] = results["global_step"]
print(json.dumps(out))
PY
done
