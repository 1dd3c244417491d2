//! Model folders made to hurt: checkpoints whose shapes or nesting would exhaust memory or
//! the stack, config.json sizes no machine can allocate, tokenizers whose regular
//! expressions never finish. Each is one `error:` line naming the file (and field), exit
//! code 1, never a panic or an abort.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use bertcls::data::LabelSet;
use bertcls::testing::TinyModel;
use common::{Fixture, fails_with, ok, s};

/// A fine-tuned tiny model (two labels), as `predict` loads it.
fn fine_tuned(dir: &Path) -> PathBuf {
    labelled().write(dir).unwrap();
    dir.to_path_buf()
}

fn predict(fx: &Fixture, model: &Path) -> std::process::Output {
    fx.run(&[
        "predict",
        "--model",
        s(model),
        "--text",
        "a good movie",
        "--device",
        "cpu",
    ])
}

fn train(fx: &Fixture, model: &Path) -> std::process::Output {
    fx.train_one_step(&format!("model_name_or_path = {model:?}"))
}

/// Pickle opcodes, protocol 2, as `torch.save` writes them.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Self(vec![0x80, 2])
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn string(&mut self, text: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(text.len() as u32).to_le_bytes());
        self.op(text.as_bytes())
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// The smallest encoding, as Python's pickler chooses it.
    fn int(&mut self, v: u64) -> &mut Self {
        match v {
            0..=0xff => self.op(&[b'K', v as u8]),
            0x100..=0xffff => self.op(&[b'M', v as u8, (v >> 8) as u8]),
            0x1_0000..=0x7fff_ffff => {
                self.0.push(b'J');
                self.op(&(v as u32).to_le_bytes())
            }
            _ => {
                self.op(&[0x8a, 8]);
                self.op(&v.to_le_bytes())
            }
        }
    }
    fn ints(&mut self, values: &[u64]) -> &mut Self {
        self.op(b"(");
        for &v in values {
            self.int(v);
        }
        self.op(b"t")
    }
}

/// A state dict of f32 tensors, each in its own storage: (name, declared shape, values).
fn state_dict_pickle(tensors: &[(String, Vec<u64>, usize)]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict").op(b")R(");
    for (key, (name, shape, len)) in tensors.iter().enumerate() {
        let mut stride = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1].saturating_mul(shape[i + 1]);
        }
        p.string(name)
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .string("storage")
            .global("torch", "FloatStorage")
            .string(&key.to_string())
            .string("cpu")
            .int(*len as u64)
            .op(b"tQ")
            .int(0)
            .ints(shape)
            .ints(&stride)
            .op(&[0x89])
            .global("collections", "OrderedDict")
            .op(b")Rt")
            .op(b"R");
    }
    p.op(b"u.");
    p.0
}

