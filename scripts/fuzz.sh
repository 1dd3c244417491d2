#!/usr/bin/env bash
# Fuzzes the data reader, the config parser, the wheel unpacker, the PyTorch checkpoint reader
# and config.json with cargo-fuzz (libFuzzer + AddressSanitizer) for SECONDS each (default 60),
# and prints each target's executions and crashes.
#
#   scripts/fuzz.sh 600
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags. Crashing
# inputs are left in fuzz/artifacts/TARGET/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1

# Seed corpora from the repository's own files.
mkdir -p fuzz/corpus/data_reader fuzz/corpus/config
for f in data/smoke/train.csv; do printf '\x00' | cat - "$f" > "fuzz/corpus/data_reader/csv-$(basename "$f")"; done
head -50 data/sst2/dev.tsv | { printf '\x01'; sed 's/content/text/'; } > fuzz/corpus/data_reader/tsv-dev
printf '\x0a{"text":"a","label":1}\n{"text":"b","label":"x"}\n' > fuzz/corpus/data_reader/jsonl
for f in configs/*.toml; do cp "$f" "fuzz/corpus/config/$(basename "$f")"; done
# Small model wheels, one stored and one deflated, with a sub-folder and a dist-info.
mkdir -p fuzz/corpus/wheel
python3 - << 'EOF'
import zipfile
for name, method in [("stored", zipfile.ZIP_STORED), ("deflated", zipfile.ZIP_DEFLATED)]:
    with zipfile.ZipFile(f"fuzz/corpus/wheel/{name}.whl", "w", method) as z:
        z.writestr("pkg/__init__.py", "")
        z.writestr("pkg/model/config.json", '{"model_type": "bert", "hidden_size": 4}')
        z.writestr("pkg/model/model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        z.writestr("pkg/model/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
        z.writestr("pkg/model/1_Pooling/config.json", "{}")
        z.writestr("pkg-0.1.dist-info/METADATA", "Name: pkg\nVersion: 0.1\n")
EOF

mkdir -p fuzz/corpus/pickle fuzz/corpus/config_json
printf '\x01' | cat - tests/fixtures/tiny-bert-bin/pytorch_model.bin > fuzz/corpus/pickle/archive
{ printf '\x00'; unzip -p tests/fixtures/tiny-bert-bin/pytorch_model.bin '*/data.pkl'; } > fuzz/corpus/pickle/data.pkl
for f in tests/fixtures/*/config.json; do cp "$f" "fuzz/corpus/config_json/$(basename "$(dirname "$f")").json"; done

status=0
for target in data_reader config wheel pickle config_json; do
  log="fuzz/fuzz-$target.log"
  if cargo fuzz run "$target" --fuzz-dir fuzz -- -max_total_time="$seconds" -print_final_stats=1 > "$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  crashes=$(ls "fuzz/artifacts/$target" 2>/dev/null | wc -l)
  echo "$target: $result, $execs executions in ${seconds}s, $crashes crash artifact(s) (log: $log)"
done
exit $status
