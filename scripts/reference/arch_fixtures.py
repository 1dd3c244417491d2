"""Writes the per-architecture parity fixtures under tests/fixtures/arch/ with PyTorch + transformers.

    python="$(scripts/reference/setup.sh)"
    "$python" scripts/reference/make_fixtures.py --only architectures
    "$python" scripts/reference/arch_fixtures.py [NAME ...]      # the same, or only some of them

NAME is one of roberta, xlm-roberta, camembert, distilbert, electra, deberta-v2. For each:

tests/fixtures/arch/NAME/
    A tiny random AutoModelForSequenceClassification of that architecture, as save_pretrained
    writes it (config.json + model.safetensors): 2 layers, hidden 32, 4 heads, intermediate 64,
    64 positions (RoBERTa family: 66 = 64 + the pad offset 2, as roberta-base has 514), 3 labels
    (negative/neutral/positive), initializer_range 0.2, every LayerNorm (by module type,
    nn.LayerNorm) weight 1 + 0.1 randn and every bias (LayerNorm and Linear) 0.05 randn.
    And its own tokenizer class's save_pretrained (tokenizer.json + tokenizer_config.json), built
    offline with the `tokenizers` library from make_fixtures.WORDS:
      roberta      byte-level BPE trained on WORDS (BpeTrainer, the 256 byte alphabet), <s>=0
                   <pad>=1 </s>=2 <unk>=3, <mask> last; ByteLevel(add_prefix_space=False) as
                   roberta-base; RobertaProcessing: pairs give <s> A </s></s> B </s>.
      xlm-roberta  Unigram pieces from WORDS (see unigram_pieces), WhitespaceSplit + Metaspace("▁",
                   always); <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last; pairs <s> A </s></s> B </s>.
                   No Precompiled normalizer (the real one has a sentencepiece charsmap; ours has
                   no normalizer at all: the fixture texts are plain ASCII lowercase).
      camembert    the same Unigram pieces in camembert-base's layout: <s>NOTUSED=0 <pad>=1
                   </s>NOTUSED=2 <unk>=3 <unk>NOTUSED=4 (score -100) <s>=5 </s>=6, <mask> last:
                   cls/bos is 5 and sep/eos is 6, not 0 and 2.
      distilbert   BERT's WordPiece vocabulary of make_fixtures.vocabulary() ([PAD]=0 [UNK]=1
                   [CLS]=2 [SEP]=3 [MASK]=4), lower case; DistilBertTokenizer returns no
                   token_type_ids (DistilBERT has no token types).
      electra      the same WordPiece (transformers maps electra to BertTokenizer); with
                   token_type_ids; embedding_size 16 != hidden 32, so embeddings_project exists.
      deberta-v2   (v3 style) the Unigram pieces with [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3, [MASK] last;
                   DebertaV2Tokenizer's normalizer and Metaspace; token_type_ids 0 then 1 for B.
                   Config: relative_attention, position_buckets 8, max_relative_positions -1 (so
                   the encoder uses max_position_embeddings = 64 as the log-bucket maximum),
                   pos_att_type [p2c, c2p], share_att_key, norm_rel_ebd layer_norm,
                   position_biased_input False, type_vocab_size 0, pooler_hidden_size 32,
                   pooler_dropout 0, layer_norm_eps 1e-7. Relative distances beyond 4
                   (position_buckets / 2) go through make_log_bucket_position's log path: the
                   TEXTS batch and the longer trajectory batches have such distances
                   (deberta-v2.json, relative_positions, gives the lengths).

tests/fixtures/arch/NAME.safetensors
    input_ids, attention_mask, token_type_ids (only where the tokenizer returns them), labels
    (int64; the batch of make_fixtures.TEXTS padded by the tokenizer's own pad), logits, loss
    (shape (1,)), grad.<parameter> for every named parameter, adamw_lrs (f64) and
    adamw3.<parameter> after three AdamW steps (lr 1e-3, warmup 2 of 10 linear), trajectory_losses
    (f32) and trajectory_lrs (f64) of 20 steps over make_fixtures.TRAJECTORY (lr 5e-4, warmup 4
    of 20). Gradient norm clipped at 1.0, weight decay 0.01. Floats are float32 but the learning
    rates (float64).
    Eval mode throughout (no dropout), attn_implementation="eager", torch.manual_seed(0) before
    each architecture.

    Unlike make_fixtures.main() (which decays all but *.bias and *LayerNorm*), the weight-decay
    groups are those of transformers' Trainer: Trainer.get_decay_parameter_names, i.e. no decay
    for parameters inside an nn.LayerNorm and for names matching bias, layernorm, rmsnorm,
    (^|.)norm($|.), _norm($|.) (lower-cased). NAME.json lists both groups.

tests/fixtures/arch/NAME.json
    texts, labels, trajectory, adamw, trajectory_optimizer, torch, transformers (as inputs.json),
    decay, no_decay, parameters ([name, shape] in named_parameters() order), tokens (the token
    strings of each TEXTS item, unpadded), architectures, model_type, pad_token_id, cls and sep
    ({"token", "id"}), input_names, and notes.

Worth knowing on the reading side:
  - The Trainer rule and main()'s name rule agree but for DistilBERT, whose LayerNorms are named
    sa_layer_norm / output_layer_norm (no "LayerNorm" in the name: main()'s rule would decay their
    weights). Embeddings decay in every architecture (DeBERTa's rel_embeddings and ELECTRA's
    embeddings_project.weight included).
  - XLMRobertaForSequenceClassification and CamembertForSequenceClassification (transformers
    5.24) list classifier.* FIRST in named_parameters(), before roberta.*; RoBERTa lists it last.
    Their checkpoint keys are roberta.* (not xlm_roberta.* / camembert.*).
  - The RoBERTa family has token_type_embeddings with 1 row (type_vocab_size 1) and position ids
    from padding_idx (pad_token_id 1): pad + 1 + the running count of non-pad tokens.
  - The byte-level BPE gives the first word of a text no "Ġ" (add_prefix_space false, as
    roberta-base): "what" at the start is w + h + at, " a" is Ġa; B of a pair starts without Ġ.
  - Input ids, attention masks, token type ids and labels are int64.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizer,
    CamembertTokenizer,
    DebertaV2Tokenizer,
    DistilBertTokenizer,
    RobertaTokenizer,
    Trainer,
    XLMRobertaTokenizer,
    get_linear_schedule_with_warmup,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import LABELS, TEXTS, TRAJECTORY, WORDS, encode, vocabulary  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARCH = ROOT / "tests" / "fixtures" / "arch"
NAMES = ["roberta", "xlm-roberta", "camembert", "distilbert", "electra", "deberta-v2"]
ID2LABEL = {0: "negative", 1: "neutral", 2: "positive"}
ADAMW = {"lr": 1e-3, "warmup_steps": 2, "total_steps": 10, "weight_decay": 0.01, "max_grad_norm": 1.0}
TRAJ = {"lr": 5e-4, "warmup_steps": 4, "total_steps": 20, "weight_decay": 0.01, "max_grad_norm": 1.0}


def corpus():
    """What the subword models are trained on: WORDS, a few words a line, and every fixture text."""
    lines = [" ".join(WORDS[i : i + 7]) for i in range(0, len(WORDS), 7)]
    lines += [" ".join(WORDS[i::5]) for i in range(5)]
    for a, b in TEXTS + [pair for texts, _ in TRAJECTORY for pair in texts]:
        lines += [a] + ([b] if b is not None else [])
    return lines


def byte_bpe():
    """Byte-level BPE as roberta-base's: vocabulary and merges, trained with tokenizers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    vocab["<mask>"] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