/// A `pytorch_model.bin` archive: `data.pkl` and the storages, uncompressed.
fn torch_zip(pickle: &[u8], storages: &[Vec<u8>]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    for (key, bytes) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{key}"), stored)
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Writes a tiny model folder with its tensors in a `pytorch_model.bin` instead of
/// `model.safetensors`, `shape_of` choosing each tensor's declared shape.
fn write_torch_checkpoint(
    model: &TinyModel,
    dir: &Path,
    shape_of: impl Fn(&str, &[usize]) -> Vec<u64>,
) {
    model.write(dir).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut parameters: Vec<_> = model.parameters().unwrap().into_iter().collect();
    parameters.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors = Vec::new();
    let mut storages = Vec::new();
    for (name, tensor) in parameters {
        if model.labels.is_none() && name.starts_with("classifier.") {
            continue;
        }
        let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        tensors.push((name.clone(), shape_of(&name, tensor.dims()), values.len()));
        storages.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    std::fs::write(
        dir.join("pytorch_model.bin"),
        torch_zip(&state_dict_pickle(&tensors), &storages),
    )
    .unwrap();
}

fn labelled() -> TinyModel {
    TinyModel {
        labels: Some(LabelSet::from_names(vec!["neg".into(), "pos".into()])),
        ..TinyModel::default()
    }
}

fn as_u64(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

#[test]
fn a_shape_of_2_pow_60_elements_is_refused_before_allocating() {
    let fx = Fixture::new("hostile-shape");
    // The control: the same tensors, honestly shaped, predict as the safetensors do.
    let honest = fine_tuned(&fx.path("honest"));
    let expected = ok(predict(&fx, &honest)).stdout;
    write_torch_checkpoint(&labelled(), &honest, |_, shape| as_u64(shape));
    assert_eq!(ok(predict(&fx, &honest)).stdout, expected);

    let model = fx.path("huge-shape");
    write_torch_checkpoint(&labelled(), &model, |name, shape| {
        if name.ends_with("word_embeddings.weight") {
            vec![1 << 30, 1 << 30]
        } else {
            as_u64(shape)
        }
    });
    let needles = [
        "pytorch_model.bin",
        "word_embeddings.weight",
        "needs more elements than its storage",
    ];
    fails_with(predict(&fx, &model), &needles);

    let base = fx.path("huge-shape-base");
    write_torch_checkpoint(&TinyModel::default(), &base, |name, shape| {
        if name.ends_with("query.weight") {
            vec![1 << 20, 1 << 20, 1 << 20]
        } else {
            as_u64(shape)
        }
    });
    fails_with(
        train(&fx, &base),
        &["pytorch_model.bin", "query.weight", "needs more elements"],
    );
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn a_pickle_nested_100000_deep_is_an_error_not_a_stack_overflow() {
    let fx = Fixture::new("hostile-nested");
    let model = fine_tuned(&fx.path("nested"));
    // None wrapped in 100,000 one-element tuples, then appended to (it is not a list).
    let mut p = Pickle::new();
    p.op(b"N").op(&[0x85; 100_000]).op(b"Na.");
    std::fs::write(model.join("pytorch_model.bin"), torch_zip(&p.0, &[])).unwrap();
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    fails_with(
        predict(&fx, &model),
        &[
            "pytorch_model.bin",
            "not a readable PyTorch checkpoint",
            "data.pkl",
        ],
    );

    // The same depth as the whole result.
    let mut p = Pickle::new();
    p.op(b"]").op(&[0x85; 100_000]).op(b".");
    std::fs::write(model.join("pytorch_model.bin"), torch_zip(&p.0, &[])).unwrap();
    fails_with(
        train(&fx, &model),
        &["pytorch_model.bin", "does not hold a state dict"],
    );
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

/// A copy of a tiny model folder with one config.json value replaced.
fn with_config(fx: &Fixture, tag: &str, key: &str, value: serde_json::Value) -> PathBuf {
    let dir = fine_tuned(&fx.path(tag));
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    dir
}

#[test]
fn config_sizes_are_bounded_and_checked_against_the_weights() {
    let fx = Fixture::new("hostile-config");
    for (key, value) in [
        ("num_hidden_layers", 1_000_000_000u64),
        ("vocab_size", 1_000_000_000_000),
        ("intermediate_size", 1_000_000_000_000),
    ] {
        let model = with_config(&fx, key, key, value.into());
        fails_with(predict(&fx, &model), &["config.json", key]);
        fails_with(train(&fx, &model), &["config.json", key]);
    }
    // Within the bounds, but not what the weights hold: named before anything is built.
    let layers = with_config(&fx, "layers-1000", "num_hidden_layers", 1000.into());
    fails_with(
        predict(&fx, &layers),
        &[
            "config.json",
            "num_hidden_layers is 1000 but model.safetensors has 2 layer(s)",
        ],
    );
    let vocab = with_config(&fx, "vocab-100000", "vocab_size", 100_000.into());
    fails_with(
        train(&fx, &vocab),
        &["config.json", "vocab_size is 100000", "has 44 rows"],
    );
    let positions = with_config(&fx, "positions", "max_position_embeddings", 4096.into());
    fails_with(
        predict(&fx, &positions),
        &[
            "config.json",
            "max_position_embeddings is 4096",
            "has 64 rows",
        ],
    );
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

/// A copy of the parity fixture (a tiny fine-tuned model with a tokenizer.json) whose
/// pre-tokenizer splits on `(a|a)*$`: on a run of `a` followed by
/// anything else the regex engine backtracks exponentially until it gives up (and `onig`
/// panics).
fn catastrophic_tokenizer(dir: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
    std::fs::create_dir_all(dir).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer_config.json"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
    let mut tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("tokenizer.json")).unwrap()).unwrap();
    tokenizer["pre_tokenizer"] = serde_json::json!({
        "type": "Split",
        "pattern": {"Regex": "(a|a)*$"},
        "behavior": "Isolated",
        "invert": false
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    dir.to_path_buf()
}

#[test]
fn a_tokenizer_regex_that_never_finishes_is_an_error() {
    let fx = Fixture::new("hostile-tokenizer");
    let model = catastrophic_tokenizer(&fx.path("regex"));
    let long = format!("{}!", "a".repeat(40));
    let out = fx.run(&["predict", "--model", s(&model), "--text", &long]);
    fails_with(out, &["tokenizer.json", "cannot tokenize"]);
    let out = fx.run(&["tokenize", "--model", s(&model), "--text", &long]);
    fails_with(out, &["tokenizer.json", "cannot tokenize"]);

    // Training tokenizes its whole data set at once, in parallel.
    let data = fx.path("long.csv");
    let mut csv = String::from("label,text\n");
    for i in 0..16 {
        csv.push_str(&format!("{},{long}\n", ["pos", "neg"][i % 2]));
    }
    std::fs::write(&data, csv).unwrap();
    let config = fx.config(&format!(
        "model_name_or_path = {model:?}\ntrain_file = {data:?}"
    ));
    fails_with(
        fx.run(&["train", "--config", s(&config), "--max-steps", "1"]),
        &["tokenizer.json", "cannot tokenize"],
    );
    // An ordinary text still works with the same tokenizer.
    ok(fx.run(&["predict", "--model", s(&model), "--text", "good"]));
    std::fs::remove_dir_all(&fx.dir).unwrap();
}
