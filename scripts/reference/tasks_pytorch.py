"""The PyTorch + transformers side of the multi-label and regression recipes.

    python scripts/reference/tasks_pytorch.py goemotions BASE_MODEL_DIR --pos-weight balanced
    python scripts/reference/tasks_pytorch.py stsb BASE_MODEL_DIR --epochs 3

A plain PyTorch loop (no Trainer), as sst2_pytorch.py: batch 32 of randomly shuffled rows (a new
order each epoch), each batch padded to its longest member, AdamW (weight decay 0.01, not on
biases and LayerNorm weights), 10% linear warmup then linear decay, gradient norm clipped at 1.0,
dropout on while training.

goemotions: multi-label (problem_type multi_label_classification) on every row of
data/goemotions/train.jsonl (the `labels` column: a JSON list of names; the 28 labels in the order
of labels.txt), max length 64, 1 epoch, lr 1e-4. The loss is transformers' own BCEWithLogitsLoss,
or with `--pos-weight balanced` BCEWithLogitsLoss(pos_weight = negatives / positives of each label
over the training rows; 1 for a label without positives; capped at `--pos-weight-cap` if given).
Then on dev.jsonl: micro, macro, weighted and samples F1, subset accuracy and Hamming loss at
threshold 0.5, and again with one threshold per label chosen on that same dev set (0.05, 0.10,
..., 0.95; the lowest that maximises the label's F1), so the tuned figures are optimistic.

stsb: regression (problem_type regression: MSE on one output) on the sentence pairs of
data/stsb/train.csv, max length 128, 3 epochs, lr 1e-4; then dev Pearson, Spearman (mean ranks
for ties), MSE, RMSE, MAE and R².

Each prints one JSON object: the metrics, training seconds, peak RSS and the load average of the
machine at the start and at the end (training time on a shared machine is inflated).
`--max-train-rows N` / `--max-dev-rows N` keep the first N rows only, for a quick check. The F1
definitions are those of bertcls eval (and scikit-learn's with zero_division=0).
"""

import argparse
import csv
import json
import math
import os
import random
import resource
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

ROOT = Path(__file__).resolve().parents[2]
BATCH = 32
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)]


def load_average():
    return list(os.getloadavg())


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def optimizer_and_schedule(model, lr, steps):
    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    return optimizer, scheduler


def train(model, tokenizer, encoded, targets, args, loss_fn=None):
    """The loop both recipes share. `encoded`: the tokenizer's output per row (a list of dicts);
    `targets`: a float tensor, one row per example. Returns seconds and token counts."""
    per_epoch = math.ceil(len(encoded) / BATCH)
    steps = per_epoch * args.epochs
    optimizer, scheduler = optimizer_and_schedule(model, args.lr, steps)
    real = padded = 0
    losses = []
    model.train()
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = list(range(len(encoded)))
        random.shuffle(order)
        for b in range(per_epoch):
            idx = order[b * BATCH : (b + 1) * BATCH]
            batch = tokenizer.pad([encoded[i] for i in idx], return_tensors="pt")
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
            labels = targets[idx]
            if loss_fn is None:
                loss = model(**batch, labels=labels).loss
            else:
                loss = loss_fn(model(**batch).logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    seconds = time.perf_counter() - start
    tail = losses[-min(50, len(losses)) :]
    return {
        "steps": steps,
        "warmup_steps": math.ceil(0.1 * steps),
        "train_seconds": seconds,
        "train_examples_per_second": len(encoded) * args.epochs / seconds,
        "real_tokens": real,
        "padded_tokens": padded,
        "first_loss": losses[0],
        "mean_loss_last_50_steps": sum(tail) / len(tail),
    }


def logits_of(model, tokenizer, encoded):
    model.eval()
    out = []
    with torch.no_grad():
        for b in range(0, len(encoded), 64):
            batch = tokenizer.pad(encoded[b : b + 64], return_tensors="pt")
            out.append(model(**batch).logits)
    return torch.cat(out)


# ---------------------------------------------------------------- goemotions (multi-label)


def read_goemotions(path, labels):
    ids = {name: i for i, name in enumerate(labels)}
    texts, targets = [], []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            flags = [0.0] * len(labels)
            for name in row["labels"]:
                flags[ids[name]] = 1.0
            texts.append(row["text"])
            targets.append(flags)
    return texts, torch.tensor(targets)


def f1(tp, predicted, actual):
    # 2 tp / (2 tp + fp + fn): 0 when there is nothing to find and nothing found.
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


def multi_label_report(truth, predicted):
    """truth, predicted: bool tensors [examples, labels]."""
    tp = (truth & predicted).sum(0).tolist()
    actual = truth.sum(0).tolist()
    chosen = predicted.sum(0).tolist()
    per_label = [f1(t, c, a) for t, c, a in zip(tp, chosen, actual)]
    row_tp = (truth & predicted).sum(1).tolist()
    row_f1 = [f1(t, c, a) for t, c, a in zip(row_tp, predicted.sum(1).tolist(), truth.sum(1).tolist())]
    return {
        "micro_f1": f1(sum(tp), sum(chosen), sum(actual)),
        "macro_f1": sum(per_label) / len(per_label),
        "weighted_f1": sum(f * a for f, a in zip(per_label, actual)) / sum(actual) if sum(actual) else 0.0,
        "samples_f1": sum(row_f1) / len(row_f1),
        "subset_accuracy": (truth == predicted).all(1).float().mean().item(),
        "hamming_loss": (truth != predicted).float().mean().item(),
        "per_label_f1": per_label,
    }


def goemotions_command(args):
    labels = (ROOT / "data/goemotions/labels.txt").read_text().split()
    texts, targets = read_goemotions(ROOT / "data/goemotions/train.jsonl", labels)
    if args.max_train_rows:
        texts, targets = texts[: args.max_train_rows], targets[: args.max_train_rows]
    dev_texts, dev_targets = read_goemotions(ROOT / "data/goemotions/dev.jsonl", labels)
    if args.max_dev_rows:
        dev_texts, dev_targets = dev_texts[: args.max_dev_rows], dev_targets[: args.max_dev_rows]

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model,
        num_labels=len(labels),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    encode = lambda t: _rows(tokenizer(t, truncation=True, max_length=64))
    encoded, dev_encoded = encode(texts), encode(dev_texts)

    positives = targets.sum(0)
    negatives = len(targets) - positives
    loss_fn, pos_weight = None, None
    if args.pos_weight == "balanced":
        # A label without a positive row gets weight 1 (no information to balance on).
        pos_weight = torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones_like(positives))
        if args.pos_weight_cap is not None:
            pos_weight = pos_weight.clamp(max=args.pos_weight_cap)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    result = {"task": "goemotions", "train_rows": len(encoded), "dev_rows": len(dev_encoded)}
    result.update(train(model, tokenizer, encoded, targets, args, loss_fn))

    logits = logits_of(model, tokenizer, dev_encoded)
    probabilities = torch.sigmoid(logits)
    truth = dev_targets.bool()
    at_half = multi_label_report(truth, probabilities >= 0.5)
    dev_bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, dev_targets).item()

    # One threshold per label, the lowest of THRESHOLDS that maximises its F1 on dev.
    tuned = []
    for l in range(len(labels)):
        actual = int(truth[:, l].sum())
        scores = []
        for t in THRESHOLDS:
            chosen = probabilities[:, l] >= t
            scores.append(f1(int((chosen & truth[:, l]).sum()), int(chosen.sum()), actual))
        tuned.append(THRESHOLDS[scores.index(max(scores))])
    at_tuned = multi_label_report(truth, probabilities >= torch.tensor(tuned))

    result.update({
        "pos_weight": args.pos_weight,
        "pos_weight_cap": args.pos_weight_cap,
        "pos_weight_values": None if pos_weight is None else dict(zip(labels, pos_weight.tolist())),
        "train_positives": dict(zip(labels, [int(p) for p in positives.tolist()])),
        "dev_bce": dev_bce,
        "threshold_0.5": {k: v for k, v in at_half.items() if k != "per_label_f1"},
        "per_label_f1_threshold_0.5": dict(zip(labels, at_half["per_label_f1"])),
        "tuned_thresholds": {
            "tuned_on": "dev: the same rows these metrics are measured on, so optimistic",
            "candidates": THRESHOLDS,
            "thresholds": dict(zip(labels, tuned)),
            **{k: v for k, v in at_tuned.items() if k != "per_label_f1"},
            "per_label_f1": dict(zip(labels, at_tuned["per_label_f1"])),
        },
    })
    return result