SUFFIXES = ["s", "d", "ed", "ing", "es"]


def unigram_pieces():
    """Sentencepiece-style Unigram pieces with log-probability-like scores, built from WORDS.

    tokenizers' UnigramTrainer is not deterministic from run to run (and finds odd pieces in so
    small a corpus), so the pieces are laid out here: "▁word" for each word of WORDS but those
    that are another word of 3+ letters plus a suffix (loved = ▁love + d, actors = ▁actor + s,
    enjoyed = ▁enjoy + ed: subwords are exercised), the suffixes, "▁", the letters and punctuation bare and after
    "▁". The Unigram model (Viterbi over these scores) is tokenizers' own.
    """
    words = [w for w in WORDS if not any(w.endswith(x) and len(w) - len(x) >= 3 and w[: -len(x)] in WORDS for x in SUFFIXES)]
    pieces = [("▁" + w, -5.0 - i / 1000) for i, w in enumerate(words)]
    pieces += [(x, -7.0 - i / 1000) for i, x in enumerate(SUFFIXES)]
    pieces += [("▁" + c, -8.0 - i / 1000) for i, c in enumerate(".,!?'-")]
    pieces += [("▁", -9.0)]
    pieces += [(c, -10.0 - i / 1000) for i, c in enumerate(list(".,!?'-") + [chr(c) for c in range(ord("a"), ord("z") + 1)])]
    seen = set()
    return [p for p in pieces if not (p[0] in seen or seen.add(p[0]))]


