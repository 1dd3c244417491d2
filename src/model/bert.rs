//! BERT (`BertForSequenceClassification`), and the encoder RoBERTa and ELECTRA share with it:
//! embeddings, transformer layers and the pooler under transformers' names.

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::architecture::{Architecture, Network, Outputs};
use super::config::{Activation, ModelConfig};
use super::layers::{self, ForwardMode, LayerNorm, Linear};
use super::ops;
use super::params::Scope;
use super::{attention, attention_train};
use crate::tokenize::Batch;

/// The check of BERT-shaped embeddings' token types, for each architecture's `validate`.
pub fn validate_token_types(c: &ModelConfig) -> Result<()> {
    if c.type_vocab_size == 0 {
        anyhow::bail!(
            "type_vocab_size is 0: {} needs at least one token type",
            c.model_type()
        );
    }
    Ok(())
}

/// Where the position ids of a sequence start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// 0, 1, 2... (BERT).
    FromZero,
    /// `pad + 1`, `pad + 2`... for real tokens and `pad` for padding, from the input ids
    /// (RoBERTa's `create_position_ids_from_input_ids`).
    AfterPadding(u32),
}

/// `BertEmbeddings`: word, position and token type embeddings, layer norm and dropout.
pub struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    dropout: f64,
    positions: Positions,
    /// Whether the inputs' token type ids are used; otherwise every token has type 0, as in
    /// RoBERTa, whose tokenizers return none.
    token_types: bool,
}

impl Embeddings {
    /// `width`: the embedding size (ELECTRA's may be smaller than the hidden size).
    pub fn new(
        s: &Scope,
        c: &ModelConfig,
        width: usize,
        positions: Positions,
        token_types: bool,
    ) -> Result<Self> {
        let width_field = if width == c.hidden_size {
            "hidden_size"
        } else {
            "embedding_size"
        };
        Ok(Self {
            word: s.embedding(
                "word_embeddings.weight",
                (c.vocab_size, width),
                ("vocab_size", width_field),
            )?,
            position: s.embedding(
                "position_embeddings.weight",
                (c.max_position_embeddings, width),
                ("max_position_embeddings", width_field),
            )?,
            token_type: s.embedding(
                "token_type_embeddings.weight",
                (c.type_vocab_size, width),
                ("type_vocab_size", width_field),
            )?,
            norm: LayerNorm::new(&s.pp("LayerNorm"), width, c.layer_norm_eps)?,
            dropout: c.hidden_dropout_prob,
            positions,
            token_types,
        })
    }

    pub fn dtype(&self) -> DType {
        self.word.dtype()
    }

    pub fn forward(&self, batch: &Batch, mode: &mut ForwardMode) -> candle_core::Result<Tensor> {
        let ids = &batch.input_ids;
        let seq = ids.dim(1)?;
        let words = layers::lookup(&self.word, ids)?;
        let types = if self.token_types {
            let rows = self.token_type.dim(0)?;
            // Only a one-row table can meet a pair's type 1; read the ids only then.
            if rows < 2 && batch.token_type_ids.max_all()?.to_scalar::<u32>()? as usize >= rows {
                candle_core::bail!(
                    "text pairs need 2 token types but the model's type_vocab_size is {rows}"
                );
            }
            layers::lookup(&self.token_type, &batch.token_type_ids)?
        } else {
            self.token_type.narrow(0, 0, 1)?.unsqueeze(0)?
        };
        let x = words.broadcast_add(&types)?;
        let x = match self.positions {
            Positions::FromZero => {
                let rows = self.position.dim(0)?;
                if seq > rows {
                    candle_core::bail!(
                        "input of {seq} tokens exceeds max_position_embeddings {rows}"
                    );
                }
                x.broadcast_add(&self.position.narrow(0, 0, seq)?.unsqueeze(0)?)?
            }
            Positions::AfterPadding(pad) => {
                let ids = position_ids_after_padding(ids, pad)?;
                let rows = self.position.dim(0)?;
                if seq + pad as usize + 1 > rows {
                    candle_core::bail!(
                        "input of {seq} tokens exceeds the {} positions of \
                         max_position_embeddings {rows}",
                        rows.saturating_sub(pad as usize + 1)
                    );
                }
                (x + layers::lookup(&self.position, &ids)?)?
            }
        };
        let x = self.norm.forward(&x)?;
        mode.dropout(&x, self.dropout)
    }
}

/// RoBERTa's position ids: `cumsum(ids != pad) * (ids != pad) + pad`.
fn position_ids_after_padding(ids: &Tensor, pad: u32) -> candle_core::Result<Tensor> {
    let real = ids.ne(pad)?.to_dtype(DType::F32)?;
    // Exact in f32: the counts are far below 2^24.
    real.cumsum(1)?
        .mul(&real)?
        .affine(1.0, pad as f64)?
        .to_dtype(DType::U32)
}

