//! The BERT encoder: embeddings and transformer layers, with dropout in training mode and
//! the attention mask applied to padded batches.

use candle_core::{DType, Result, Tensor};

use super::config::{Activation, BertConfig};
use super::ops;
use super::weights::Weights;

/// Whether dropout is on, and where its masks come from.
pub struct ForwardMode {
    train: bool,
    seed: u64,
    calls: u64,
}

impl ForwardMode {
    /// Inference: dropout off.
    pub fn eval() -> Self {
        Self {
            train: false,
            seed: 0,
            calls: 0,
        }
    }

    /// Training: every dropout in the forward pass draws an independent mask from `seed`.
    pub fn train(seed: u64) -> Self {
        Self {
            train: true,
            seed,
            calls: 0,
        }
    }

    pub fn is_train(&self) -> bool {
        self.train
    }

    pub fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        if !self.train || p <= 0.0 {
            return Ok(x.clone());
        }
        self.calls += 1;
        let seed = crate::rng::mix64(self.seed ^ crate::rng::mix64(self.calls));
        ops::dropout(x, p as f32, seed)
    }
}

/// `y = x W^T + b`, with `W` stored (out, in) as in PyTorch.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn load(w: &Weights, prefix: &str) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"))?,
            bias: w.get(&format!("{prefix}.bias"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, &self.bias)
    }
}

pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, prefix: &str, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"))?,
            bias: w.get(&format!("{prefix}.bias"))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    dropout: f64,
}

impl Embeddings {
    fn load(w: &Weights, c: &BertConfig) -> Result<Self> {
        let p = "bert.embeddings";
        Ok(Self {
            word: w.get(&format!("{p}.word_embeddings.weight"))?,
            position: w.get(&format!("{p}.position_embeddings.weight"))?,
            token_type: w.get(&format!("{p}.token_type_embeddings.weight"))?,
            norm: LayerNorm::load(w, &format!("{p}.LayerNorm"), c.layer_norm_eps)?,
            dropout: c.hidden_dropout_prob,
        })
    }

    fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        mode: &mut ForwardMode,
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let hidden = self.word.dim(1)?;
        let positions = self.position.dim(0)?;
        if seq > positions {
            candle_core::bail!("input of {seq} tokens exceeds max_position_embeddings {positions}");
        }
        let words = self.word.index_select(&input_ids.flatten_all()?, 0)?;
        let types = self
            .token_type
            .index_select(&token_type_ids.flatten_all()?, 0)?;
        let words = words.reshape((batch, seq, hidden))?;
        let types = types.reshape((batch, seq, hidden))?;
        let pos = self.position.narrow(0, 0, seq)?.unsqueeze(0)?;
        let x = (words + types)?.broadcast_add(&pos)?;
        let x = self.norm.forward(&x)?;
        mode.dropout(&x, self.dropout)
    }
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    attention_dropout: f64,
    hidden_dropout: f64,
}

impl Attention {
    fn load(w: &Weights, c: &BertConfig, prefix: &str) -> Result<Self> {
        Ok(Self {
            query: Linear::load(w, &format!("{prefix}.self.query"))?,
            key: Linear::load(w, &format!("{prefix}.self.key"))?,
            value: Linear::load(w, &format!("{prefix}.self.value"))?,
            output: Linear::load(w, &format!("{prefix}.output.dense"))?,
            norm: LayerNorm::load(w, &format!("{prefix}.output.LayerNorm"), c.layer_norm_eps)?,
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            attention_dropout: c.attention_probs_dropout_prob,
            hidden_dropout: c.hidden_dropout_prob,
        })
    }

