//! Tokenization: loading a model folder's tokenizer (or building BERT's WordPiece tokenizer
//! from `vocab.txt`), encoding texts and text pairs, padding batches, and length statistics.
//!
//! No cache: encoding all 67,349 SST-2 training sentences takes about 2 s on 2 cores (see
//! `bertcls tokenize`, which prints its own timing), less than one training step.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// One encoded input: token ids and segment ids, with `[CLS]`/`[SEP]` added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// One input to classify: a text, or a pair of texts (a question and a passage, two
/// sentences to compare...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input<'a> {
    pub text: &'a str,
    pub text_pair: Option<&'a str>,
}

impl<'a> Input<'a> {
    pub fn new(text: &'a str, text_pair: Option<&'a str>) -> Self {
        Self { text, text_pair }
    }
}

impl<'a> From<&'a str> for Input<'a> {
    fn from(text: &'a str) -> Self {
        Self::new(text, None)
    }
}

impl<'a> From<(&'a str, &'a str)> for Input<'a> {
    fn from((text, pair): (&'a str, &'a str)) -> Self {
        Self::new(text, Some(pair))
    }
}

impl<'a> From<&'a crate::data::Row> for Input<'a> {
    fn from(row: &'a crate::data::Row) -> Self {
        Self::new(&row.text, row.text_pair.as_deref())
    }
}

impl<'a> From<&'a crate::data::Example> for Input<'a> {
    fn from(example: &'a crate::data::Example) -> Self {
        Self::new(&example.text, example.text_pair.as_deref())
    }
}

/// A tokenizer set up for classification inputs of at most `max_length` tokens.
#[derive(Clone)]
pub struct TextEncoder {
    /// The file the tokenizer came from, named in encoding errors.
    origin: String,
    tokenizer: Tokenizer,
    /// The same tokenizer with truncation at `max_length` set.
    truncating: Tokenizer,
    max_length: usize,
    pad_id: u32,
    unk_id: Option<u32>,
}

fn tokenizer_error(e: tokenizers::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.to_string().replace('\n', " "))
}

/// BERT's WordPiece tokenizer from a `vocab.txt`, with the casing from `tokenizer_config.json`
/// when the folder has one, as `BertTokenizerFast` builds it.
fn tokenizer_from_vocab(dir: &Path) -> Result<Tokenizer> {
    let vocab = dir.join("vocab.txt");
    let settings: serde_json::Value = std::fs::read(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let lowercase = settings["do_lower_case"].as_bool().unwrap_or(true);
    let chinese = settings["tokenize_chinese_chars"].as_bool().unwrap_or(true);
    let strip_accents = settings["strip_accents"].as_bool();
    let wordpiece = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| anyhow::anyhow!("{}: {e}", vocab.display()))?;
    let mut tokenizer = Tokenizer::new(wordpiece);
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .with_context(|| format!("{}: no {token} token", vocab.display()))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            chinese,
            strip_accents,
            lowercase,
        )))
        .map_err(tokenizer_error)?
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )))
        .with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    Ok(tokenizer)
}

/// SentencePiece models that checkpoints without a tokenizer.json carry.
pub const SENTENCEPIECE_FILES: &[&str] =
    &["sentencepiece.bpe.model", "spm.model", "tokenizer.model"];

/// What to do about a checkpoint whose tokenizer is a SentencePiece model only: the
/// `tokenizers` crate reads tokenizer.json, and converting is the Python library's job.
pub const CONVERT_SENTENCEPIECE: &str = "bertcls reads tokenizer.json; write one with \
    `AutoTokenizer.from_pretrained(FOLDER).save_pretrained(FOLDER)` in Python (transformers \
    converts the SentencePiece model)";

/// The error for a model folder without a tokenizer bertcls can read, naming the
/// SentencePiece model it has instead, if any.
pub fn missing_tokenizer(dir: &Path) -> anyhow::Error {
    match SENTENCEPIECE_FILES.iter().find(|f| dir.join(f).is_file()) {
        Some(name) => anyhow::anyhow!(
            "{}: model folder has {name} but no tokenizer.json: {CONVERT_SENTENCEPIECE}",
            dir.display()
        ),
        None => anyhow::anyhow!(
            "{}: model folder has no tokenizer (tokenizer.json or vocab.txt)",
            dir.display()
        ),
    }
}

