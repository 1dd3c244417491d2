//! Layers every architecture is built from: linear, layer norm, dropout (through
//! [`ForwardMode`]), activations and the attention mask, each loading its parameters from a
//! [`Scope`].

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::config::Activation;
use super::int8::QuantizedLinear;
use super::params::{Kind, Scope};
use super::{bf16, int8, ops};

/// Whether dropout is on, where its masks come from, and whether gradients may flow back.
pub struct ForwardMode {
    train: bool,
    infer: bool,
    graph_attention: bool,
    seed: u64,
    calls: u64,
}

impl ForwardMode {
    /// Dropout off; the pass stays differentiable (gradients of the deterministic model).
    pub fn eval() -> Self {
        Self {
            train: false,
            infer: false,
            graph_attention: false,
            seed: 0,
            calls: 0,
        }
    }

    /// The same pass with attention composed from candle's differentiable ops (split heads,
    /// batched products, softmax, dropout) instead of the fused CPU kernels of
    /// [`super::attention`]: the reference they are tested and timed against.
    pub fn with_graph_attention(self) -> Self {
        Self {
            graph_attention: true,
            ..self
        }
    }

    /// Whether attention runs as the graph of candle ops (see
    /// [`ForwardMode::with_graph_attention`]).
    pub fn graph_attention(&self) -> bool {
        self.graph_attention
    }

    /// Inference: dropout off, and no gradient will be asked for, so kernels without a
    /// backward pass (see [`super::attention`]) may run.
    pub fn infer() -> Self {
        Self {
            infer: true,
            ..Self::eval()
        }
    }

    pub fn is_inference(&self) -> bool {
        self.infer
    }

    /// Training: every dropout in the forward pass draws an independent mask from `seed`.
    pub fn train(seed: u64) -> Self {
        Self {
            train: true,
            seed,
            ..Self::eval()
        }
    }

    pub fn dropout(&mut self, x: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        match self.dropout_seed(p) {
            Some(seed) => ops::dropout(x, p as f32, seed),
            None => Ok(x.clone()),
        }
    }

    /// The seed of the next dropout of rate `p`, if it drops anything: for a kernel that
    /// applies dropout itself, with the mask [`ops::dropout`] would draw at this point.
    pub fn dropout_seed(&mut self, p: f64) -> Option<u64> {
        if !self.train || p <= 0.0 {
            return None;
        }
        self.calls += 1;
        Some(crate::rng::mix64(self.seed ^ crate::rng::mix64(self.calls)))
    }
}

/// How a model's linear layers multiply: their tensors' dtype, or a CPU kernel in lower
/// precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Products {
    /// In the tensors' dtype (f32, or bfloat16 on a GPU).
    #[default]
    Plain,
    /// f32 tensors, products of bf16-rounded operands summed in f32 (see [`super::bf16`]);
    /// differentiable.
    Bf16(bf16::Kernel),
    /// Weights and activations quantized to int8 (see [`super::int8`]); inference only.
    Int8(int8::Kernel),
}

impl Products {
    /// What a person reads: `the weights' dtype`, `bf16 (avx512bf16 kernel)`, ...
    pub fn describe(self) -> String {
        match self {
            Products::Plain => "the weights' dtype".to_string(),
            Products::Bf16(k) => format!("bf16 ({} kernel)", k.name()),
            Products::Int8(k) => format!("int8 ({} kernel)", k.name()),
        }
    }
}

/// `y = x W^T + b`, with `W` stored (out, in) as in PyTorch.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    compute: Compute,
}

/// [`Products`] with what each needs prepared at load.
enum Compute {
    Plain,
    /// Weights that do not change (inference) are packed once, not at every product.
    Bf16(bf16::Kernel, Option<Arc<bf16::PackedB>>),
    Int8(QuantizedLinear),
}

impl Linear {
    pub fn new(s: &Scope, inputs: usize, outputs: usize) -> Result<Self> {
        let weight = s.get("weight", &[outputs, inputs], Kind::Weight)?;
        let bias = s.get("bias", &[outputs], Kind::Bias)?;
        Self::with(s, weight, bias)
    }