def wordpiece():
    return {t: i for i, t in enumerate(vocabulary())}


def common(vocab_size, **extra):
    return dict(vocab_size=vocab_size, initializer_range=0.2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}, **extra)


def bert_like(vocab_size, positions, **extra):
    return common(
        vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=positions,
        **extra,
    )


def build(name):
    """(tokenizer, config) of architecture `name`."""
    if name == "roberta":
        vocab, merges = byte_bpe()
        tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=False, trim_offsets=True)
        config = AutoConfig.for_model(
            "roberta", **bert_like(len(vocab), 66, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        )
    elif name in ("xlm-roberta", "camembert"):
        pieces = unigram_pieces()
        if name == "xlm-roberta":
            specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
            vocab = specials + pieces + [("<mask>", 0.0)]
            tokenizer = XLMRobertaTokenizer(vocab=vocab)
            ids = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
        else:
            specials = [("<s>NOTUSED", 0.0), ("<pad>", 0.0), ("</s>NOTUSED", 0.0), ("<unk>", 0.0), ("<unk>NOTUSED", -100.0), ("<s>", 0.0), ("</s>", 0.0)]
            vocab = specials + pieces + [("<mask>", 0.0)]
            tokenizer = CamembertTokenizer(vocab=vocab)
            ids = dict(pad_token_id=1, bos_token_id=5, eos_token_id=6)
        config = AutoConfig.for_model(name, **bert_like(len(vocab), 66, type_vocab_size=1, **ids))
    elif name == "distilbert":
        tokenizer = DistilBertTokenizer(vocab=wordpiece(), do_lower_case=True)
        config = AutoConfig.for_model(
            "distilbert",
            **common(len(wordpiece()), dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, pad_token_id=0),
        )
    elif name == "electra":
        tokenizer = BertTokenizer(vocab=wordpiece(), do_lower_case=True)
        config = AutoConfig.for_model(
            "electra", **bert_like(len(wordpiece()), 64, embedding_size=16, type_vocab_size=2, pad_token_id=0)
        )
    elif name == "deberta-v2":
        specials = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0)]
        vocab = specials + unigram_pieces() + [("[MASK]", 0.0)]
        tokenizer = DebertaV2Tokenizer(vocab=vocab, do_lower_case=False, split_by_punct=False)
        config = AutoConfig.for_model(
            "deberta-v2",
            **bert_like(
                len(vocab),
                64,
                type_vocab_size=0,
                pad_token_id=0,
                layer_norm_eps=1e-7,
                relative_attention=True,
                position_buckets=8,
                max_relative_positions=-1,
                pos_att_type=["p2c", "c2p"],
                share_att_key=True,
                norm_rel_ebd="layer_norm",
                position_biased_input=False,
                pooler_hidden_size=32,
                pooler_dropout=0,
                pooler_hidden_act="gelu",
            ),
        )
    else:
        raise ValueError(name)
    return tokenizer, config


# The layout of a pair ("what a fun movie", "i loved it") in each architecture: special tokens
# by name, "A" and "B" for the pieces of each text.
PAIR_LAYOUT = {
    "roberta": ["<s>", "A", "</s>", "</s>", "B", "</s>"],
    "xlm-roberta": ["<s>", "A", "</s>", "</s>", "B", "</s>"],
    "camembert": ["<s>", "A", "</s>", "</s>", "B", "</s>"],
    "distilbert": ["[CLS]", "A", "[SEP]", "B", "[SEP]"],
    "electra": ["[CLS]", "A", "[SEP]", "B", "[SEP]"],
    "deberta-v2": ["[CLS]", "A", "[SEP]", "B", "[SEP]"],
}
SPECIAL_IDS = {
    "roberta": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    "xlm-roberta": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    "camembert": {"<s>NOTUSED": 0, "<pad>": 1, "</s>NOTUSED": 2, "<unk>": 3, "<s>": 5, "</s>": 6},
    "distilbert": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3},
    "electra": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3},
    "deberta-v2": {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3},
}


