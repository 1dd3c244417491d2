//! Weight files: reading Hugging Face checkpoints (safetensors or PyTorch pickles, with or
//! without the `bert.` prefix, old `gamma`/`beta` LayerNorm names), checking them against
//! `config.json`, initialising a new classification head, and writing `model.safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use super::config::BertConfig;
use super::pickle::TorchCheckpoint;
use crate::rng::Rng;

/// Named tensors a model is built from.
#[derive(Clone)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self { tensors }
    }

    pub fn get(&self, name: &str) -> candle_core::Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{name}`")))
    }
}

/// Every parameter of `BertForSequenceClassification` with its shape, in the order of
/// `model.named_parameters()` in transformers.
pub fn parameter_shapes(c: &BertConfig, num_labels: usize) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut out = vec![
        (
            "bert.embeddings.word_embeddings.weight".to_string(),
            vec![c.vocab_size, h],
        ),
        (
            "bert.embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "bert.embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        ),
        ("bert.embeddings.LayerNorm.weight".into(), vec![h]),
        ("bert.embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("bert.encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out.push(("bert.pooler.dense.weight".into(), vec![h, h]));
    out.push(("bert.pooler.dense.bias".into(), vec![h]));
    out.push(("classifier.weight".into(), vec![num_labels, h]));
    out.push(("classifier.bias".into(), vec![num_labels]));
    out
}

/// Whether AdamW's weight decay applies: not to biases and LayerNorm weights, as
/// transformers' `Trainer` groups its parameters.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

/// The transformers name of a checkpoint tensor, or `None` for tensors a sequence
/// classifier does not use (buffers such as `position_ids`, pre-training heads).
pub fn canonical_name(name: &str) -> Option<String> {
    let name = name
        .strip_suffix("LayerNorm.gamma")
        .map(|p| format!("{p}LayerNorm.weight"))
        .or_else(|| {
            name.strip_suffix("LayerNorm.beta")
                .map(|p| format!("{p}LayerNorm.bias"))
        })
        .unwrap_or_else(|| name.to_string());
    if name.ends_with("position_ids") {
        return None;
    }
    if name.starts_with("bert.") || name.starts_with("classifier.") {
        return Some(name);
    }
    for part in ["embeddings.", "encoder.", "pooler."] {
        if name.starts_with(part) {
            return Some(format!("bert.{name}"));
        }
    }
    None
}

/// The weights file of a model folder: `model.safetensors`, else `pytorch_model.bin`.
pub fn checkpoint_file(dir: &Path) -> Result<PathBuf> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "{}: model folder has no weights (model.safetensors or pytorch_model.bin)",
        dir.display()
    )
}

/// An opened weights file: the names and shapes of its tensors, known before any tensor
/// is read, so that they can be checked against `config.json` first.
pub struct Checkpoint {
    path: PathBuf,
    shapes: Vec<(String, Vec<usize>)>,
    format: Format,
}

enum Format {
    /// The whole file: safetensors' header gives every tensor's place in it.
    Safetensors(Vec<u8>),
    Torch(Box<TorchCheckpoint<BufReader<File>>>),
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let (format, shapes) = if is_safetensors {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let shapes = SafeTensors::deserialize(&bytes)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: not a valid safetensors file (truncated or corrupt?): {e}",
                        path.display()
                    )
                })?
                .tensors()
                .into_iter()
                .map(|(name, view)| (name, view.shape().to_vec()))
                .collect();
            (Format::Safetensors(bytes), shapes)
        } else {
            let file =
                File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let torch = TorchCheckpoint::new(BufReader::new(file)).map_err(|e| {
                anyhow::anyhow!("{}: not a readable PyTorch checkpoint: {e}", path.display())
            })?;
            let shapes = torch
                .records()
                .iter()
                .map(|r| (r.name.clone(), r.shape.clone()))
                .collect();
            (Format::Torch(Box::new(torch)), shapes)
        };
        Ok(Self {
            path: path.to_path_buf(),
            shapes,
            format,
        })
    }

    /// Every tensor's name, as the file spells it, and shape.
    pub fn shapes(&self) -> &[(String, Vec<usize>)] {
        &self.shapes
    }

    /// Reads one tensor onto the CPU.
    pub fn tensor(&mut self, name: &str) -> Result<Tensor> {
        let tensor = match &mut self.format {
            Format::Safetensors(bytes) => SafeTensors::deserialize(bytes)
                .and_then(|st| st.tensor(name))
                .map_err(anyhow::Error::from)
                .and_then(|view| Ok(view.load(&Device::Cpu)?)),
            Format::Torch(torch) => torch.tensor(name).map_err(anyhow::Error::from),
        };
        tensor.with_context(|| format!("{}: cannot read tensor `{name}`", self.path.display()))
    }

    /// The file's tensors under transformers' names: canonical name -> (name in the file,
    /// shape). A name given twice (with and without the `bert.` prefix) keeps the last.
    fn canonical(&self) -> BTreeMap<String, (String, Vec<usize>)> {
        self.shapes
            .iter()
            .filter_map(|(name, shape)| {
                canonical_name(name).map(|c| (c, (name.clone(), shape.clone())))
            })
            .collect()
    }
}

/// Checks the sizes in `config.json` that set how many tensors there are and how large the
/// new head is against the checkpoint, before any of them is used: a config claiming a
/// thousand layers or another hidden size is an error naming the field, not an attempt to
/// build that model. The shape of every other tensor is checked as it is loaded.
fn check_config(
    config: &BertConfig,
    dir: &Path,
    checkpoint: &Checkpoint,
    found: &BTreeMap<String, (String, Vec<usize>)>,
) -> Result<()> {
    let config_path = dir.join("config.json");
    let file = checkpoint
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let embedding = |what: &str, field: &str, rows: usize| -> Result<()> {
        let name = format!("bert.embeddings.{what}.weight");
        let Some((_, shape)) = found.get(&name) else {
            bail!("{}: missing tensor `{name}`", checkpoint.path.display());
        };
        if shape.len() != 2 {
            bail!(
                "{}: tensor `{name}` has shape {shape:?}, not (rows, hidden_size)",
                checkpoint.path.display()
            );
        }
        if shape[0] != rows {
            bail!(
                "{}: {field} is {rows} but `{name}` in {file} has {} rows",
                config_path.display(),
                shape[0]
            );
        }
        if shape[1] != config.hidden_size {
            bail!(
                "{}: hidden_size is {} but `{name}` in {file} has {} columns",
                config_path.display(),
                config.hidden_size,
                shape[1]
            );
        }
        Ok(())
    };
    embedding("word_embeddings", "vocab_size", config.vocab_size)?;
    embedding(
        "position_embeddings",
        "max_position_embeddings",
        config.max_position_embeddings,
    )?;
    embedding(
        "token_type_embeddings",
        "type_vocab_size",
        config.type_vocab_size,
    )?;
    let layers = (0..)
        .take_while(|l| {
            let prefix = format!("bert.encoder.layer.{l}.");
            found
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(n, _)| n.starts_with(&prefix))
        })
        .count();
    if config.num_hidden_layers > layers {
        bail!(
            "{}: num_hidden_layers is {} but {file} has {layers} layer(s)",
            config_path.display(),
            config.num_hidden_layers
        );
    }
    Ok(())
}

/// The number of classes of the checkpoint's classifier, if it has one.
pub fn classifier_size(dir: &Path) -> Result<Option<usize>> {
    let checkpoint = Checkpoint::open(&checkpoint_file(dir)?)?;
    Ok(checkpoint
        .canonical()
        .get("classifier.weight")
        .and_then(|(_, shape)| shape.first().copied()))
}

/// How the head of a loaded model came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadInit {
    /// Every parameter must be in the checkpoint (evaluation, prediction).
    Require,
    /// Initialise the pooler and classifier when missing or shaped for other labels
    /// (fine-tuning a base model), drawing from this seed.
    InitMissing(u64),
}

/// A checked set of parameters, ready to build a model from.
pub struct LoadedWeights {
    pub tensors: HashMap<String, Tensor>,
    /// Parameters the checkpoint did not provide, initialised here.
    pub initialized: Vec<String>,
    /// Checkpoint tensors not used by the classifier.
    pub ignored: Vec<String>,
}

/// Loads, renames, converts to f32 and checks the parameters of a model folder against its
/// config; moves them to `device`.
pub fn load(
    dir: &Path,
    config: &BertConfig,
    num_labels: usize,
    head: HeadInit,
    device: &Device,
) -> Result<LoadedWeights> {
    let file = checkpoint_file(dir)?;
    let mut checkpoint = Checkpoint::open(&file)?;
    let mut found = checkpoint.canonical();
    check_config(config, dir, &checkpoint, &found)?;
    let mut ignored: Vec<String> = checkpoint
        .shapes()
        .iter()
        .filter(|(name, _)| canonical_name(name).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    let mut rng = match head {
        HeadInit::InitMissing(seed) => Some(Rng::derive(seed, 0x4EAD)),
        HeadInit::Require => None,
    };
    let mut tensors = HashMap::new();
    let mut initialized = Vec::new();
    for (name, shape) in parameter_shapes(config, num_labels) {
        let in_head = name.starts_with("classifier.") || name.starts_with("bert.pooler.");
        let existing = found.remove(&name);
        let tensor = match (existing, rng.as_mut()) {
            (Some((stored, dims)), _) if dims == shape => {
                checkpoint.tensor(&stored)?.to_dtype(DType::F32)?
            }
            (Some(_), Some(rng)) if name.starts_with("classifier.") => {
                initialized.push(name.clone());
                init_parameter(&name, &shape, config.initializer_range, rng)?
            }
            (Some((_, dims)), _) => bail!(
                "{}: tensor `{name}` has shape {dims:?} but config.json implies {shape:?}",
                file.display(),
            ),
            (None, Some(rng)) if in_head => {
                initialized.push(name.clone());
                init_parameter(&name, &shape, config.initializer_range, rng)?
            }
            (None, _) => bail!("{}: missing tensor `{name}`", file.display()),
        };
        tensors.insert(name, tensor.to_device(device)?);
    }
    ignored.extend(found.into_keys());
    Ok(LoadedWeights {
        tensors,
        initialized,
        ignored,
    })
}

/// A new parameter as transformers' `_init_weights` makes it: weights ~ N(0, range), biases 0.
fn init_parameter(name: &str, shape: &[usize], range: f64, rng: &mut Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = if name.ends_with(".bias") {
        vec![0.0; n]
    } else {
        (0..n).map(|_| (rng.normal() * range) as f32).collect()
    };
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Writes `model.safetensors` (atomically), with the `format: pt` metadata transformers
/// expects, tensors in f32 on the CPU.
pub fn save(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, t)| {
            Ok((
                n.clone(),
                t.to_device(&Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .contiguous()?,
            ))
        })
        .collect::<Result<_>>()?;
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .with_context(|| format!("cannot serialize {}", path.display()))?;
    crate::atomic::write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_transformers_names() {
        assert_eq!(
            canonical_name("embeddings.word_embeddings.weight").as_deref(),
            Some("bert.embeddings.word_embeddings.weight")
        );
        assert_eq!(
            canonical_name("bert.encoder.layer.0.output.LayerNorm.gamma").as_deref(),
            Some("bert.encoder.layer.0.output.LayerNorm.weight")
        );
        assert_eq!(
            canonical_name("encoder.layer.3.attention.output.LayerNorm.beta").as_deref(),
            Some("bert.encoder.layer.3.attention.output.LayerNorm.bias")
        );
        assert_eq!(
            canonical_name("classifier.bias").as_deref(),
            Some("classifier.bias")
        );
        assert_eq!(canonical_name("embeddings.position_ids"), None);
        assert_eq!(canonical_name("cls.predictions.bias"), None);
    }

    #[test]
    fn weight_decay_groups() {
        assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(decays("classifier.weight"));
        assert!(!decays("classifier.bias"));
        assert!(!decays("bert.embeddings.LayerNorm.weight"));
    }
}