/// What follows the scores in BERT's attention (and DeBERTa's): softmax over the masked,
/// scaled scores, dropout, the weighted sum of the values, `output.dense`, dropout and the
/// residual layer norm.
pub struct AttentionOutput {
    dense: Linear,
    norm: LayerNorm,
    attention_dropout: f64,
    hidden_dropout: f64,
}

impl AttentionOutput {
    /// `s`: the attention's scope (`...layer.N.attention`).
    pub fn new(s: &Scope, c: &ModelConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self::from_parts(
            Linear::new(&s.pp("output.dense"), h, h)?,
            LayerNorm::new(&s.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
            c.attention_probs_dropout_prob,
            c.hidden_dropout_prob,
        ))
    }

    /// From layers under other names (DistilBERT's `out_lin` and `sa_layer_norm`, with no
    /// dropout after the output: `hidden_dropout` 0).
    pub fn from_parts(
        dense: Linear,
        norm: LayerNorm,
        attention_dropout: f64,
        hidden_dropout: f64,
    ) -> Self {
        Self {
            dense,
            norm,
            attention_dropout,
            hidden_dropout,
        }
    }

    /// `scores` (batch, heads, queries, keys) before scaling; `v` (batch, heads, keys,
    /// head_dim); `mask_bias`: see [`layers::mask_bias`]; `queries`: the residual input.
    pub fn forward(
        &self,
        scores: &Tensor,
        scale: f64,
        mask_bias: &Tensor,
        v: &Tensor,
        queries: &Tensor,
        mode: &mut ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let probs = ops::attention_softmax(scores, mask_bias, scale)?;
        let probs = mode.dropout(&probs, self.attention_dropout)?;
        self.finish(&probs.matmul(v)?, queries, mode)
    }

    /// From the attention-weighted values, `context` (batch, heads, queries, head_dim), on.
    pub fn finish(
        &self,
        context: &Tensor,
        queries: &Tensor,
        mode: &mut ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let context = layers::merge_heads(context)?;
        let out = mode.dropout(&self.dense.forward(&context)?, self.hidden_dropout)?;
        self.norm.forward(&(out + queries)?)
    }
}

/// `BertAttention`: the queries, keys and values, split into heads, then [`AttentionOutput`].
pub struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: AttentionOutput,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(s: &Scope, c: &ModelConfig) -> Result<Self> {
        let h = c.hidden_size;
        let attn = s.pp("self");
        Ok(Self::from_parts(
            Linear::new(&attn.pp("query"), h, h)?,
            Linear::new(&attn.pp("key"), h, h)?,
            Linear::new(&attn.pp("value"), h, h)?,
            AttentionOutput::new(s, c)?,
            c,
        ))
    }

    /// From layers under other names (DistilBERT's `q_lin`, `k_lin`, `v_lin`).
    pub fn from_parts(
        query: Linear,
        key: Linear,
        value: Linear,
        output: AttentionOutput,
        c: &ModelConfig,
    ) -> Self {
        Self {
            query,
            key,
            value,
            output,
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
        }
    }

    /// `queries`: the rows of `x` that attend (all of `x`, or only its first token); the
    /// output has their shape.
    fn forward(
        &self,
        x: &Tensor,
        queries: &Tensor,
        mask_bias: &Tensor,
        mode: &mut ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let (q, k, v) = (
            self.query.forward(queries)?,
            self.key.forward(x)?,
            self.value.forward(x)?,
        );
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        if attention::fits(&q) && !mode.graph_attention() {
            let context = if mode.is_inference() {
                attention::context(&q, &k, &v, mask_bias, self.heads, scale)?
            } else {
                let p = self.output.attention_dropout;
                let dropout = mode
                    .dropout_seed(p)
                    .map(|seed| attention_train::Dropout { p: p as f32, seed });
                attention_train::context(&q, &k, &v, mask_bias, self.heads, scale, dropout)?
            };
            return self.output.finish(&context, queries, mode);
        }
        let q = layers::split_heads(&q, self.heads)?;
        let k = layers::split_heads(&k, self.heads)?;
        let v = layers::split_heads(&v, self.heads)?;
        self.output
            .forward(&q.matmul(&k.t()?)?, scale, mask_bias, &v, queries, mode)
    }
}

