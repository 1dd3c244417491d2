"""The PyTorch + transformers reference of scripts/gpu-check.sh: the plain training loop of the
SST-2 recipe (random batches) on any device.

    python scripts/reference/sst2_pytorch_gpu.py train BASE_MODEL_DIR --seed 42
    python scripts/reference/sst2_pytorch_gpu.py predict FINE_TUNED_DIR
    python scripts/reference/sst2_pytorch_gpu.py train BASE_MODEL_DIR --device cuda --train-rows 67349 --bf16

--device, --train-rows and --bf16: the same loop on a GPU, on all of SST-2's training rows,
with bfloat16 autocast (PyTorch's mixed precision; master weights and optimizer state stay
f32). The CPU benchmark's peers (grouped batches, ONNX Runtime) are in sst2_pytorch.py; this
copy keeps gpu-check.sh's interface while that one changed, and the two should become one
script with a --device option.

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


def predict(model, tokenizer, texts, device="cpu"):
    out = []
    with torch.no_grad():
        for b in range(0, len(texts), 64):
            batch = tokenizer(texts[b : b + 64], padding=True, truncation=True, max_length=64, return_tensors="pt")
            out.extend(model(**batch.to(device)).logits.argmax(-1).tolist())
    return out


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_fields(device):
    """What the JSON says about the device: its name and, on a GPU, peak GPU memory."""
    if device.type != "cuda":
        return {"device": str(device)}
    return {
        "device": f"{device} ({torch.cuda.get_device_name(device)})",
        "gpu_peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
    }


def predict_command(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    device = torch.device(args.device)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval().to(device)
    texts = prediction_set(args.extra_rows)
    predict(model, tokenizer, texts[:64], device)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    predictions = predict(model, tokenizer, texts, device)
    synchronize(device)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "rows": len(texts),
        "seconds": seconds,
        "examples_per_second": len(texts) / seconds,
        "labels": [model.config.id2label[p] for p in predictions],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **device_fields(device),
    }))


def train_command(args):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    texts, labels = read_tsv(ROOT / "data/sst2/train.tsv", "sentence")
    train_texts, train_labels = texts[: args.train_rows], labels[: args.train_rows]
    dev_texts, dev_labels = read_tsv(ROOT / "data/sst2/dev.tsv", "content")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    device = torch.device(args.device)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2).to(device)
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
        targets = torch.tensor([train_labels[i] for i in idx])
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(**batch.to(device), labels=targets.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    synchronize(device)
    train_seconds = time.perf_counter() - start

    model.eval()
    dev_predictions = predict(model, tokenizer, dev_texts, device)
    accuracy = sum(p == l for p, l in zip(dev_predictions, dev_labels)) / len(dev_labels)
    print(json.dumps({
        "seed": args.seed,
        "train_seconds": train_seconds,
        "train_examples_per_second": len(encoded) / train_seconds,
        "train_real_tokens_per_second": real / train_seconds,
        "real_tokens": real,
        "padded_tokens": padded,
        "dev_accuracy": accuracy,
        "dev_labels": dev_predictions,
        "train_rows": len(encoded),
        "bf16": args.bf16,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        **device_fields(device),
    }))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["train", "predict"])
    parser.add_argument("model")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--extra-rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--train-rows", type=int, default=TRAIN_ROWS, help="first rows of train.tsv to train on")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (mixed precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "train":
        train_command(args)
    else:
        predict_command(args)


if __name__ == "__main__":
    main()