def check_tokenizer(name, tokenizer):
    for token, i in SPECIAL_IDS[name].items():
        assert tokenizer.convert_tokens_to_ids(token) == i, (name, token, tokenizer.convert_tokens_to_ids(token))
    a, b = TEXTS[0]
    alone_a = tokenizer(a, add_special_tokens=False)["input_ids"]
    alone_b = tokenizer(b, add_special_tokens=False)["input_ids"]
    pair = tokenizer(a, b)
    expected = []
    for part in PAIR_LAYOUT[name]:
        expected += alone_a if part == "A" else alone_b if part == "B" else [SPECIAL_IDS[name][part]]
    assert pair["input_ids"] == expected, (name, tokenizer.convert_ids_to_tokens(pair["input_ids"]))
    assert tokenizer.unk_token_id not in pair["input_ids"], (name, tokenizer.convert_ids_to_tokens(pair["input_ids"]))
    if "token_type_ids" in pair:
        second = PAIR_LAYOUT[name].index("A") + len(alone_a) + 1  # B's segment starts after A's [SEP]
        assert pair["token_type_ids"] == [0] * second + [1] * (len(expected) - second), (name, pair["token_type_ids"])
    single = tokenizer(TEXTS[1][0])["input_ids"]
    assert single[0] == tokenizer.cls_token_id and single[-1] == tokenizer.sep_token_id, (name, single)


def init_weights(model):
    """Non-trivial LayerNorm weights and biases (by module type) and biases, as main() does."""
    ln_weights, ln_biases = set(), set()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            if module.weight is not None:
                ln_weights.add(id(module.weight))
            if module.bias is not None:
                ln_biases.add(id(module.bias))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in ln_weights:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif id(p) in ln_biases or name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return len(ln_weights), len(ln_biases)


def decay_names(model):
    # Trainer.get_decay_parameter_names does not use self: what Trainer.create_optimizer decays.
    return set(Trainer.get_decay_parameter_names(None, model))


def grouped_adamw(model, lr):
    decay = decay_names(model)
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def model_inputs(batch, names):
    return {k: batch[k] for k in names}