def _rows(encoding):
    """The tokenizer's batch output as one dict per row."""
    keys = list(encoding.keys())
    return [{k: encoding[k][i] for k in keys} for i in range(len(encoding["input_ids"]))]


# ---------------------------------------------------------------- stsb (regression)


def read_stsb(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], [float(r["score"]) for r in rows]


def pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def ranks(x):
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    out = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def regression_report(truth, predicted):
    n = len(truth)
    errors = [p - t for p, t in zip(predicted, truth)]
    mse = sum(e * e for e in errors) / n
    mean = sum(truth) / n
    return {
        "pearson": pearson(truth, predicted),
        "spearman": pearson(ranks(truth), ranks(predicted)),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": sum(abs(e) for e in errors) / n,
        "r2": 1 - sum(e * e for e in errors) / sum((t - mean) ** 2 for t in truth),
    }


def stsb_command(args):
    first, second, scores = read_stsb(ROOT / "data/stsb/train.csv")
    if args.max_train_rows:
        first, second, scores = first[: args.max_train_rows], second[: args.max_train_rows], scores[: args.max_train_rows]
    dev_first, dev_second, dev_scores = read_stsb(ROOT / "data/stsb/dev.csv")
    if args.max_dev_rows:
        dev_first, dev_second, dev_scores = (c[: args.max_dev_rows] for c in (dev_first, dev_second, dev_scores))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, problem_type="regression")
    encode = lambda a, b: _rows(tokenizer(a, b, truncation=True, max_length=128))
    encoded, dev_encoded = encode(first, second), encode(dev_first, dev_second)

    result = {"task": "stsb", "train_rows": len(encoded), "dev_rows": len(dev_encoded)}
    # transformers' own loss: MSELoss()(logits.squeeze(), labels.squeeze()).
    result.update(train(model, tokenizer, encoded, torch.tensor(scores), args))
    predicted = logits_of(model, tokenizer, dev_encoded).squeeze(-1).tolist()
    result["dev"] = regression_report(dev_scores, predicted)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["goemotions", "stsb"])
    parser.add_argument("model")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pos-weight", choices=["none", "balanced"], default="none")
    parser.add_argument("--pos-weight-cap", type=float)
    parser.add_argument("--max-train-rows", type=int, help="the first N training rows only (a quick check)")
    parser.add_argument("--max-dev-rows", type=int, help="the first N dev rows only (a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = 1 if args.command == "goemotions" else 3
    if args.command == "stsb" and args.pos_weight != "none":
        parser.error("--pos-weight is for goemotions")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    load_at_start = load_average()
    result = (goemotions_command if args.command == "goemotions" else stsb_command)(args)
    print(json.dumps({
        **result,
        "model": str(args.model),
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": BATCH,
        "threads": args.threads,
        "load_average_start": load_at_start,
        "load_average_end": load_average(),
        "peak_rss_mb": peak_rss_mb(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
