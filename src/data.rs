//! Reading labelled or unlabelled text from CSV, TSV and JSON Lines files.
//!
//! Rows stream one at a time ([`RowReader`]) so that `predict` works on files of any size;
//! training and evaluation collect them with [`read_examples`]. Every error names the file
//! and the line, and a column where one is at fault.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::{Map, Value};

/// File formats bertcls reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// Tab-separated with no quoting, as GLUE's files: a `"` is an ordinary character.
    Tsv,
    Jsonl,
}

impl Format {
    /// The format a file's extension stands for.
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "csv" => Ok(Self::Csv),
            "tsv" | "tab" => Ok(Self::Tsv),
            "jsonl" | "ndjson" | "json" => Ok(Self::Jsonl),
            _ => Err(DataError::File {
                file: path.to_path_buf(),
                message: "unknown file type: name it .csv, .tsv or .jsonl (or pass --format)"
                    .into(),
            }),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "tsv" => Some(Self::Tsv),
            "jsonl" | "json" => Some(Self::Jsonl),
            _ => None,
        }
    }

    fn delimiter(self) -> u8 {
        if self == Self::Tsv { b'\t' } else { b',' }
    }
}

/// Which columns hold the text, the optional second text of a pair, and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem with the file as a whole.
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    /// A problem confined to one row; `predict --on-error skip-row` can step over these.
    #[error("{}:{line}: {message}", file.display())]
    Row {
        file: PathBuf,
        line: u64,
        message: String,
    },
}

impl DataError {
    pub fn is_row_error(&self) -> bool {
        matches!(self, Self::Row { .. })
    }
}

/// One row's fields as they were read, so `predict` can write them back unchanged.
#[derive(Debug, Clone)]
pub enum RawRecord {
    Fields(Vec<String>),
    Object(Map<String, Value>),
    /// A JSON Lines line that is not a JSON object (invalid JSON, invalid UTF-8).
    Line(String),
}

/// The fields bertcls uses from one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line where the row starts.
    pub line: u64,
    pub text: String,
    pub text_pair: Option<String>,
    pub label: Option<String>,
}

/// One row as read: its raw fields and either what bertcls uses of them or why they cannot
/// be used (a row-level error, which a caller may report and step over).
#[derive(Debug)]
pub struct Record {
    pub line: u64,
    pub raw: RawRecord,
    pub row: Result<Row, DataError>,
}

/// Counts the `"` bytes passing through, to notice a quoted field that never closes.
struct QuoteCounter {
    inner: Box<dyn Read>,
    quotes: Rc<Cell<u64>>,
}

impl Read for QuoteCounter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let found = buf[..n].iter().filter(|&&b| b == b'"').count() as u64;
        self.quotes.set(self.quotes.get() + found);
        Ok(n)
    }
}

struct Delimited {
    reader: csv::Reader<QuoteCounter>,
    quoting: bool,
    quotes: Rc<Cell<u64>>,
    text: usize,
    text_pair: Option<usize>,
    label: Option<usize>,
    record: csv::ByteRecord,
    /// The line of the latest record and whether one of its fields spans lines.
    last: (u64, bool),
}

enum Inner {
    Delimited(Box<Delimited>),
    Jsonl {
        lines: std::io::Split<BufReader<Box<dyn Read>>>,
        line: u64,
    },
}

/// Streams rows from a data file (or standard input).
pub struct RowReader {
    file: PathBuf,
    columns: Columns,
    headers: Vec<String>,
    inner: Inner,
}

fn open_input(path: &Path) -> Result<Box<dyn Read>, DataError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let file = File::open(path).map_err(|source| DataError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(DataError::File {
            file: path.to_path_buf(),
            message: "is a folder, not a data file".into(),
        });
    }
    Ok(Box::new(file))
}