def write(name):
    torch.manual_seed(0)
    folder = ARCH / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tokenizer, config = build(name)
    check_tokenizer(name, tokenizer)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    n_ln = init_weights(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    def fresh_model():
        m = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
        m.eval()  # dropout off
        return m

    input_names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in tokenizer.model_input_names]
    batch = encode(tokenizer, TEXTS)
    assert sorted(batch.keys()) == sorted(input_names), (name, list(batch.keys()))
    tokens = [tokenizer.convert_ids_to_tokens(tokenizer(a, b)["input_ids"] if b is not None else tokenizer(a)["input_ids"]) for a, b in TEXTS]
    print(f"{name}: TEXTS[0] -> {tokens[0]}")
    targets = torch.tensor(LABELS)
    expected = {k: batch[k].to(torch.int64) for k in input_names}
    expected["labels"] = targets

    model = fresh_model()
    out = model(**model_inputs(batch, input_names), labels=targets)
    expected["logits"] = out.logits.detach()
    expected["loss"] = out.loss.detach().reshape(1)
    out.loss.backward()
    for pname, p in model.named_parameters():
        expected["grad." + pname] = p.grad.detach().clone()

    model = fresh_model()
    optimizer = grouped_adamw(model, ADAMW["lr"])
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    adamw_lrs = []
    for _ in range(3):
        optimizer.zero_grad()
        model(**model_inputs(batch, input_names), labels=targets).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        adamw_lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    expected["adamw_lrs"] = torch.tensor(adamw_lrs, dtype=torch.float64)
    for pname, p in model.named_parameters():
        expected["adamw3." + pname] = p.detach().clone()

    model = fresh_model()
    optimizer = grouped_adamw(model, TRAJ["lr"])
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=4, num_training_steps=20)
    losses, trajectory_lrs, lengths = [], [], []
    for step in range(20):
        texts, step_labels = TRAJECTORY[step % len(TRAJECTORY)]
        optimizer.zero_grad()
        step_batch = encode(tokenizer, texts)
        lengths.append(step_batch["input_ids"].shape[1])
        loss = model(**model_inputs(step_batch, input_names), labels=torch.tensor(step_labels)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        losses.append(loss.item())
        trajectory_lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    expected["trajectory_losses"] = torch.tensor(losses, dtype=torch.float32)
    expected["trajectory_lrs"] = torch.tensor(trajectory_lrs, dtype=torch.float64)
    # It trains: each of the 4 batches has a lower loss in the last cycle than in the first,
    # and the last loss is under 0.8 x the first.
    assert all(losses[16 + k] < losses[k] for k in range(4)), (name, losses)
    assert losses[-1] < 0.8 * losses[0], (name, losses)

    for key, t in expected.items():
        assert t.dtype in (torch.float32, torch.float64, torch.int64), (key, t.dtype)
    save_file({k: v.contiguous() for k, v in expected.items()}, ARCH / f"{name}.safetensors")

    decay = decay_names(model)
    params = list(model.named_parameters())
    info = {
        "texts": TEXTS,
        "labels": LABELS,
        "trajectory": [{"texts": t, "labels": l} for t, l in TRAJECTORY],
        "adamw": ADAMW,
        "trajectory_optimizer": TRAJ,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model": f"tests/fixtures/arch/{name}",
        "model_type": config.model_type,
        "architectures": model.config.architectures,
        "tokenizer_class": type(tokenizer).__name__,
        "input_names": input_names,
        "pad_token_id": tokenizer.pad_token_id,
        "cls": {"token": tokenizer.cls_token, "id": tokenizer.cls_token_id},
        "sep": {"token": tokenizer.sep_token, "id": tokenizer.sep_token_id},
        "vocab_size": config.vocab_size,
        "tokens": tokens,
        "decay": [n for n, _ in params if n in decay],
        "no_decay": [n for n, _ in params if n not in decay],
        "decay_rule": "transformers Trainer.get_decay_parameter_names: not inside nn.LayerNorm and the lower-cased name matches none of bias, layernorm, rmsnorm, (?:^|\\.)norm(?:$|\\.), _norm(?:$|\\.)",
        "parameters": [[n, list(p.shape)] for n, p in params],
        "layernorms": {"weights": n_ln[0], "biases": n_ln[1], "init": "weight 1 + 0.1 randn, bias 0.05 randn; every other *.bias 0.05 randn"},
        "mode": "eval: no dropout; attn_implementation eager; torch.manual_seed(0) first",
        "batch_length": batch["input_ids"].shape[1],
        "trajectory_lengths": lengths,
        "keys": "input_ids, attention_mask, [token_type_ids], labels, logits, loss, grad.<parameter>, adamw_lrs, adamw3.<parameter>, trajectory_losses, trajectory_lrs",
    }
    if name == "deberta-v2":
        span = config.position_buckets // 2
        info["relative_positions"] = {
            "position_buckets": config.position_buckets,
            "max_relative_positions": config.max_relative_positions,
            "log_bucket_max_position": config.max_position_embeddings,
            "note": f"relative distances |i - j| > {span} (position_buckets / 2) take "
            f"make_log_bucket_position's log path (<= {span}: the distance itself); the batch is {batch['input_ids'].shape[1]} tokens long, "
            f"trajectory batches {sorted(set(lengths))}, so both paths are exercised; rel_embeddings has "
            f"2 * position_buckets = {2 * config.position_buckets} rows",
        }
        assert batch["input_ids"].shape[1] > span + 1  # some |i - j| > span: the log path
    (ARCH / f"{name}.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")

    # The saved folder alone gives the same tokens and logits.
    reloaded_tok = AutoTokenizer.from_pretrained(folder)
    assert type(reloaded_tok).__name__ == type(tokenizer).__name__, (name, type(reloaded_tok))
    reloaded_batch = encode(reloaded_tok, TEXTS)
    for k in input_names:
        assert torch.equal(reloaded_batch[k].to(torch.int64), expected[k]), (name, k)
    with torch.no_grad():
        logits = fresh_model()(**model_inputs(reloaded_batch, input_names)).logits
    assert torch.equal(logits, expected["logits"]), (name, logits, expected["logits"])
    size = (ARCH / f"{name}.safetensors").stat().st_size
    assert size < 600_000, (name, size)
    print(
        f"{name}: {len(expected)} tensors, {size // 1024} KiB; loss {out.loss.item():.6f}; "
        f"trajectory {losses[0]:.4f} -> {losses[-1]:.4f}; no decay: {len(info['no_decay'])} of {len(params)}"
    )


def write_architectures(names=None):
    ARCH.mkdir(parents=True, exist_ok=True)
    for name in names or NAMES:
        write(name)


if __name__ == "__main__":
    chosen = sys.argv[1:]
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        sys.exit(f"unknown architecture(s) {unknown}; choose from {NAMES}")
    write_architectures(chosen)
