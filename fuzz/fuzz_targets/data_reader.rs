//! Any bytes, read as CSV, TSV or JSON Lines (chosen by the first byte): the reader must return
//! rows or errors, never panic.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use bertcls::data::{Columns, Format, LabelSet, RowReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let format = match selector % 3 {
        0 => Format::Csv,
        1 => Format::Tsv,
        _ => Format::Jsonl,
    };
    let columns = Columns {
        text: "text".into(),
        text_pair: (selector & 4 != 0).then(|| "pair".into()),
        label: (selector & 8 != 0).then(|| "label".into()),
    };
    let Ok(mut reader) = RowReader::from_reader(Path::new("fuzz"), Box::new(Cursor::new(bytes.to_vec())), format, &columns) else {
        return;
    };
    let mut rows = Vec::new();
    while let Ok(Some(record)) = reader.next_record() {
        if let Ok(row) = record.row {
            rows.push(row);
        }
    }
    let labels = LabelSet::from_rows(&rows);
    let _ = bertcls::data::label_rows(Path::new("fuzz"), rows, &labels);
});