fn missing_column(file: &Path, role: &str, column: &str, available: &[String]) -> DataError {
    let hint = crate::config::suggest(column, available.iter().map(String::as_str))
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    let tabbed = available.len() == 1 && available[0].contains('\t');
    let delimiter_hint = if tabbed {
        "; the header looks tab-separated: name the file .tsv"
    } else {
        ""
    };
    DataError::File {
        file: file.to_path_buf(),
        message: format!(
            "no {role} column `{column}` (columns: {}){hint}{delimiter_hint}",
            available
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The names that head more than one column, with their 1-based positions: which of two
/// `text` columns is scored, or which `label` is the truth, would be a guess, and the JSON
/// Lines output could keep only one of them.
fn repeated_names(headers: &[String]) -> Option<String> {
    // One pass: a header of a million columns (a 10 MB line) must not take a million squared.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, name) in headers.iter().enumerate() {
        let slot = *seen.entry(name).or_insert_with(|| {
            names.push((name, Vec::new()));
            names.len() - 1
        });
        names[slot].1.push(i + 1);
    }
    let repeated: Vec<String> = names
        .iter()
        .filter(|(_, positions)| positions.len() > 1)
        .map(|(name, positions)| {
            let positions: Vec<String> = positions.iter().map(usize::to_string).collect();
            format!("`{name}` (columns {})", positions.join(", "))
        })
        .collect();
    (!repeated.is_empty()).then(|| repeated.join(", "))
}

impl RowReader {
    /// Opens `path` (or `-` for standard input) in `format`, checking that the columns exist.
    pub fn open(path: &Path, format: Format, columns: &Columns) -> Result<Self, DataError> {
        Self::from_reader(path, open_input(path)?, format, columns)
    }

    /// Reads rows from `input`; `name` stands for it in errors.
    pub fn from_reader(
        name: &Path,
        input: Box<dyn Read>,
        format: Format,
        columns: &Columns,
    ) -> Result<Self, DataError> {
        let file = name.to_path_buf();
        let mut headers = Vec::new();
        let inner = match format {
            Format::Csv | Format::Tsv => {
                let quotes = Rc::new(Cell::new(0));
                let counter = QuoteCounter {
                    inner: input,
                    quotes: quotes.clone(),
                };
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(format.delimiter())
                    .quoting(format == Format::Csv)
                    .flexible(true)
                    .from_reader(counter);
                let header = reader
                    .byte_headers()
                    .map_err(|e| csv_error(&file, e))?
                    .clone();
                for (i, h) in header.iter().enumerate() {
                    let h = std::str::from_utf8(h).map_err(|_| DataError::Row {
                        file: file.clone(),
                        line: 1,
                        message: format!("invalid UTF-8 in the name of column {}", i + 1),
                    })?;
                    headers.push(h.trim().to_string());
                }
                if headers.iter().all(|h| h.is_empty()) {
                    return Err(DataError::File {
                        file,
                        message: "is empty: expected a header line naming the columns".into(),
                    });
                }
                if let Some(repeated) = repeated_names(&headers) {
                    return Err(DataError::Row {
                        file,
                        line: 1,
                        message: format!(
                            "repeated column names make the header ambiguous: {repeated}; \
                             rename them so that each column has its own name"
                        ),
                    });
                }
                let find = |role: &str, name: &str| {
                    headers
                        .iter()
                        .position(|h| h == name)
                        .ok_or_else(|| missing_column(&file, role, name, &headers))
                };
                let text = find("text", &columns.text)?;
                let text_pair = columns
                    .text_pair
                    .as_deref()
                    .map(|c| find("text pair", c))
                    .transpose()?;
                let label = columns
                    .label
                    .as_deref()
                    .map(|c| find("label", c))
                    .transpose()?;
                Inner::Delimited(Box::new(Delimited {
                    reader,
                    quoting: format == Format::Csv,
                    quotes,
                    text,
                    text_pair,
                    label,
                    record: csv::ByteRecord::new(),
                    last: (0, false),
                }))
            }
            Format::Jsonl => Inner::Jsonl {
                lines: BufReader::with_capacity(1 << 16, input).split(b'\n'),
                line: 0,
            },
        };
        Ok(Self {
            file,
            columns: columns.clone(),
            headers,
            inner,
        })
    }

    /// The header of a CSV/TSV file (empty for JSON Lines).
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The next record, `None` at the end of the file. An error here ends the reading (I/O,
    /// or a quote that never closes); an error about the row alone is in [`Record::row`].
    pub fn next_record(&mut self) -> Result<Option<Record>, DataError> {
        let file = &self.file;
        let columns = &self.columns;
        let row_error = |line: u64, message: String| DataError::Row {
            file: file.clone(),
            line,
            message,
        };
        match &mut self.inner {
            Inner::Delimited(d) => {
                if !d
                    .reader
                    .read_byte_record(&mut d.record)
                    .map_err(|e| csv_error(file, e))?
                {
                    let (line, multiline) = d.last;
                    if d.quoting && multiline && d.quotes.get() % 2 == 1 {
                        return Err(row_error(
                            line,
                            "unbalanced quote: a quoted field that starts here runs to the end of the file".into(),
                        ));
                    }
                    return Ok(None);
                }
                let line = d.record.position().map_or(0, |p| p.line());
                let raw: Vec<String> = d
                    .record
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                d.last = (line, raw.iter().any(|f| f.contains('\n')));
                let bad_utf8 = d
                    .record
                    .iter()
                    .position(|f| std::str::from_utf8(f).is_err());
                let row = if let Some(i) = bad_utf8 {
                    let column = self
                        .headers
                        .get(i)
                        .map_or_else(|| format!("field {}", i + 1), |h| format!("column `{h}`"));
                    Err(row_error(line, format!("invalid UTF-8 in {column}")))
                } else if raw.len() != self.headers.len() {
                    Err(row_error(
                        line,
                        format!(
                            "expected {} fields like the header, found {} (a stray delimiter or an unbalanced quote?)",
                            self.headers.len(),
                            raw.len()
                        ),
                    ))
                } else {
                    let field = |i: usize| raw[i].clone();
                    let row = Row {
                        line,
                        text: field(d.text),
                        text_pair: d.text_pair.map(field),
                        label: d.label.map(field),
                    };
                    check_row(file, &row, columns).map(|()| row)
                };
                Ok(Some(Record {
                    line,
                    raw: RawRecord::Fields(raw),
                    row,
                }))
            }
            Inner::Jsonl { lines, line } => loop {
                let Some(bytes) = lines.next() else {
                    return Ok(None);
                };
                *line += 1;
                let bytes = bytes.map_err(|source| DataError::Io {
                    file: file.clone(),
                    source,
                })?;
                let bytes = if *line == 1 {
                    strip_bom(&bytes)
                } else {
                    &bytes[..]
                };
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(parse_json_record(file, *line, bytes, columns)));
            },
        }
    }
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn check_row(file: &Path, row: &Row, columns: &Columns) -> Result<(), DataError> {
    let row_error = |message: String| DataError::Row {
        file: file.to_path_buf(),
        line: row.line,
        message,
    };
    if row.text.trim().is_empty() {
        return Err(row_error(format!(
            "empty text in column `{}`",
            columns.text
        )));
    }
    if let (Some(pair), Some(column)) = (&row.text_pair, &columns.text_pair)
        && pair.trim().is_empty()
    {
        return Err(row_error(format!("empty text in column `{column}`")));
    }
    Ok(())
}

fn parse_json_record(file: &Path, line: u64, bytes: &[u8], columns: &Columns) -> Record {
    let row_error = |message: String| DataError::Row {
        file: file.to_path_buf(),
        line,
        message,
    };
    let lossy = || RawRecord::Line(String::from_utf8_lossy(bytes).into_owned());
    let failed = |raw: RawRecord, message: String| Record {
        line,
        raw,
        row: Err(row_error(message)),
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return failed(
                lossy(),
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
            );
        }
    };
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return failed(lossy(), "expected a JSON object per line".into()),
        Err(e) => return failed(lossy(), format!("column {}: invalid JSON: {e}", e.column())),
    };
    let get = |role: &str, key: &str| -> Result<String, DataError> {
        match object.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) if role == "label" => Ok(n.to_string()),
            Some(Value::Bool(b)) if role == "label" => Ok(b.to_string()),
            // A list of labels (multi-label data) travels as its JSON text; the task reads it.
            Some(list @ Value::Array(_)) if role == "label" => Ok(list.to_string()),
            Some(other) => Err(row_error(format!(
                "field `{key}` must be a {} (got {other})",
                if role == "label" {
                    "string, an integer or a list"
                } else {
                    "string"
                }
            ))),
            None => {
                let keys: Vec<String> = object.keys().cloned().collect();
                let hint = crate::config::suggest(key, keys.iter().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                Err(row_error(format!(
                    "no {role} field `{key}` (fields: {}){hint}",
                    keys.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    };
    let row = (|| {
        let row = Row {
            line,
            text: get("text", &columns.text)?,
            text_pair: columns
                .text_pair
                .as_deref()
                .map(|c| get("text pair", c))
                .transpose()?,
            label: columns
                .label
                .as_deref()
                .map(|c| get("label", c))
                .transpose()?,
        };
        check_row(file, &row, columns)?;
        Ok(row)
    })();
    Record {
        line,
        raw: RawRecord::Object(object),
        row,
    }
}

fn csv_error(file: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    if let csv::ErrorKind::Io(io) = e.kind() {
        return DataError::Io {
            file: file.to_path_buf(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        };
    }
    let message = e.to_string();
    if line == 0 {
        DataError::File {
            file: file.to_path_buf(),
            message,
        }
    } else {
        DataError::Row {
            file: file.to_path_buf(),
            line,
            message,
        }
    }
}

/// Reads every row of a file. `limit` stops after that many rows (as `max_train_samples`).
pub fn read_rows(
    path: &Path,
    format: Format,
    columns: &Columns,
    limit: Option<usize>,
) -> Result<Vec<Row>, DataError> {
    let mut reader = RowReader::open(path, format, columns)?;
    let mut rows = Vec::new();
    while limit.is_none_or(|n| rows.len() < n) {
        match reader.next_record()? {
            Some(record) => rows.push(record.row?),
            None => break,
        }
    }
    if rows.is_empty() {
        return Err(DataError::File {
            file: path.to_path_buf(),
            message: "has no data rows".into(),
        });
    }
    Ok(rows)
}

/// The classes of a task, indexed by id: sorted, numerically when every label is an
/// integer (so `10` follows `9`), as strings otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    names: Vec<String>,
}

impl LabelSet {
    pub fn from_names(names: Vec<String>) -> Self {
        Self { names }
    }

    /// The sorted set of labels seen in `rows`.
    pub fn from_rows(rows: &[Row]) -> Self {
        Self::sorted(rows.iter().filter_map(|r| r.label.clone()))
    }

    /// The distinct `names`, sorted: numerically when every one is an integer.
    pub fn sorted(names: impl IntoIterator<Item = String>) -> Self {
        let set: BTreeSet<String> = names.into_iter().collect();
        let mut names: Vec<String> = set.into_iter().collect();
        if names.iter().all(|n| n.parse::<i64>().is_ok()) {
            names.sort_by_key(|n| n.parse::<i64>().unwrap_or(0));
        }
        Self { names }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// transformers names the classes of a model saved without label names `LABEL_0`,
    /// `LABEL_1`, ...; the data of such a model holds the integers. Those names become the
    /// integers, other names stay as they are.
    pub fn with_default_names_as_ids(&self) -> Self {
        let default = self
            .names
            .iter()
            .enumerate()
            .all(|(i, n)| *n == format!("LABEL_{i}"));
        if !default {
            return self.clone();
        }
        Self {
            names: (0..self.names.len()).map(|i| i.to_string()).collect(),
        }
    }
}

/// A labelled example ready for tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub line: u64,
    pub text: String,
    pub text_pair: Option<String>,
    pub label: usize,
}

/// The id of a row's label; an empty label or one outside `labels` is an error naming the
/// row.
pub fn label_id(file: &Path, row: &Row, labels: &LabelSet) -> Result<usize, DataError> {
    let name = row.label.as_deref().unwrap_or("");
    let error = |message: String| DataError::Row {
        file: file.to_path_buf(),
        line: row.line,
        message,
    };
    if name.trim().is_empty() {
        return Err(error("empty label".into()));
    }
    labels.id(name).ok_or_else(|| {
        error(format!(
            "label `{name}` was not seen in training (known labels: {})",
            labels.names().join(", ")
        ))
    })
}

/// Maps each row's label to its id (see [`label_id`]).
pub fn label_rows(
    file: &Path,
    rows: Vec<Row>,
    labels: &LabelSet,
) -> Result<Vec<Example>, DataError> {
    rows.into_iter()
        .map(|row| {
            let label = label_id(file, &row, labels)?;
            Ok(Example {
                line: row.line,
                text: row.text,
                text_pair: row.text_pair,
                label,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bertcls-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn cols(text: &str, label: Option<&str>) -> Columns {
        Columns {
            text: text.into(),
            text_pair: None,
            label: label.map(Into::into),
        }
    }

    fn read(name: &str, content: &[u8], columns: &Columns) -> Result<Vec<Row>, DataError> {
        let path = write(name, content);
        read_rows(&path, Format::from_path(&path)?, columns, None)
    }

    #[test]
    fn reads_csv_tsv_and_jsonl_alike() {
        let c = cols("text", Some("label"));
        let csv = read("a.csv", b"label,text\npos,\"good, really\"\nneg,bad\n", &c).unwrap();
        let tsv = read("a.tsv", b"label\ttext\npos\tgood, really\nneg\tbad\n", &c).unwrap();
        let jsonl = read(
            "a.jsonl",
            b"{\"label\":\"pos\",\"text\":\"good, really\"}\n\n{\"label\":\"neg\",\"text\":\"bad\"}\n",
            &c,
        )
        .unwrap();
        let strip = |rows: Vec<Row>| {
            rows.into_iter()
                .map(|r| (r.text, r.label))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(csv.clone()), strip(tsv));
        assert_eq!(strip(csv.clone()), strip(jsonl.clone()));
        assert_eq!(csv[1].line, 3);
        assert_eq!(jsonl[1].line, 3, "blank lines still count");
    }

    #[test]
    fn tsv_keeps_quotes_as_text() {
        let rows = read(
            "q.tsv",
            b"label\ttext\n1\tsaid \"hi\n",
            &cols("text", Some("label")),
        )
        .unwrap();
        assert_eq!(rows[0].text, "said \"hi");
    }

    #[test]
    fn integer_labels_sort_numerically() {
        let rows: Vec<Row> = ["10", "9", "2", "9"]
            .iter()
            .map(|l| Row {
                line: 1,
                text: "x".into(),
                text_pair: None,
                label: Some(l.to_string()),
            })
            .collect();
        assert_eq!(LabelSet::from_rows(&rows).names(), &["2", "9", "10"]);
        let json = read(
            "n.jsonl",
            b"{\"t\":\"a\",\"y\":1}\n{\"t\":\"b\",\"y\":0}\n",
            &cols("t", Some("y")),
        )
        .unwrap();
        assert_eq!(LabelSet::from_rows(&json).names(), &["0", "1"]);
    }

    #[test]
    fn missing_column_suggests_the_closest() {
        let e = read(
            "m.csv",
            b"label,sentence\n1,a\n",
            &cols("sentense", Some("label")),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("m.csv") && msg.contains("`sentense`"), "{msg}");
        assert!(msg.contains("did you mean `sentence`"), "{msg}");
        let e = read(
            "t.csv",
            b"label\tsentence\n1\ta\n",
            &cols("sentence", Some("label")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tab-separated"), "{e}");
    }

    #[test]
    fn row_errors_name_file_and_line() {
        let c = cols("text", Some("label"));
        let e = read("r.csv", b"label,text\n1,a\n1,b,c\n", &c).unwrap_err();
        assert!(e.is_row_error());
        assert!(
            e.to_string()
                .starts_with(&format!("{}:3:", write("r.csv", b"").display())),
            "{e}"
        );
        let e = read("e.csv", b"label,text\n1,a\n0,\n", &c).unwrap_err();
        assert!(
            e.to_string().contains(":3: empty text in column `text`"),
            "{e}"
        );
        let e = read("u.csv", b"label,text\n1,ok\n0,caf\xe9\n", &c).unwrap_err();
        assert!(
            e.to_string().contains(":3: invalid UTF-8 in column `text`"),
            "{e}"
        );
        let e = read(
            "j.jsonl",
            b"{\"label\":1,\"text\":\"a\"}\n{\"label\":1,\n",
            &c,
        )
        .unwrap_err();
        assert!(e.to_string().contains(":2: column"), "{e}");
    }

    #[test]
    fn repeated_column_names_are_refused() {
        let c = cols("text", Some("label"));
        let e = read("dup.csv", b"label,text,id,text,label\n1,a,2,b,0\n", &c).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "dup.csv:1: repeated column names make the header ambiguous: `label` (columns \
                 1, 5), `text` (columns 2, 4); rename them so that each column has its own name"
            ),
            "{e}"
        );
        let e = read("dup.tsv", b"text\t x\tx \n1\t2\t3\n", &c).unwrap_err();
        assert!(e.to_string().contains("`x` (columns 2, 3)"), "{e}");
        assert!(read("dup-empty.csv", b"text,,\na,,\n", &cols("text", None)).is_err());
        assert!(read("one-empty.csv", b"text,\na,\n", &cols("text", None)).is_ok());
    }

    #[test]
    fn empty_and_header_only_files() {
        let c = cols("text", Some("label"));
        assert!(
            read("empty.csv", b"", &c)
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        let e = read("header.csv", b"label,text\n", &c).unwrap_err();
        assert!(e.to_string().contains("no data rows"), "{e}");
    }

    #[test]
    fn bom_is_ignored() {
        let c = cols("text", Some("label"));
        let rows = read("bom.csv", b"\xEF\xBB\xBFlabel,text\n1,a\n", &c).unwrap();
        assert_eq!(rows[0].label.as_deref(), Some("1"));
        let rows = read(
            "bom.jsonl",
            b"\xEF\xBB\xBF{\"label\":1,\"text\":\"a\"}\n",
            &c,
        )
        .unwrap();
        assert_eq!(rows[0].text, "a");
    }

    #[test]
    fn default_transformers_names_stand_for_integers() {
        let default = LabelSet::from_names(vec!["LABEL_0".into(), "LABEL_1".into()]);
        assert_eq!(default.with_default_names_as_ids().names(), &["0", "1"]);
        let named = LabelSet::from_names(vec!["LABEL_1".into(), "LABEL_0".into()]);
        assert_eq!(named.with_default_names_as_ids(), named);
    }

    #[test]
    fn unknown_label_is_named() {
        let labels = LabelSet::from_names(vec!["neg".into(), "pos".into()]);
        let rows = vec![Row {
            line: 7,
            text: "x".into(),
            text_pair: None,
            label: Some("neutral".into()),
        }];
        let e = label_rows(Path::new("dev.csv"), rows, &labels).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dev.csv:7: label `neutral` was not seen in training (known labels: neg, pos)"
        );
    }
}