/// Loads `tokenizer.json` from a model folder, or builds the tokenizer from `vocab.txt`.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let json = dir.join("tokenizer.json");
    let mut tokenizer = if json.is_file() {
        crate::panics::contain(|| Tokenizer::from_file(&json).map_err(tokenizer_error))
            .with_context(|| json.display().to_string())?
    } else if dir.join("vocab.txt").is_file() {
        crate::panics::contain(|| tokenizer_from_vocab(dir))?
    } else {
        return Err(missing_tokenizer(dir));
    };
    // Some tokenizer.json files carry padding and truncation settings from their export
    // (all-MiniLM-L6-v2 pads everything to 128): bertcls pads per batch and truncates itself.
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(tokenizer_error)?;
    Ok(tokenizer)
}

impl TextEncoder {
    /// `origin` names the tokenizer in errors (its file, usually).
    pub fn new(tokenizer: Tokenizer, max_length: usize, origin: &str) -> Result<Self> {
        let pad_id = first_known(&tokenizer, &["[PAD]", "<pad>"]).unwrap_or(0);
        let unk_id = first_known(&tokenizer, &["[UNK]", "<unk>"]);
        let mut truncating = tokenizer.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(tokenizer_error)?;
        Ok(Self {
            origin: origin.to_string(),
            tokenizer,
            truncating,
            max_length,
            pad_id,
            unk_id,
        })
    }

    pub fn load(dir: &Path, max_length: usize) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let origin = if json.is_file() {
            json
        } else {
            dir.join("vocab.txt")
        };
        let mut encoder = Self::new(
            load_tokenizer(dir)?,
            max_length,
            &origin.display().to_string(),
        )?;
        let configs = special_token_configs(dir);
        if let Some(id) = named_special_token(&configs, &encoder.tokenizer, "pad_token") {
            encoder.pad_id = id;
        }
        if let Some(id) = named_special_token(&configs, &encoder.tokenizer, "unk_token") {
            encoder.unk_id = Some(id);
        }
        Ok(encoder)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Every id the tokenizer can produce, added tokens included: the rows the model's
    /// embedding table must have.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// Encodes texts (and second texts of pairs), truncated to `max_length` tokens with the
    /// longer of a pair shortened first, as `transformers` does.
    pub fn encode(&self, inputs: &[Input]) -> Result<Vec<Encoded>> {
        self.encode_using(&self.truncating, inputs)
    }

    /// As [`TextEncoder::encode`] without truncation: for length statistics.
    pub fn encode_untruncated(&self, inputs: &[Input]) -> Result<Vec<Encoded>> {
        self.encode_using(&self.tokenizer, inputs)
    }

    /// As [`TextEncoder::encode`] (or, with `truncate` false, [`TextEncoder::encode_untruncated`])
    /// on the calling thread alone. The batch encoders spread the inputs over rayon's pool,
    /// the pool inference runs its matrix products on: a server tokenizing there would wait
    /// for the model.
    pub fn encode_here(&self, inputs: &[Input], truncate: bool) -> Result<Vec<Encoded>> {
        let tokenizer = if truncate {
            &self.truncating
        } else {
            &self.tokenizer
        };
        self.contained(|| {
            inputs
                .iter()
                .map(|input| {
                    let encoding = tokenizer
                        .encode(encode_input(input), true)
                        .map_err(tokenizer_error)?;
                    Ok(Encoded::from(&encoding))
                })
                .collect()
        })
    }

    fn encode_using(&self, tokenizer: &Tokenizer, inputs: &[Input]) -> Result<Vec<Encoded>> {
        self.contained(|| encode_with(tokenizer, inputs))
    }

    /// A tokenizer.json's normalizer and pre-tokenizer run regular expressions from the
    /// file: one that backtracks without end makes the regex engine panic, contained here.
    fn contained(&self, f: impl FnOnce() -> Result<Vec<Encoded>>) -> Result<Vec<Encoded>> {
        crate::panics::contain(f).with_context(|| format!("{}: cannot tokenize", self.origin))
    }

