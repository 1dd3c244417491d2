"""Writes the parity fixtures under tests/fixtures/ with PyTorch + transformers.

    python="$(scripts/reference/setup.sh)"
    "$python" scripts/reference/make_fixtures.py [--only tasks]

A tiny random BertForSequenceClassification (2 layers, hidden 32, 4 heads, a few hundred
WordPieces, 3 labels) saved as transformers saves it, a padded batch, and what transformers
computes from them: hidden states, pooled output, logits, loss, every gradient, the parameters
after 3 AdamW steps with warmup + linear decay, a 20-step training trajectory, and (write_tasks;
alone with `--only tasks`) the same for weighted CE, BCE and MSE. All float32 but learning rates
(float64). tests/parity.rs cites the line behind each number: keep those lines where they are.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    get_linear_schedule_with_warmup,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures"
MODEL = OUT / "tiny-bert"
MODEL_BIN = OUT / "tiny-bert-bin"

WORDS = """the a an and or but not no very so too of to in on at for with from by as is are was
were be been it this that these those i you he she we they my your his her our their movie film
story plot actor actors acting scene scenes music ending director cast script book show series
good great fun funny fine nice best better well loved love like liked enjoy enjoyed beautiful
brilliant smart moving warm charming clever solid strong bad awful boring dull poor worst worse
weak terrible mess long slow silly stupid flat hate hated never nothing just only even still
really quite more most less much many time times year years people life world way thing things
what who where when why how which do does did done make made makes see seen watch watched feel
felt think thought know knew get got go goes going come comes want one two three first last new
old big small little high low all any some every each other such same own again ever here there
up down out over after before while than then now also about into through""".split()

TEXTS = [
    ["what a fun movie", "i loved it"],
    ["the film was bad", None],
    ["not good , not bad , just boring and long", None],
]
LABELS = [2, 0, 1]

# Batches of the 20-step trajectory: (texts, labels), cycled.
TRAJECTORY = [
    ([["a great story", None], ["the worst film of the year", None]], [2, 0]),
    ([["it was fine", None], ["so dull", "never again"], ["brilliant and warm", None]], [1, 0, 2]),
    ([["the acting was poor but the music was nice", None], ["loved every scene", None]], [1, 2]),
    ([["a mess", None], ["good", "great"]], [0, 2]),
]


def vocabulary():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = specials + list(".,!?'-") + letters + ["##" + c for c in letters] + ["##s", "##ed", "##ing"]
    for word in WORDS:
        if word not in tokens:
            tokens.append(word)
    return tokens


def encode(tokenizer, items):
    encodings = [tokenizer(a, b) if b is not None else tokenizer(a) for a, b in items]
    return tokenizer.pad(encodings, return_tensors="pt")


def grouped_adamw(model, lr):
    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def fresh_model():
    model = BertForSequenceClassification.from_pretrained(MODEL, attn_implementation="eager")
    model.eval()  # dropout off: the numbers must not depend on a random mask
    return model


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for folder in (MODEL, MODEL_BIN):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocabulary())}, do_lower_case=True)
    assert tokenizer.convert_ids_to_tokens(tokenizer("loved it")["input_ids"]) == ["[CLS]", "loved", "it", "[SEP]"]
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.2,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        # Non-trivial LayerNorm weights and biases, so that every term is exercised.
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    model.save_pretrained(MODEL)
    tokenizer.save_pretrained(MODEL)
    # The legacy format: torch.save of the state dict as pytorch_model.bin (transformers 5 no
    # longer writes it), with only a vocab.txt for a tokenizer.
    config.save_pretrained(MODEL_BIN)
    torch.save(model.state_dict(), MODEL_BIN / "pytorch_model.bin")
    (MODEL_BIN / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")

    expected = {}
    batch = encode(tokenizer, TEXTS)
    targets = torch.tensor(LABELS)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        expected[key] = batch[key].to(torch.int64)
    expected["labels"] = targets

    # Forward pass in eval mode, and the gradient of the loss for every parameter.
    model = fresh_model()
    base = model.bert(**batch)
    expected["last_hidden_state"] = base.last_hidden_state.detach()
    expected["pooler_output"] = base.pooler_output.detach()
    out = model(**batch, labels=targets)
    expected["logits"] = out.logits.detach()
    expected["loss"] = out.loss.detach().reshape(1)
    out.loss.backward()
    for name, p in model.named_parameters():
        expected["grad." + name] = p.grad.detach().clone()

    # Three AdamW steps: lr 1e-3, 2 warmup steps of 10, weight decay 0.01 on weights only,
    # gradient norm clipped at 1.0.
    model = fresh_model()
    optimizer = grouped_adamw(model, 1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    adamw_lrs = []
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch, labels=targets).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        adamw_lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    expected["adamw_lrs"] = torch.tensor(adamw_lrs, dtype=torch.float64)
    for name, p in model.named_parameters():
        expected["adamw3." + name] = p.detach().clone()

    # 20 steps over 4 fixed batches: lr 5e-4, 4 warmup steps, the loss before each update.
    model = fresh_model()
    optimizer = grouped_adamw(model, 5e-4)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=4, num_training_steps=20)
    losses, trajectory_lrs = [], []
    for step in range(20):
        texts, step_labels = TRAJECTORY[step % len(TRAJECTORY)]
        optimizer.zero_grad()
        loss = model(**encode(tokenizer, texts), labels=torch.tensor(step_labels)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        losses.append(loss.item())
        trajectory_lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    expected["trajectory_losses"] = torch.tensor(losses, dtype=torch.float32)
    expected["trajectory_lrs"] = torch.tensor(trajectory_lrs, dtype=torch.float64)

    save_file({k: v.contiguous() for k, v in expected.items()}, OUT / "expected.safetensors")
    inputs = {
        "texts": TEXTS,
        "labels": LABELS,
        "trajectory": [{"texts": t, "labels": l} for t, l in TRAJECTORY],
        "adamw": {"lr": 1e-3, "warmup_steps": 2, "total_steps": 10, "weight_decay": 0.01, "max_grad_norm": 1.0},
        "trajectory_optimizer": {"lr": 5e-4, "warmup_steps": 4, "total_steps": 20, "weight_decay": 0.01, "max_grad_norm": 1.0},
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    (OUT / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    print(f"wrote {OUT}: {len(expected)} tensors; loss {out.loss.item():.6f}; losses {losses[0]:.4f} -> {losses[-1]:.4f}")


# The task-loss fixtures, tests/fixtures/tasks.safetensors and tasks.json: the committed tiny
# model, the batch of TEXTS and the AdamW settings of main(), with the loss of each task.
TASKS = OUT / "tasks.safetensors"
CLASS_WEIGHTS = [0.5, 2.0, 1.0]
LABEL_SMOOTHING = 0.1
MULTI_HOT = [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # the third row has no label
POS_WEIGHT = [2.0, 3.0, 0.5]
SCORES = [4.2, 0.5, 2.5]


def weighted_ce(model, batch):
    logits = model(**batch).logits
    weight = torch.tensor(CLASS_WEIGHTS)
    targets = torch.tensor(LABELS)
    return logits, torch.nn.functional.cross_entropy(logits, targets, weight=weight, label_smoothing=LABEL_SMOOTHING)


def bce(model, batch):
    out = model(**batch, labels=torch.tensor(MULTI_HOT))  # transformers' own BCEWithLogitsLoss()
    return out.logits, out.loss


def bce_pos_weight(model, batch):
    logits = model(**batch).logits
    return logits, torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(POS_WEIGHT))(logits, torch.tensor(MULTI_HOT))


def mse(model, batch):
    out = model(**batch, labels=torch.tensor(SCORES))  # transformers' own MSELoss(), on squeeze()
    return out.logits, out.loss


# Each case: its loss, and the from_pretrained arguments beyond the model folder.
TASK_CASES = {
    "weighted_ce": (weighted_ce, {"problem_type": "single_label_classification"}),
    "bce": (bce, {"problem_type": "multi_label_classification"}),
    "bce_pos_weight": (bce_pos_weight, {"problem_type": "multi_label_classification"}),
    "mse": (mse, {"num_labels": 1, "problem_type": "regression", "ignore_mismatched_sizes": True}),
}


def task_model(case):
    if case == "mse":
        torch.manual_seed(1)  # the new 1-output head is random: the same head on every load
    model = BertForSequenceClassification.from_pretrained(MODEL, attn_implementation="eager", **TASK_CASES[case][1])
    model.eval()  # dropout off
    return model


def by_hand(case, logits):
    """Each loss written out in float64: the reduction tasks.json states for it."""
    logits = logits.detach().double()
    if case == "weighted_ce":
        # Rows weighted by w[y] and divided by the sum of w[y]; the smoothing term is weighted
        # by w[c] and divided by that same sum.
        logp, w, y = logits.log_softmax(-1), torch.tensor(CLASS_WEIGHTS).double(), torch.tensor(LABELS)
        eps, k = LABEL_SMOOTHING, logits.shape[1]
        rows = (1 - eps) * w[y] * -logp[torch.arange(len(y)), y] + eps / k * (w * -logp).sum(-1)
        return rows.sum() / w[y].sum()
    if case in ("bce", "bce_pos_weight"):
        # The mean over every (row, label) element, not over rows.
        t = torch.tensor(MULTI_HOT).double()
        pw = torch.tensor(POS_WEIGHT).double() if case == "bce_pos_weight" else torch.ones(t.shape[1]).double()
        logsig = torch.nn.functional.logsigmoid
        return -(pw * t * logsig(logits) + (1 - t) * logsig(-logits)).mean()
    # The mean over rows of the squared error: logits [N, 1] squeezed to [N] against N scores.
    return ((logits.squeeze(-1) - torch.tensor(SCORES).double()) ** 2).mean()


def write_tasks():
    tokenizer = BertTokenizerFast.from_pretrained(MODEL)
    batch = encode(tokenizer, TEXTS)
    reference = load_file(OUT / "expected.safetensors")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(batch[key].to(torch.int64), reference[key]), f"{key} is not main()'s batch"
    tensors, cases = {}, {}
    for case, (loss_of, _) in TASK_CASES.items():
        # The logits, the loss and the gradient of every parameter.
        model = task_model(case)
        if case == "mse":
            tensors["mse.init.classifier.weight"] = model.classifier.weight.detach().clone()
            tensors["mse.init.classifier.bias"] = model.classifier.bias.detach().clone()
        logits, loss = loss_of(model, batch)
        assert abs(loss.item() - by_hand(case, logits).item()) < 1e-5, (case, loss.item(), by_hand(case, logits).item())
        tensors[f"{case}.logits"] = logits.detach().clone()
        tensors[f"{case}.loss"] = loss.detach().reshape(1)
        loss.backward()
        for name, p in model.named_parameters():
            tensors[f"{case}.grad.{name}"] = p.grad.detach().clone()
        cases[case] = {"problem_type": model.config.problem_type, "num_labels": model.config.num_labels}
        cases[case]["loss_value"] = loss.item()

        # Three AdamW steps with this loss, as in main(): lr 1e-3, 2 warmup steps of 10,
        # weight decay 0.01 on weights only, gradient norm clipped at 1.0.
        model = task_model(case)
        optimizer = grouped_adamw(model, 1e-3)
        scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
        for _ in range(3):
            optimizer.zero_grad()
            loss_of(model, batch)[1].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        for name, p in model.named_parameters():
            tensors[f"{case}.adamw3.{name}"] = p.detach().clone()

    cases["weighted_ce"].update(
        targets=LABELS,
        class_weights=CLASS_WEIGHTS,
        label_smoothing=LABEL_SMOOTHING,
        loss="torch.nn.functional.cross_entropy(logits, targets, weight=class_weights, label_smoothing=label_smoothing)",
        reduction="sum_i [(1 - e) w[y_i] (-log p_i[y_i]) + e / K sum_c w[c] (-log p_i[c])] / sum_i w[y_i]",
    )
    cases["bce"].update(
        targets=MULTI_HOT,
        loss="transformers' own: BCEWithLogitsLoss()(logits, targets)",
        reduction="mean over all rows x labels elements of -(t log s(x) + (1 - t) log(1 - s(x)))",
    )
    cases["bce_pos_weight"].update(
        targets=MULTI_HOT,
        pos_weight=POS_WEIGHT,
        loss="torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, targets)",
        reduction="mean over all rows x labels elements of -(pos_weight[c] t log s(x) + (1 - t) log(1 - s(x)))",
    )
    cases["mse"].update(
        targets=SCORES,
        torch_manual_seed_before_from_pretrained=1,
        initial_head=["mse.init.classifier.weight", "mse.init.classifier.bias"],
        loss="transformers' own: MSELoss()(logits.squeeze(), targets.squeeze())",
        reduction="mean over rows of (logit - score)^2",
    )
    assert all(t.dtype == torch.float32 for t in tensors.values())
    save_file({k: v.contiguous() for k, v in tensors.items()}, TASKS)
    info = {
        "model": "tests/fixtures/tiny-bert",
        "texts": TEXTS,
        "mode": "eval: no dropout",
        "adamw": {"lr": 1e-3, "warmup_steps": 2, "total_steps": 10, "weight_decay": 0.01, "max_grad_norm": 1.0, "steps": 3},
        "keys": "C.logits, C.loss, C.grad.<parameter>, C.adamw3.<parameter> for each case C; mse.init.classifier.{weight,bias}",
        "cases": cases,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    TASKS.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {TASKS}: {len(tensors)} tensors; " + ", ".join(f"{c} {v['loss_value']:.6f}" for c, v in cases.items()))


if __name__ == "__main__":
    import argparse  # here, not above: tests/parity.rs cites lines of this file by number

    parser = argparse.ArgumentParser(description="Writes the parity fixtures under tests/fixtures/.")
    parser.add_argument(
        "--only",
        choices=["tasks", "architectures"],
        help="write only tasks.safetensors and tasks.json, or only tests/fixtures/arch/ (arch_fixtures.py)",
    )
    only = parser.parse_args().only
    if only is None:
        main()
    if only in (None, "tasks"):
        write_tasks()
    if only in (None, "architectures"):
        from arch_fixtures import write_architectures

        write_architectures()
