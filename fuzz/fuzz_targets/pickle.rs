//! Any bytes as a PyTorch checkpoint: after a selector byte, either the pickled state dict
//! alone (`data.pkl`) or a whole `pytorch_model.bin` archive whose tensors are then all
//! read. Records or errors, never a panic, an abort or unbounded memory.
#![no_main]

use std::io::Cursor;

use bertcls::model::pickle::{TorchCheckpoint, parse_state_dict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    if selector % 2 == 0 {
        let _ = parse_state_dict(bytes);
        return;
    }
    let Ok(mut checkpoint) = TorchCheckpoint::new(Cursor::new(bytes)) else { return };
    let names: Vec<String> = checkpoint.records().iter().map(|r| r.name.clone()).collect();
    for name in names {
        let _ = checkpoint.tensor(&name);
    }
});