    /// Writes `tokenizer.json` into a model folder, without padding or truncation baked in.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = self.tokenizer.to_string(true).map_err(tokenizer_error)?;
        crate::atomic::write(dir.join("tokenizer.json"), json.as_bytes())
    }
}

/// The id of the first of `spellings` the tokenizer knows.
fn first_known(tokenizer: &Tokenizer, spellings: &[&str]) -> Option<u32> {
    spellings.iter().find_map(|t| tokenizer.token_to_id(t))
}

/// The id of the special token `key` (`pad_token`, `unk_token`) as the folder's
/// tokenizer_config.json or special_tokens_map.json names it (a string, or an added-token
/// object with its `content`), when the tokenizer knows it.
fn named_special_token(
    configs: &[serde_json::Value],
    tokenizer: &Tokenizer,
    key: &str,
) -> Option<u32> {
    configs.iter().find_map(|json| {
        let token = match &json[key] {
            serde_json::Value::String(t) => t.as_str(),
            other => other["content"].as_str()?,
        };
        tokenizer.token_to_id(token)
    })
}

/// `tokenizer_config.json`, then `special_tokens_map.json`: those of them that exist and parse.
fn special_token_configs(dir: &Path) -> Vec<serde_json::Value> {
    ["tokenizer_config.json", "special_tokens_map.json"]
        .iter()
        .filter_map(|file| serde_json::from_slice(&std::fs::read(dir.join(file)).ok()?).ok())
        .collect()
}

fn encode_input<'a>(input: &Input<'a>) -> tokenizers::EncodeInput<'a> {
    match input.text_pair {
        Some(b) => (input.text, b).into(),
        None => input.text.into(),
    }
}

impl From<&tokenizers::Encoding> for Encoded {
    fn from(e: &tokenizers::Encoding) -> Self {
        Self {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
        }
    }
}

fn encode_with(tokenizer: &Tokenizer, inputs: &[Input]) -> Result<Vec<Encoded>> {
    let batch: Vec<tokenizers::EncodeInput> = inputs.iter().map(encode_input).collect();
    let encodings = tokenizer
        .encode_batch(batch, true)
        .map_err(tokenizer_error)?;
    Ok(encodings.iter().map(Encoded::from).collect())
}

/// A padded batch on a device.
pub struct Batch {
    /// (batch, seq) u32
    pub input_ids: Tensor,
    /// (batch, seq) u32
    pub token_type_ids: Tensor,
    /// (batch, seq) f32: 1 for real tokens, 0 for padding
    pub attention_mask: Tensor,
    /// Real (unpadded) tokens in the batch.
    pub real_tokens: usize,
}

impl Batch {
    /// Pads the inputs to the longest of them (or to `pad_to` when given).
    pub fn collate(
        items: &[&Encoded],
        pad_id: u32,
        pad_to: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let longest = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let seq = pad_to.map_or(longest, |p| p.max(longest));
        let n = items.len();
        let mut ids = vec![pad_id; n * seq];
        let mut types = vec![0u32; n * seq];
        let mut mask = vec![0f32; n * seq];
        let mut real_tokens = 0;
        for (i, e) in items.iter().enumerate() {
            let row = i * seq;
            ids[row..row + e.ids.len()].copy_from_slice(&e.ids);
            types[row..row + e.type_ids.len()].copy_from_slice(&e.type_ids);
            mask[row..row + e.ids.len()].fill(1.0);
            real_tokens += e.ids.len();
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (n, seq), device)?,
            token_type_ids: Tensor::from_vec(types, (n, seq), device)?,
            attention_mask: Tensor::from_vec(mask, (n, seq), device)?,
            real_tokens,
        })
    }
}

/// Token-length statistics of a data set, printed by `bertcls tokenize`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LengthStats {
    pub rows: usize,
    pub min: usize,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
    pub max_seq_length: usize,
    pub truncated_percent: f64,
    pub unk_percent: f64,
    pub tokens: usize,
}

