"""The PyTorch + transformers and ONNX Runtime side of the benchmark (benches/compare.rs runs it).

    python scripts/reference/sst2_pytorch.py train BASE_MODEL_DIR --seed 42 [--group-by-length] [--bf16]
    python scripts/reference/sst2_pytorch.py train BASE_MODEL_DIR --device cuda --train-rows 67349 [--bf16]
    python scripts/reference/sst2_pytorch.py export FINE_TUNED_DIR OUT_DIR
    python scripts/reference/sst2_pytorch.py predict FINE_TUNED_DIR --input PREDICT.tsv --output OUT.tsv \
        [--engine torch|onnx --onnx MODEL.onnx]

train: the SST-2 recipe of configs/sentiment.toml as a plain PyTorch loop (no Trainer
overhead): the first 8,000 rows of data/sst2/train.tsv, 1 epoch, batch 32, max length 64, AdamW
lr 5e-5 (weight decay 0.01, not on biases and LayerNorm weights), 10% linear warmup then linear
decay, gradient norm clipped at 1.0, each batch padded to its longest member; then accuracy on
data/sst2/dev.tsv. Batches are random (Python's `random.shuffle`), or with --group-by-length
exactly the batches bertcls trains on (`epoch_batches` of src/train/dataset.rs, ported below
with bertcls' SplitMix64 generator: shuffle, sort longest first within mega-batches of 50
batches, longest batch first, the others shuffled again; Trainer's `group_by_length`).
--bf16 runs the forward pass and the loss under `torch.autocast(DEVICE, dtype=torch.bfloat16)`
(f32 master weights, gradients and AdamW state), and the dev evaluation too, as Trainer's
`bf16=True` does. --device runs it all on a GPU (scripts/gpu-check.sh), --train-rows trains on
more rows (67,349: all of them); the JSON then has the device, its peak memory and the dev
labels.

export: the fine-tuned model to ONNX with `torch.onnx.export` (dynamic batch and sequence
axes), then `onnxruntime.quantization.quantize_dynamic` with QInt8 weights: OUT_DIR/model.onnx
and OUT_DIR/model.int8.onnx.

predict: the predictions of a fine-tuned model (one bertcls trained, so every engine scores
the same model) for the text column of --input, written to --output (text, label), in the
order and the forward passes `bertcls predict --batch-size 64` uses (src/infer/mod.rs): chunks
of 4,096 rows, each sorted longest first (a stable sort), cut into passes of at most 64 rows by
`plan_passes` (padding plus 32 tokens a pass, minimised). No warm-up: as a user's command.
`model_seconds` is the forward passes alone (the model call and the argmax); `seconds` is
everything after the model is loaded (reading, tokenizing, padding, the model, writing), as
`bertcls predict --json` reports. `--engine torch --device cuda` predicts on a GPU (the time
then waits for the GPU; the JSON has the labels). Every engine tokenizes with the model's tokenizer.json
(`tokenizers`, truncation at 64, as AutoTokenizer's fast tokenizer); the ONNX engine imports
neither torch nor transformers.

2 threads everywhere (torch.set_num_threads, ORT intra_op_num_threads). Each command prints
one JSON object.
"""

import argparse
import csv
import inspect
import json
import math
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN_ROWS = 8000
MAX_LENGTH = 64


def read_tsv(path, column):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[column] for r in rows], [int(r["label"]) for r in rows]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# bertcls' random numbers (src/rng.rs) and batches (src/train/dataset.rs), exactly.
MASK = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
STREAM_SHUFFLE = 3


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class Rng:
    def __init__(self, seed, stream):
        self.state = mix64(seed ^ mix64((stream * GOLDEN_GAMMA) & MASK))

    def next_u64(self):
        self.state = (self.state + GOLDEN_GAMMA) & MASK
        return mix64(self.state)

    def below(self, n):
        threshold = ((-n) & MASK) % n
        while True:
            m = self.next_u64() * n
            if (m & MASK) >= threshold:
                return m >> 64

    def shuffle(self, items, start=0):
        """Fisher-Yates over items[start:], in place."""
        for i in range(len(items) - start - 1, 0, -1):
            j = self.below(i + 1)
            items[start + i], items[start + j] = items[start + j], items[start + i]


def epoch_batches(lengths, batch_size, seed, epoch, group_by_length):
    rng = Rng(seed, STREAM_SHUFFLE ^ ((epoch + 1) << 8))
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = batch_size * 50
        for s in range(0, len(order), mega):
            order[s : s + mega] = sorted(order[s : s + mega], key=lambda i: -lengths[i])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length and len(batches) > 1:
        longest, most = 0, -1
        for b, batch in enumerate(batches):  # Rust's max_by_key: the last of equal maxima
            m = max(lengths[i] for i in batch)
            if m >= most:
                longest, most = b, m
        batches[0], batches[longest] = batches[longest], batches[0]
        rng.shuffle(batches, 1)
    return batches


