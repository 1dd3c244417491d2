"""The PyTorch + transformers side of the benchmark (benches/compare.rs runs it).

    python scripts/reference/sst2_pytorch.py train BASE_MODEL_DIR --seed 42
    python scripts/reference/sst2_pytorch.py predict FINE_TUNED_DIR

train: the SST-2 recipe of configs/sentiment.toml as a plain PyTorch loop (no Trainer
overhead): the first 8,000 rows of data/sst2/train.tsv, shuffled, 1 epoch, batch 32, max length
64, AdamW lr 5e-5 (weight decay 0.01, not on biases and LayerNorm weights), 10% linear warmup
then linear decay, gradient norm clipped at 1.0, each batch padded to its longest member; then
accuracy on data/sst2/dev.tsv.

predict: the predictions of a fine-tuned model (one bertcls trained, so both sides score the
same model) over the prediction set, in file order, batch 64, and their throughput. The set is
dev.tsv followed by the training rows after the first 8,000 (the test split is not in data/).

Each prints one JSON object.
"""

import argparse
import csv
import json
import math
import random
import resource
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

ROOT = Path(__file__).resolve().parents[2]


def read_tsv(path, column):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[column] for r in rows], [int(r["label"]) for r in rows]


TRAIN_ROWS = 8000


def prediction_set(extra_rows):
    dev_texts, _ = read_tsv(ROOT / "data/sst2/dev.tsv", "content")
    texts, _ = read_tsv(ROOT / "data/sst2/train.tsv", "sentence")
    return dev_texts + texts[TRAIN_ROWS : TRAIN_ROWS + extra_rows]


def predict(model, tokenizer, texts):
    out = []
    with torch.no_grad():
        for b in range(0, len(texts), 64):
            batch = tokenizer(texts[b : b + 64], padding=True, truncation=True, max_length=64, return_tensors="pt")
            out.extend(model(**batch).logits.argmax(-1).tolist())
    return out


def predict_command(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    texts = prediction_set(args.extra_rows)
    predict(model, tokenizer, texts[:64])  # warm-up
    start = time.perf_counter()
    predictions = predict(model, tokenizer, texts)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "rows": len(texts),
        "seconds": seconds,
        "examples_per_second": len(texts) / seconds,
        "labels": [model.config.id2label[p] for p in predictions],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def train_command(args):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    texts, labels = read_tsv(ROOT / "data/sst2/train.tsv", "sentence")
    train_texts, train_labels = texts[:TRAIN_ROWS], labels[:TRAIN_ROWS]
    dev_texts, dev_labels = read_tsv(ROOT / "data/sst2/dev.tsv", "content")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    encoded = tokenizer(train_texts, truncation=True, max_length=64)["input_ids"]

    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=5e-5
    )
    steps = math.ceil(len(encoded) / 32)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    order = list(range(len(encoded)))
    random.shuffle(order)
    real = padded = 0
    model.train()
    start = time.perf_counter()
    for b in range(steps):
        idx = order[b * 32 : (b + 1) * 32]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
        real += int(batch["attention_mask"].sum())
        padded += batch["input_ids"].numel()
        loss = model(**batch, labels=torch.tensor([train_labels[i] for i in idx])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    train_seconds = time.perf_counter() - start

    model.eval()
    dev_predictions = predict(model, tokenizer, dev_texts)
    accuracy = sum(p == l for p, l in zip(dev_predictions, dev_labels)) / len(dev_labels)
    print(json.dumps({
        "seed": args.seed,
        "train_seconds": train_seconds,
        "train_examples_per_second": len(encoded) / train_seconds,
        "train_real_tokens_per_second": real / train_seconds,
        "real_tokens": real,
        "padded_tokens": padded,
        "dev_accuracy": accuracy,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["train", "predict"])
    parser.add_argument("model")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--extra-rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "train":
        train_command(args)
    else:
        predict_command(args)


if __name__ == "__main__":
    main()