/// BERT's feed-forward block (DeBERTa's too): `intermediate.dense`, the activation,
/// `output.dense`, dropout and the residual layer norm.
pub struct FeedForward {
    intermediate: Linear,
    output: Linear,
    norm: LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl FeedForward {
    /// `s`: the layer's scope (`...layer.N`).
    pub fn new(s: &Scope, c: &ModelConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Self::from_parts(
            Linear::new(&s.pp("intermediate.dense"), h, i)?,
            Linear::new(&s.pp("output.dense"), i, h)?,
            LayerNorm::new(&s.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
            c,
        )
    }

    /// From layers under other names (DistilBERT's `ffn.lin1`, `ffn.lin2`,
    /// `output_layer_norm`).
    pub fn from_parts(
        intermediate: Linear,
        output: Linear,
        norm: LayerNorm,
        c: &ModelConfig,
    ) -> Result<Self> {
        Ok(Self {
            intermediate,
            output,
            norm,
            activation: c.activation()?,
            dropout: c.hidden_dropout_prob,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: &mut ForwardMode) -> candle_core::Result<Tensor> {
        let h = self.activation.apply(&self.intermediate.forward(x)?)?;
        let out = mode.dropout(&self.output.forward(&h)?, self.dropout)?;
        self.norm.forward(&(out + x)?)
    }
}

/// `BertLayer`.
pub struct Layer {
    pub attention: Attention,
    pub feed_forward: FeedForward,
}

/// `BertEncoder`: the transformer layers.
pub struct Encoder {
    layers: Vec<Layer>,
}

impl Encoder {
    pub fn new(s: &Scope, c: &ModelConfig) -> Result<Self> {
        s.check_count("layer", c.num_hidden_layers, "num_hidden_layers")?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = s.pp(format!("layer.{i}"));
                Ok(Layer {
                    attention: Attention::new(&l.pp("attention"), c)?,
                    feed_forward: FeedForward::new(&l, c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_layers(layers))
    }

    /// The encoder of layers built under other names (DistilBERT's `transformer.layer`).
    pub fn from_layers(layers: Vec<Layer>) -> Self {
        Self { layers }
    }

    /// With `cls_only`, the last layer computes the first token's output only (see
    /// [`layers::stack`]).
    pub fn forward(
        &self,
        x: Tensor,
        mask_bias: &Tensor,
        cls_only: bool,
        mode: &mut ForwardMode,
    ) -> candle_core::Result<Tensor> {
        layers::stack(&self.layers, x, cls_only, |layer, x, queries, _| {
            let attended = layer.attention.forward(x, queries, mask_bias, mode)?;
            layer.feed_forward.forward(&attended, mode)
        })
    }
}

/// `tanh(W h[CLS] + b)`: BERT's pooler.
pub struct Pooler {
    dense: Linear,
}

impl Pooler {
    pub fn new(s: &Scope, c: &ModelConfig) -> Result<Self> {
        Ok(Self {
            dense: Linear::new(&s.pp("dense"), c.hidden_size, c.hidden_size)?,
        })
    }

    pub fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.dense.forward(&layers::first_token(hidden)?)?.tanh()
    }
}

/// `BertForSequenceClassification`.
#[derive(Debug)]
pub struct Bert;

struct BertNetwork {
    embeddings: Embeddings,
    encoder: Encoder,
    pooler: Pooler,
    classifier: Linear,
    dropout: f64,
}

impl Architecture for Bert {
    fn model_types(&self) -> &'static [(&'static str, &'static str)] {
        &[("bert", "BertForSequenceClassification")]
    }

    fn base_prefix(&self) -> &'static str {
        "bert"
    }

    fn validate(&self, c: &ModelConfig) -> Result<()> {
        validate_token_types(c)
    }

    fn output_layer(&self) -> &'static str {
        "classifier"
    }

    fn build(&self, c: &ModelConfig, num_labels: usize, root: &Scope) -> Result<Box<dyn Network>> {
        let base = root.pp("bert");
        Ok(Box::new(BertNetwork {
            embeddings: Embeddings::new(
                &base.pp("embeddings"),
                c,
                c.hidden_size,
                Positions::FromZero,
                true,
            )?,
            encoder: Encoder::new(&base.pp("encoder"), c)?,
            pooler: Pooler::new(&base.pp("pooler").head(), c)?,
            classifier: Linear::new(&root.pp("classifier").head(), c.hidden_size, num_labels)?,
            dropout: c.classifier_dropout_prob(),
        }))
    }
}

impl Network for BertNetwork {
    fn forward(&self, batch: &Batch, cls_only: bool, mode: &mut ForwardMode) -> Result<Outputs> {
        let mask = layers::mask_bias(&batch.attention_mask, self.embeddings.dtype())?;
        let x = self.embeddings.forward(batch, mode)?;
        let hidden = self.encoder.forward(x, &mask, cls_only, mode)?;
        let pooled = self.pooler.forward(&hidden)?;
        let logits = self
            .classifier
            .forward(&mode.dropout(&pooled, self.dropout)?)?;
        Ok(Outputs {
            hidden,
            pooled: Some(pooled),
            logits,
        })
    }
}