def plan_passes(lengths, max_rows, max_tokens=1 << 17, pass_cost=32):
    """src/infer/mod.rs's plan_passes: pass sizes over `lengths` (longest first)."""
    n = len(lengths)
    best = [(0, 0)] * (n + 1)
    for i in range(n - 1, -1, -1):
        longest = max(lengths[i], 1)
        choice = (float("inf"), 1)
        for rows in range(1, min(max(max_rows, 1), n - i) + 1):
            if rows > 1 and rows * longest > max_tokens:
                break
            cost = pass_cost + rows * longest + best[i + rows][0]
            if cost <= choice[0]:
                choice = (cost, rows)
        best[i] = choice
    passes, i = [], 0
    while i < n:
        passes.append(best[i][1])
        i += best[i][1]
    return passes


def predict_file_order(model, tokenizer, texts, device, bf16=False):
    """Labels in file order, batch 64 (the dev evaluation after training)."""
    import torch

    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for b in range(0, len(texts), 64):
            batch = tokenizer(texts[b : b + 64], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            out.extend(model(**batch.to(device)).logits.argmax(-1).tolist())
    return out


def synchronize(device):
    """Waits for the GPU, so that a time covers its work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_fields(device):
    """What the JSON says about the device: on a GPU its name and peak GPU memory."""
    import torch

    if device.type != "cuda":
        return {}
    return {
        "device": f"{device} ({torch.cuda.get_device_name(device)})",
        "gpu_peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
    }


def train_command(args):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    texts, labels = read_tsv(ROOT / "data/sst2/train.tsv", "sentence")
    train_texts, train_labels = texts[: args.train_rows], labels[: args.train_rows]
    dev_texts, dev_labels = read_tsv(ROOT / "data/sst2/dev.tsv", "content")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    device = torch.device(args.device)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2).to(device)
    encoded = tokenizer(train_texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]

    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=5e-5
    )
    if args.group_by_length:
        batches = epoch_batches([len(e) for e in encoded], 32, args.seed, 0, True)
    else:
        order = list(range(len(encoded)))
        random.shuffle(order)
        batches = [order[b : b + 32] for b in range(0, len(order), 32)]
    if args.batches_out:
        Path(args.batches_out).write_text(json.dumps({"lengths": [len(e) for e in encoded], "batches": batches}))
    steps = len(batches)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    real = padded = 0
    model.train()
    start = time.perf_counter()
    for idx in batches:
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
        real += int(batch["attention_mask"].sum())
        padded += batch["input_ids"].numel()
        targets = torch.tensor([train_labels[i] for i in idx])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(**batch.to(device), labels=targets.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    synchronize(device)
    train_seconds = time.perf_counter() - start

    model.eval()
    dev_predictions = predict_file_order(model, tokenizer, dev_texts, device, args.bf16)
    accuracy = sum(p == l for p, l in zip(dev_predictions, dev_labels)) / len(dev_labels)
    print(json.dumps({
        "seed": args.seed,
        "group_by_length": args.group_by_length,
        "bf16": args.bf16,
        "train_seconds": train_seconds,
        "train_examples_per_second": len(encoded) / train_seconds,
        "train_real_tokens_per_second": real / train_seconds,
        "real_tokens": real,
        "padded_tokens": padded,
        "dev_accuracy": accuracy,
        "dev_labels": dev_predictions,
        "train_rows": len(encoded),
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **device_fields(device),
    }))


def export_command(args):
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    sample = tokenizer(["a short example", "and a somewhat longer second example sentence"], padding=True, return_tensors="pt")
    # The graph's inputs follow forward()'s signature, not the order of the tokenizer's keys:
    # named in another order, attention_mask and token_type_ids would be swapped.
    names = [n for n in inspect.signature(model.forward).parameters if n in sample]

    def export(**options):
        start = time.perf_counter()
        torch.onnx.export(
            model,
            (),
            str(out / "model.onnx"),
            kwargs={n: sample[n] for n in names},
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            **options,
        )
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        quantize_dynamic(str(out / "model.onnx"), str(out / "model.int8.onnx"), weight_type=QuantType.QInt8)
        return export_seconds, time.perf_counter() - start

    try:
        export_seconds, quantize_seconds = export()
        exporter = "default"
    except Exception as e:
        # The dynamo exporter of torch 2.11 (the GPU machine's, 2026-11-26) wrote a graph whose
        # stored shapes quantize_dynamic's shape inference rejects ("Inferred shape and
        # existing shape differ"); the TorchScript exporter's graph quantizes.
        if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
            raise
        print(f"export: {type(e).__name__}: {e}; exporting again with dynamo=False", file=sys.stderr)
        export_seconds, quantize_seconds = export(dynamo=False)
        exporter = "torchscript"
    # The exported graph against the eager model, at shapes other than the traced ones.
    import onnxruntime as ort

    check = tokenizer(
        ["one", "a longer check of the dynamic axes", "three texts, and not the length traced above either"],
        padding=True,
        return_tensors="np",
    )
    diffs = {}
    for path in ["model.onnx", "model.int8.onnx"]:
        session = ort.InferenceSession(str(out / path), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {n: check[n] for n in names})[0]
        with torch.no_grad():
            want = model(**{n: torch.from_numpy(check[n]) for n in names}).logits.numpy()
        diffs[path] = float(abs(got - want).max())
    print(json.dumps({
        "inputs": names,
        "max_abs_logit_difference_fp32": diffs["model.onnx"],
        "max_abs_logit_difference_int8": diffs["model.int8.onnx"],
        "exporter": exporter,
        "export_seconds": export_seconds,
        "quantize_seconds": quantize_seconds,
        "onnx_mb": sum(p.stat().st_size for p in out.glob("model.onnx*")) / 1e6,
        "int8_mb": (out / "model.int8.onnx").stat().st_size / 1e6,
        "torch": torch.__version__,
    }))


def predict_command(args):
    import numpy as np
    from tokenizers import Tokenizer

    model_dir = Path(args.model)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.no_padding()
    pad = json.loads((model_dir / "tokenizer_config.json").read_text()).get("pad_token", "[PAD]")
    pad_id = tokenizer.token_to_id(pad if isinstance(pad, str) else pad["content"])
    id2label = {int(k): v for k, v in json.loads((model_dir / "config.json").read_text())["id2label"].items()}
    if args.engine == "torch":
        import torch
        from transformers import AutoModelForSequenceClassification

        torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        model = AutoModelForSequenceClassification.from_pretrained(args.model).eval().to(device)
        version = {"torch": torch.__version__, **device_fields(device)}

        def run(feed):
            # .tolist() waits for the GPU, so the pass's time includes its work.
            with torch.no_grad():
                feed = {k: torch.from_numpy(v).to(device) for k, v in feed.items()}
                return model(**feed).logits.argmax(-1).tolist()
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        version = {"onnxruntime": ort.__version__}

        def run(feed):
            return session.run(["logits"], {n: feed[n] for n in names})[0].argmax(-1).tolist()

    start = time.perf_counter()
    with open(args.input, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [r[args.text_column] for r in rows]
    labels = [None] * len(texts)
    passes = []
    model_seconds = 0.0
    for c in range(0, len(texts), 4096):  # bertcls predict's chunks
        chunk = texts[c : c + 4096]
        encoded = tokenizer.encode_batch(chunk)
        ids, types = [e.ids for e in encoded], [e.type_ids for e in encoded]
        order = sorted(range(len(chunk)), key=lambda i: -len(ids[i]))
        at = 0
        for rows_in_pass in plan_passes([len(ids[i]) for i in order], args.batch_size):
            idx = order[at : at + rows_in_pass]
            at += rows_in_pass
            width = max(len(ids[i]) for i in idx)
            feed = {
                "input_ids": np.full((len(idx), width), pad_id, dtype=np.int64),
                "attention_mask": np.zeros((len(idx), width), dtype=np.int64),
                "token_type_ids": np.zeros((len(idx), width), dtype=np.int64),
            }
            for r, i in enumerate(idx):
                n = len(ids[i])
                feed["input_ids"][r, :n] = ids[i]
                feed["attention_mask"][r, :n] = 1
                feed["token_type_ids"][r, :n] = types[i]
            began = time.perf_counter()
            predicted = run(feed)
            model_seconds += time.perf_counter() - began
            for i, p in zip(idx, predicted):
                labels[c + i] = id2label[p]
            passes.append([c + i for i in idx])
    with open(args.output, "w") as f:
        f.write("text\tlabel\n")
        for text, label in zip(texts, labels):
            f.write(f"{text}\t{label}\n")
    seconds = time.perf_counter() - start
    if args.passes_out:
        Path(args.passes_out).write_text(json.dumps(passes))
    print(json.dumps({
        "engine": args.engine if args.engine == "torch" else Path(args.onnx).name,
        "rows": len(texts),
        "passes": len(passes),
        "model_seconds": model_seconds,
        "model_examples_per_second": len(texts) / model_seconds,
        "seconds": seconds,
        "examples_per_second": len(texts) / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "torch_imported": "torch" in sys.modules,
        **version,
    }))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["train", "export", "predict"])
    parser.add_argument("model")
    parser.add_argument("out_dir", nargs="?", help="export: where model.onnx and model.int8.onnx go")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--group-by-length", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--device", default="cpu", help="train, predict --engine torch: cpu, cuda or cuda:N")
    parser.add_argument("--train-rows", type=int, default=TRAIN_ROWS, help="train: the first rows of train.tsv")
    parser.add_argument("--batches-out", help="train: write the lengths and batches here (JSON)")
    parser.add_argument("--input", help="predict: a TSV with a text column")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--output", help="predict: the TSV to write (text, label)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--onnx", help="predict --engine onnx: the .onnx file")
    parser.add_argument("--passes-out", help="predict: write each forward pass's row numbers here (JSON)")
    args = parser.parse_args()
    if args.command == "train":
        train_command(args)
    elif args.command == "export":
        export_command(args)
    else:
        predict_command(args)


if __name__ == "__main__":
    main()