impl LengthStats {
    pub fn compute(encoded: &[Encoded], max_seq_length: usize, unk_id: Option<u32>) -> Self {
        let mut lengths: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
        lengths.sort_unstable();
        let n = lengths.len();
        let pick = |q: f64| {
            if n == 0 {
                0
            } else {
                lengths[((q * (n - 1) as f64).round() as usize).min(n - 1)]
            }
        };
        let tokens: usize = lengths.iter().sum();
        let unk = unk_id.map_or(0, |u| {
            encoded
                .iter()
                .map(|e| e.ids.iter().filter(|&&i| i == u).count())
                .sum()
        });
        let truncated = lengths.iter().filter(|&&l| l > max_seq_length).count();
        let percent = |part: usize, whole: usize| {
            if whole == 0 {
                0.0
            } else {
                100.0 * part as f64 / whole as f64
            }
        };
        Self {
            rows: n,
            min: lengths.first().copied().unwrap_or(0),
            median: pick(0.5),
            p95: pick(0.95),
            max: lengths.last().copied().unwrap_or(0),
            max_seq_length,
            truncated_percent: percent(truncated, n),
            unk_percent: percent(unk, tokens),
            tokens,
        }
    }
}

impl std::fmt::Display for LengthStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "rows                 {}", self.rows)?;
        writeln!(
            f,
            "tokens per row       min {}  median {}  p95 {}  max {}",
            self.min, self.median, self.p95, self.max
        )?;
        writeln!(
            f,
            "truncated at {:<7} {:.2}% of rows",
            self.max_seq_length, self.truncated_percent
        )?;
        write!(
            f,
            "[UNK]                {:.3}% of {} tokens",
            self.unk_percent, self.tokens
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::TINY_VOCAB;

    fn write_vocab(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("vocab.txt"), TINY_VOCAB.join("\n") + "\n").unwrap();
    }

    fn encoder(max_length: usize) -> TextEncoder {
        let dir =
            std::env::temp_dir().join(format!("bertcls-tok-{}-{max_length}", std::process::id()));
        write_vocab(&dir);
        let encoder = TextEncoder::load(&dir, max_length).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        encoder
    }

    #[test]
    fn vocab_fallback_builds_bert_wordpiece() {
        let enc = encoder(16);
        let out = enc.encode(&["The movies were GOOD!".into()]).unwrap();
        let tokens: Vec<&str> = out[0].ids.iter().map(|&i| TINY_VOCAB[i as usize]).collect();
        assert_eq!(
            tokens,
            [
                "[CLS]", "the", "movie", "##s", "[UNK]", "good", "!", "[SEP]"
            ]
        );
        let chinese = enc.encode(&["我喜欢这本书".into()]).unwrap();
        assert_eq!(chinese[0].ids.len(), 8, "each CJK character is a token");
    }

    #[test]
    fn pairs_get_segment_ids_and_truncate_longest_first() {
        let enc = encoder(8);
        let out = enc
            .encode(&[("the movie was very very good", "fun").into()])
            .unwrap();
        assert_eq!(out[0].ids.len(), 8);
        assert_eq!(out[0].type_ids, [0, 0, 0, 0, 0, 0, 1, 1]);
        let stats = LengthStats::compute(
            &enc.encode_untruncated(&[("the movie was very very good", "fun").into()])
                .unwrap(),
            8,
            enc.unk_id(),
        );
        assert_eq!(stats.max, 10);
        assert_eq!(stats.truncated_percent, 100.0);
    }

    #[test]
    fn collate_pads_to_the_longest() {
        let a = Encoded {
            ids: vec![2, 5, 3],
            type_ids: vec![0, 0, 0],
        };
        let b = Encoded {
            ids: vec![2, 5, 6, 7, 3],
            type_ids: vec![0; 5],
        };
        let batch = Batch::collate(&[&a, &b], 0, None, &Device::Cpu).unwrap();
        assert_eq!(batch.input_ids.dims(), &[2, 5]);
        assert_eq!(
            batch.attention_mask.to_vec2::<f32>().unwrap()[0],
            vec![1.0, 1.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(batch.real_tokens, 8);
        let padded = Batch::collate(&[&a], 0, Some(16), &Device::Cpu).unwrap();
        assert_eq!(padded.input_ids.dims(), &[1, 16]);
    }

    #[test]
    fn folder_without_tokenizer_is_an_error() {
        let dir = std::env::temp_dir().join(format!("bertcls-notok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = TextEncoder::load(&dir, 8).err().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.to_string().contains("has no tokenizer"), "{e}");
    }
}
