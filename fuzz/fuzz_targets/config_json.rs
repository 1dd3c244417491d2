//! Any bytes as a model's config.json: parsed and validated, or an error. A config that
//! validates plans a model of bounded size (the parameter list is built from it).
#![no_main]

use bertcls::model::BertConfig;
use bertcls::model::weights::parameter_shapes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = serde_json::from_slice::<BertConfig>(data) else { return };
    if config.validate().is_err() {
        return;
    }
    let labels = config.labels().map_or(2, |l| l.len());
    assert!(parameter_shapes(&config, labels).len() <= 16 * 1024 + 9);
    let _ = config.head_dim();
    let _ = serde_json::to_vec(&config);
});