    /// A layer without a bias (`bias=False`): only the weight is a parameter.
    pub fn without_bias(s: &Scope, inputs: usize, outputs: usize) -> Result<Self> {
        let weight = s.get("weight", &[outputs, inputs], Kind::Weight)?;
        let bias = Tensor::zeros(outputs, weight.dtype(), weight.device())?;
        Self::with(s, weight, bias)
    }

    fn with(s: &Scope, weight: Tensor, bias: Tensor) -> Result<Self> {
        let compute = match s.products() {
            Products::Plain => Compute::Plain,
            Products::Bf16(kernel) => {
                let packed = match weight.is_variable() {
                    true => None,
                    false => Some(Arc::new(bf16::pack_weights(&weight)?)),
                };
                Compute::Bf16(kernel, packed)
            }
            Products::Int8(kernel) => Compute::Int8(QuantizedLinear::new(&weight, &bias, kernel)?),
        };
        Ok(Self {
            weight,
            bias,
            compute,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32;
        match &self.compute {
            Compute::Int8(q) if cpu_f32 => x.contiguous()?.apply_op1_no_bwd(q),
            Compute::Bf16(kernel, packed) if cpu_f32 => {
                ops::linear_bf16(x, (&self.weight, packed.as_ref()), &self.bias, *kernel)
            }
            _ => ops::linear(x, &self.weight, &self.bias),
        }
    }
}

pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(s: &Scope, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: s.get("weight", &[size], Kind::Norm)?,
            bias: s.get("bias", &[size], Kind::Norm)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Rows `ids` (batch, seq) of `table` (rows, width): (batch, seq, width).
pub fn lookup(table: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, seq) = ids.dims2()?;
    table
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((batch, seq, table.dim(1)?))
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => ops::gelu(x),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// The additive attention mask (batch, 1, 1, seq) of `attention_mask` (batch, seq): 0 for real
/// tokens, f32's minimum for padding, as transformers builds it, in `dtype`.
pub fn mask_bias(attention_mask: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
    let (batch, seq) = attention_mask.dims2()?;
    // Computed in f32 because 1 * max + min is exactly 0 there but not in half precision.
    attention_mask
        .to_dtype(DType::F32)?
        .affine(-(f32::MIN as f64), f32::MIN as f64)?
        .to_dtype(dtype)?
        .reshape((batch, 1, 1, seq))
}

/// (batch, rows, heads * head_dim) -> (batch, heads, rows, head_dim), contiguous.
pub fn split_heads(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (batch, rows, width) = t.dims3()?;
    t.reshape((batch, rows, heads, width / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// The inverse of [`split_heads`].
pub fn merge_heads(t: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, heads, rows, head_dim) = t.dims4()?;
    t.transpose(1, 2)?.reshape((batch, rows, heads * head_dim))
}

/// The first token's vector of each sequence: (batch, seq, hidden) -> (batch, hidden).
pub fn first_token(hidden: &Tensor) -> candle_core::Result<Tensor> {
    hidden.narrow(1, 0, 1)?.squeeze(1)
}

/// Runs `layer(layer, x, queries, only_first)` over `layers` in turn. With `cls_only`, the
/// last layer's queries are the first token alone (`only_first`), and the result is
/// (batch, 1, hidden): its keys and values still come from every token, so that output is the
/// same as in the full pass, while the queries, attention output and feed-forward of the other
/// tokens (about a sixth of a 6-layer model's work) are skipped.
pub fn stack<L>(
    layers: &[L],
    mut x: Tensor,
    cls_only: bool,
    mut layer: impl FnMut(&L, &Tensor, &Tensor, bool) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let last = layers.len().saturating_sub(1);
    for (i, l) in layers.iter().enumerate() {
        let only_first = cls_only && i == last;
        let queries = if only_first {
            x.narrow(1, 0, 1)?
        } else {
            x.clone()
        };
        x = layer(l, &x, &queries, only_first)?;
    }
    Ok(x)
}
