//! Weight files: reading Hugging Face checkpoints (safetensors or PyTorch pickles, with or
//! without the base-model prefix, old `gamma`/`beta` layer norm names), checking them against
//! `config.json`, initialising a new classification head, and writing `model.safetensors`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use super::SequenceClassifier;
use super::config::ModelConfig;
use super::params::{Kind, Request, Source};
use super::pickle::TorchCheckpoint;
use crate::rng::Rng;

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
}

/// How the head of a loaded model came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadInit {
    /// Every parameter must be in the checkpoint (evaluation, prediction).
    Require,
    /// Initialise the head's parameters when missing or shaped for other labels (fine-tuning
    /// a base model), drawing from this seed.
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

/// The parameters a model asks for, found in a checkpoint under transformers' names, without
/// the base-model prefix (base checkpoints) or with old `gamma`/`beta` layer norm names.
/// Shapes are checked against the request before a tensor is read, and an embedding table of
/// the wrong size is an error naming the config.json field that sets it.
struct CheckpointSource<'a> {
    checkpoint: Checkpoint,
    config_path: PathBuf,
    file_name: String,
    base: &'static str,
    stored: HashMap<String, Vec<usize>>,
    used: HashSet<String>,
    rng: Option<Rng>,
    init_range: f64,
    device: &'a Device,
    initialized: Vec<String>,
}

impl CheckpointSource<'_> {
    fn candidates(&self, name: &str, kind: Kind) -> Vec<String> {
        let mut names = vec![name.to_string()];
        if let Some(rest) = name
            .strip_prefix(self.base)
            .and_then(|r| r.strip_prefix('.'))
        {
            names.push(rest.to_string());
        }
        if kind == Kind::Norm {
            let old: Vec<String> = names
                .iter()
                .filter_map(|n| {
                    n.strip_suffix(".weight")
                        .map(|p| format!("{p}.gamma"))
                        .or_else(|| n.strip_suffix(".bias").map(|p| format!("{p}.beta")))
                })
                .collect();
            names.extend(old);
        }
        names
    }

    fn init(&mut self, r: &Request) -> Result<Tensor> {
        let rng = self.rng.as_mut().expect("init is only called with a seed");
        self.initialized.push(r.name.to_string());
        Ok(init_parameter(r, self.init_range, rng)?.to_device(self.device)?)
    }

    fn shape_error(&self, r: &Request, stored: &str, dims: &[usize]) -> anyhow::Error {
        let (config, file, path) = (
            self.config_path.display(),
            &self.file_name,
            self.checkpoint.path.display(),
        );
        let Some((rows_field, cols_field)) = r.fields else {
            return anyhow::anyhow!(
                "{path}: tensor `{stored}` has shape {dims:?} but config.json implies {:?}",
                r.shape
            );
        };
        match (dims, r.shape) {
            ([rows, _], [want, _]) if rows != want => anyhow::anyhow!(
                "{config}: {rows_field} is {want} but `{stored}` in {file} has {rows} rows"
            ),
            ([_, cols], [_, want]) => anyhow::anyhow!(
                "{config}: {cols_field} is {want} but `{stored}` in {file} has {cols} columns"
            ),
            _ => anyhow::anyhow!(
                "{path}: tensor `{stored}` has shape {dims:?}, not ({rows_field}, {cols_field})"
            ),
        }
    }
}

impl Source for CheckpointSource<'_> {
    fn tensor(&mut self, r: &Request) -> Result<Tensor> {
        let found = self
            .candidates(r.name, r.kind)
            .into_iter()
            .find(|n| self.stored.contains_key(n));
        let may_init = r.head && self.rng.is_some();
        match found {
            Some(stored) => {
                let dims = self.stored[&stored].clone();
                self.used.insert(stored.clone());
                if dims == r.shape {
                    let tensor = self.checkpoint.tensor(&stored)?.to_dtype(DType::F32)?;
                    Ok(tensor.to_device(self.device)?)
                } else if may_init {
                    self.init(r)
                } else {
                    Err(self.shape_error(r, &stored, &dims))
                }
            }
            None if may_init => self.init(r),
            None => bail!(
                "{}: missing tensor `{}`",
                self.checkpoint.path.display(),
                r.name
            ),
        }
    }

    fn check_count(&self, prefix: &str, count: usize, field: &str) -> Result<()> {
        let prefixes = self.candidates(prefix, Kind::Weight);
        let present = |l: usize| {
            self.stored
                .keys()
                .any(|n| prefixes.iter().any(|p| n.starts_with(&format!("{p}.{l}."))))
        };
        let found = (0..count).take_while(|l| present(*l)).count();
        if found < count {
            bail!(
                "{}: {field} is {count} but {} has {found} layer(s)",
                self.config_path.display(),
                self.file_name
            );
        }
        Ok(())
    }
}

/// The number of classes of the checkpoint's classifier, if it has one.
pub fn classifier_size(dir: &Path, config: &ModelConfig) -> Result<Option<usize>> {
    let checkpoint = Checkpoint::open(&checkpoint_file(dir)?)?;
    let name = format!("{}.weight", config.architecture().output_layer());
    Ok(checkpoint
        .shapes()
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, shape)| shape.first().copied()))
}

/// Loads, renames, converts to f32 and checks the parameters of a model folder against its
/// config, building the model as its architecture asks for them; moves them to `device`.
pub fn load(
    dir: &Path,
    config: &ModelConfig,
    num_labels: usize,
    head: HeadInit,
    device: &Device,
) -> Result<LoadedWeights> {
    let file = checkpoint_file(dir)?;
    let checkpoint = Checkpoint::open(&file)?;
    let order: Vec<String> = checkpoint.shapes().iter().map(|(n, _)| n.clone()).collect();
    let mut source = CheckpointSource {
        stored: checkpoint.shapes().iter().cloned().collect(),
        checkpoint,
        config_path: dir.join("config.json"),
        file_name: file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        base: config.architecture().base_prefix(),
        used: HashSet::new(),
        rng: match head {
            HeadInit::InitMissing(seed) => Some(Rng::derive(seed, 0x4EAD)),
            HeadInit::Require => None,
        },
        init_range: config.initializer_range,
        device,
        initialized: Vec::new(),
    };
    let model = SequenceClassifier::build(config, num_labels, &mut source)?;
    let tensors = model
        .parameters()
        .iter()
        .map(|p| (p.name.clone(), p.tensor.clone()))
        .collect();
    let ignored = order
        .into_iter()
        .filter(|n| !source.used.contains(n))
        .collect();
    Ok(LoadedWeights {
        tensors,
        initialized: source.initialized,
        ignored,
    })
}

/// A new parameter as transformers' `_init_weights` makes it: weights and embeddings
/// ~ N(0, range), biases 0, layer norms 1 and 0.
fn init_parameter(r: &Request, range: f64, rng: &mut Rng) -> Result<Tensor> {
    let n: usize = r.shape.iter().product();
    let data: Vec<f32> = match r.kind {
        Kind::Bias => vec![0.0; n],
        Kind::Norm if r.name.ends_with(".bias") => vec![0.0; n],
        Kind::Norm => vec![1.0; n],
        Kind::Weight | Kind::Embedding => (0..n).map(|_| (rng.normal() * range) as f32).collect(),
    };
    Ok(Tensor::from_vec(data, r.shape, &Device::Cpu)?)
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