    /// `mask_bias`: (batch, 1, 1, seq), 0 for real tokens and a huge negative for padding.
    /// `queries`: the rows of `x` that attend (all of `x`, or only its first token); the
    /// output has their shape.
    fn forward(
        &self,
        x: &Tensor,
        queries: &Tensor,
        mask_bias: &Tensor,
        mode: &mut ForwardMode,
    ) -> Result<Tensor> {
        let (batch, _, hidden) = x.dims3()?;
        let split_heads = |t: Tensor| -> Result<Tensor> {
            let rows = t.dim(1)?;
            t.reshape((batch, rows, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split_heads(self.query.forward(queries)?)?;
        let k = split_heads(self.key.forward(x)?)?;
        let v = split_heads(self.value.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let probs = ops::attention_softmax(&q.matmul(&k.t()?)?, mask_bias, scale)?;
        let probs = mode.dropout(&probs, self.attention_dropout)?;
        let context =
            probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, queries.dim(1)?, hidden))?;
        let out = mode.dropout(&self.output.forward(&context)?, self.hidden_dropout)?;
        self.norm.forward(&(out + queries)?)
    }
}

struct FeedForward {
    intermediate: Linear,
    output: Linear,
    norm: LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl FeedForward {
    fn load(w: &Weights, c: &BertConfig, prefix: &str) -> Result<Self> {
        Ok(Self {
            intermediate: Linear::load(w, &format!("{prefix}.intermediate.dense"))?,
            output: Linear::load(w, &format!("{prefix}.output.dense"))?,
            norm: LayerNorm::load(w, &format!("{prefix}.output.LayerNorm"), c.layer_norm_eps)?,
            activation: c
                .activation()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            dropout: c.hidden_dropout_prob,
        })
    }

    fn forward(&self, x: &Tensor, mode: &mut ForwardMode) -> Result<Tensor> {
        let h = self.intermediate.forward(x)?;
        let h = match self.activation {
            Activation::Gelu => ops::gelu(&h)?,
            Activation::GeluTanh => h.gelu()?,
            Activation::Relu => h.relu()?,
        };
        let out = mode.dropout(&self.output.forward(&h)?, self.dropout)?;
        self.norm.forward(&(out + x)?)
    }
}

struct Layer {
    attention: Attention,
    feed_forward: FeedForward,
}

/// Embeddings followed by the transformer layers; returns the last hidden state.
pub struct BertEncoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl BertEncoder {
    pub fn load(w: &Weights, c: &BertConfig) -> Result<Self> {
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("bert.encoder.layer.{i}");
                Ok(Layer {
                    attention: Attention::load(w, c, &format!("{p}.attention"))?,
                    feed_forward: FeedForward::load(w, c, &p)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(w, c)?,
            layers,
        })
    }

    /// `attention_mask`: (batch, seq), 1 for real tokens and 0 for padding.
    ///
    /// With `cls_only`, the last layer computes the first token's output only, and the result
    /// is (batch, 1, hidden): all a classifier reads. Its keys and values still come from every
    /// token, so the [CLS] output is the same as in the full pass; the queries, attention
    /// output and feed-forward of the other tokens (about a sixth of a 6-layer model's work,
    /// forward and backward) are skipped.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        cls_only: bool,
        mode: &mut ForwardMode,
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        // (1 - mask) * finfo(f32).min, as transformers builds its additive mask; computed in
        // f32 because 1 * max + min is exactly 0 there but not in half precision.
        let mask_bias = attention_mask
            .to_dtype(DType::F32)?
            .affine(-(f32::MIN as f64), f32::MIN as f64)?
            .to_dtype(self.embeddings.word.dtype())?
            .reshape((batch, 1, 1, seq))?;
        let mut x = self.embeddings.forward(input_ids, token_type_ids, mode)?;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            let queries = if cls_only && i == last {
                x.narrow(1, 0, 1)?
            } else {
                x.clone()
            };
            x = layer.attention.forward(&x, &queries, &mask_bias, mode)?;
            x = layer.feed_forward.forward(&x, mode)?;
        }
        Ok(x)
    }
}

/// `tanh(W h[CLS] + b)`: BERT's pooler.
pub struct Pooler {
    dense: Linear,
}

impl Pooler {
    pub fn load(w: &Weights) -> Result<Self> {
        Ok(Self {
            dense: Linear::load(w, "bert.pooler.dense")?,
        })
    }

    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        self.dense.forward(&cls)?.tanh()
    }
}
