//! DeBERTa-v2 and -v3 (`DebertaV2ForSequenceClassification`): disentangled attention, in
//! which each score adds content-to-position and position-to-content terms read from shared
//! relative position embeddings through (log-)bucketed relative distances; then
//! `ContextPooler` and a linear classifier. Follows transformers' `modeling_deberta_v2.py`;
//! candle's differentiable ops (gather included) give the backward pass.

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};
use serde_json::Value;

use super::architecture::{Architecture, Network, Outputs};
use super::bert::{AttentionOutput, FeedForward};
use super::config::{Activation, ModelConfig};
use super::layers::{self, ForwardMode, LayerNorm, Linear};
use super::params::Scope;
use crate::tokenize::Batch;

#[derive(Debug)]
pub struct DebertaV2;

/// A bound far above any published DeBERTa (512) on the relative position table, so that a
/// hostile config.json cannot plan a table of 2^60 rows.
const MAX_RELATIVE: i64 = 1 << 20;

/// The settings only DeBERTa-v2 has, with `DebertaV2Config`'s defaults.
#[derive(Debug, Clone)]
struct Settings {
    relative_attention: bool,
    /// Half the rows of the relative position embeddings: `position_buckets` when set, else
    /// `max_relative_positions`.
    span: usize,
    /// Bucketing of relative distances: (`position_buckets`, `max_relative_positions`), when
    /// both are set.
    buckets: Option<(i64, i64)>,
    c2p: bool,
    p2c: bool,
    share_att_key: bool,
    norm_rel_ebd: bool,
    position_biased_input: bool,
    pooler_hidden_size: usize,
    pooler_dropout: f64,
    pooler_activation: Activation,
}

fn int(c: &ModelConfig, key: &str, default: i64) -> Result<i64> {
    match c.raw(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("{key} is {v}: expected an integer")),
    }
}

fn float(c: &ModelConfig, key: &str) -> Result<Option<f64>> {
    match c.raw(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(p) if (0.0..1.0).contains(&p) => Ok(Some(p)),
            _ => bail!("{key} is {v}: it must be at least 0 and below 1"),
        },
    }
}

fn string<'c>(c: &'c ModelConfig, key: &str, default: &'c str) -> Result<&'c str> {
    match c.raw(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(v) => bail!("{key} is {v}: expected a string"),
    }
}

fn flag(c: &ModelConfig, key: &str, default: bool) -> Result<bool> {
    match c.raw(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => bail!("{key} is {v}: expected true or false"),
    }
}

impl Settings {
    fn read(c: &ModelConfig) -> Result<Self> {
        let relative_attention = flag(c, "relative_attention", false)?;
        let mut max_relative = int(c, "max_relative_positions", -1)?;
        if max_relative < 1 {
            max_relative = c.max_position_embeddings as i64;
        }
        let position_buckets = int(c, "position_buckets", -1)?;
        if position_buckets > 0 && position_buckets < 2 {
            bail!("position_buckets is {position_buckets}: it must be at least 2");
        }
        // The log buckets divide by log((max_relative_positions - 1) / (position_buckets / 2)).
        if position_buckets > 0 && max_relative - 1 <= position_buckets / 2 {
            bail!(
                "max_relative_positions ({max_relative}) must exceed position_buckets / 2 + 1 \
                 ({}) for the log buckets",
                position_buckets / 2 + 1
            );
        }
        if position_buckets > MAX_RELATIVE || max_relative > MAX_RELATIVE {
            bail!("position_buckets or max_relative_positions is too large");
        }
        let span = if position_buckets > 0 {
            position_buckets
        } else {
            max_relative
        } as usize;
        // transformers accepts a list or the older "p2c|c2p" string.
        let kinds: Vec<String> = match c.raw("pos_att_type") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s
                .to_lowercase()
                .split('|')
                .map(|k| k.trim().to_string())
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|k| k.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| anyhow::anyhow!("pos_att_type must list strings"))?,
            Some(v) => bail!("pos_att_type is {v}: expected a list such as [\"p2c\", \"c2p\"]"),
        };
        for kind in &kinds {
            if !matches!(kind.as_str(), "p2c" | "c2p" | "") {
                bail!("pos_att_type `{kind}` is not supported (p2c, c2p)");
            }
        }
        let norm_rel_ebd = match c.raw("norm_rel_ebd").and_then(Value::as_str) {
            None => false,
            Some(s) => s
                .to_lowercase()
                .split('|')
                .any(|k| k.trim() == "layer_norm"),
        };
        if int(c, "conv_kernel_size", 0)? > 0 {
            bail!(
                "conv_kernel_size is set: DeBERTa-v2's convolution layer (xlarge models) is not supported"
            );
        }
        let head_size = int(c, "attention_head_size", c.head_dim() as i64)?;
        if head_size != c.head_dim() as i64 {
            bail!(
                "attention_head_size {head_size} differs from hidden_size / num_attention_heads: \
                 not supported"
            );
        }
        let pooler_hidden_size = match int(c, "pooler_hidden_size", c.hidden_size as i64)? {
            n if n as usize == c.hidden_size => c.hidden_size,
            n => bail!(
                "pooler_hidden_size is {n}: only hidden_size ({}) is supported",
                c.hidden_size
            ),
        };
        let pooler_act = string(c, "pooler_hidden_act", "gelu")?;
        Ok(Self {
            relative_attention,
            span,
            buckets: (position_buckets > 0 && max_relative > 0)
                .then_some((position_buckets, max_relative)),
            c2p: kinds.iter().any(|k| k == "c2p"),
            p2c: kinds.iter().any(|k| k == "p2c"),
            share_att_key: flag(c, "share_att_key", false)?,
            norm_rel_ebd,
            position_biased_input: flag(c, "position_biased_input", true)?,
            pooler_hidden_size,
            pooler_dropout: float(c, "pooler_dropout")?.unwrap_or(0.0),
            pooler_activation: Activation::named("pooler_hidden_act", pooler_act)?,
        })
    }

    /// `scale_factor` of `DisentangledSelfAttention`: 1 plus one per position term
    /// (counted from `pos_att_type` even without relative attention, as transformers does).
    fn scale_factor(&self) -> f64 {
        1.0 + self.c2p as u8 as f64 + self.p2c as u8 as f64
    }
}

/// `make_log_bucket_position` for one distance, in f32 as transformers computes it.
fn log_bucket(relative: i64, bucket_size: i64, max_position: i64) -> i64 {
    let mid = bucket_size / 2;
    let abs = if relative < mid && relative > -mid {
        mid - 1
    } else {
        relative.abs()
    };
    if abs <= mid {
        return relative;
    }
    let base = (((max_position - 1) as f64 / mid as f64) as f32).ln();
    let log_pos = ((abs as f32 / mid as f32).ln() / base * (mid - 1) as f32).ceil() + mid as f32;
    (log_pos * relative.signum() as f32) as i64
}

/// The relative position of query `i` to key `j` (`build_relative_position`): `i - j`,
/// bucketed when position buckets are set.
fn relative_position(settings: &Settings, i: usize, j: usize) -> i64 {
    let relative = i as i64 - j as i64;
    match settings.buckets {
        Some((buckets, max_position)) => log_bucket(relative, buckets, max_position),
        None => relative,
    }
}

/// The relative position inputs of one batch shape: the rows of the position embeddings the
/// distances reach and, into those rows, c2p's `clamp(r(i, j) + span)` (queries, seq) and
/// p2c's `clamp(-r(j, i) + span)` laid out by key (seq, queries).
struct Relative {
    embeddings: Tensor,
    c2p: Tensor,
    p2c: Tensor,
}

impl Relative {
    /// For the first `queries` queries of a `seq`-token input. Only rows `lo..=hi` of the
    /// 2 x span table are reached by a short input's distances (127 of DeBERTa-v3's 512 at 64
    /// tokens), so only those are projected and scored; the others' gradient is zero anyway.
    fn new(
        settings: &Settings,
        table: &Tensor,
        queries: usize,
        seq: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let span = settings.span as i64;
        let clamp = |v: i64| v.clamp(0, 2 * span - 1) as u32;
        let mut c2p = Vec::with_capacity(queries * seq);
        for i in 0..queries {
            for j in 0..seq {
                c2p.push(clamp(
                    relative_position(settings, i, j).saturating_add(span),
                ));
            }
        }
        let mut p2c = Vec::with_capacity(queries * seq);
        for j in 0..seq {
            for i in 0..queries {
                p2c.push(clamp(
                    relative_position(settings, j, i)
                        .saturating_neg()
                        .saturating_add(span),
                ));
            }
        }
        let lo = c2p.iter().chain(&p2c).copied().min().unwrap_or(0);
        let hi = c2p.iter().chain(&p2c).copied().max().unwrap_or(0);
        let shift = |v: Vec<u32>| v.into_iter().map(|i| i - lo).collect::<Vec<_>>();
        Ok(Self {
            embeddings: table.narrow(0, lo as usize, (hi - lo + 1) as usize)?,
            c2p: Tensor::from_vec(shift(c2p), (queries, seq), device)?,
            p2c: Tensor::from_vec(shift(p2c), (seq, queries), device)?,
        })
    }
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    pos_key: Option<Linear>,
    pos_query: Option<Linear>,
    output: AttentionOutput,
    heads: usize,
    /// The dropout on the position embeddings (`pos_dropout`).
    hidden_dropout: f64,
}

impl Attention {
    fn new(s: &Scope, c: &ModelConfig, settings: &Settings) -> Result<Self> {
        let h = c.hidden_size;
        let a = s.pp("self");
        let separate = settings.relative_attention && !settings.share_att_key;
        Ok(Self {
            query: Linear::new(&a.pp("query_proj"), h, h)?,
            key: Linear::new(&a.pp("key_proj"), h, h)?,
            value: Linear::new(&a.pp("value_proj"), h, h)?,
            pos_key: (separate && settings.c2p)
                .then(|| Linear::new(&a.pp("pos_key_proj"), h, h))
                .transpose()?,
            pos_query: (separate && settings.p2c)
                .then(|| Linear::new(&a.pp("pos_query_proj"), h, h))
                .transpose()?,
            output: AttentionOutput::new(s, c)?,
            heads: c.num_attention_heads,
            hidden_dropout: c.hidden_dropout_prob,
        })
    }

    /// `relative`: the position inputs for `queries`' rows.
    fn forward(
        &self,
        settings: &Settings,
        x: &Tensor,
        queries: &Tensor,
        mask_bias: &Tensor,
        relative: Option<&Relative>,
        mode: &mut ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let q = layers::split_heads(&self.query.forward(queries)?, self.heads)?;
        let k = layers::split_heads(&self.key.forward(x)?, self.heads)?;
        let v = layers::split_heads(&self.value.forward(x)?, self.heads)?;
        let head_dim = q.dim(3)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(relative) = relative {
            let (c2p_index, p2c_index) = (&relative.c2p, &relative.p2c);
            let embeddings = mode
                .dropout(&relative.embeddings, self.hidden_dropout)?
                .unsqueeze(0)?;
            let (batch, heads, rows, seq) = scores.dims4()?;
            if settings.c2p {
                let proj = self.pos_key.as_ref().unwrap_or(&self.key);
                let pos_key = layers::split_heads(&proj.forward(&embeddings)?, self.heads)?;
                let c2p = q.broadcast_matmul(&pos_key.t()?)?;
                let index = c2p_index
                    .broadcast_as((batch, heads, rows, seq))?
                    .contiguous()?;
                scores = (scores + c2p.contiguous()?.gather(&index, 3)?)?;
            }
            if settings.p2c {
                let proj = self.pos_query.as_ref().unwrap_or(&self.query);
                let pos_query = layers::split_heads(&proj.forward(&embeddings)?, self.heads)?;
                let p2c = k.broadcast_matmul(&pos_query.t()?)?;
                let index = p2c_index
                    .broadcast_as((batch, heads, seq, rows))?
                    .contiguous()?;
                let p2c = p2c.contiguous()?.gather(&index, 3)?.transpose(2, 3)?;
                scores = (scores + p2c)?;
            }
        }
        let scale = 1.0 / (head_dim as f64 * settings.scale_factor()).sqrt();
        self.output
            .forward(&scores.contiguous()?, scale, mask_bias, &v, queries, mode)
    }
}

struct Layer {
    attention: Attention,
    feed_forward: FeedForward,
}

struct DebertaNetwork {
    settings: Settings,
    word: Tensor,
    position: Option<Tensor>,
    token_type: Option<Tensor>,
    embed_proj: Option<Linear>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    rel_embeddings: Option<Tensor>,
    rel_norm: Option<LayerNorm>,
    pooler: Linear,
    classifier: Linear,
    dropout: f64,
    hidden_dropout: f64,
}

impl Architecture for DebertaV2 {
    fn model_types(&self) -> &'static [(&'static str, &'static str)] {
        &[("deberta-v2", "DebertaV2ForSequenceClassification")]
    }

    fn base_prefix(&self) -> &'static str {
        "deberta"
    }

    fn config_aliases(&self) -> &'static [(&'static str, &'static str)] {
        &[("cls_dropout", "classifier_dropout")]
    }

    fn config_defaults(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("type_vocab_size", Value::from(0)),
            ("layer_norm_eps", Value::from(1e-7)),
        ]
    }

    fn validate(&self, c: &ModelConfig) -> Result<()> {
        Settings::read(c).map(|_| ())
    }

    fn output_layer(&self) -> &'static str {
        "classifier"
    }

    fn build(&self, c: &ModelConfig, num_labels: usize, root: &Scope) -> Result<Box<dyn Network>> {
        let settings = Settings::read(c)?;
        let (h, width) = (c.hidden_size, c.embedding_size);
        let width_field = if width == h {
            "hidden_size"
        } else {
            "embedding_size"
        };
        let base = root.pp("deberta");
        let emb = base.pp("embeddings");
        let word = emb.embedding(
            "word_embeddings.weight",
            (c.vocab_size, width),
            ("vocab_size", width_field),
        )?;
        let position = settings
            .position_biased_input
            .then(|| {
                emb.embedding(
                    "position_embeddings.weight",
                    (c.max_position_embeddings, width),
                    ("max_position_embeddings", width_field),
                )
            })
            .transpose()?;
        let token_type = (c.type_vocab_size > 0)
            .then(|| {
                emb.embedding(
                    "token_type_embeddings.weight",
                    (c.type_vocab_size, width),
                    ("type_vocab_size", width_field),
                )
            })
            .transpose()?;
        let embed_proj = (width != h)
            .then(|| Linear::without_bias(&emb.pp("embed_proj"), width, h))
            .transpose()?;
        let embedding_norm = LayerNorm::new(&emb.pp("LayerNorm"), h, c.layer_norm_eps)?;
        let encoder = base.pp("encoder");
        encoder.check_count("layer", c.num_hidden_layers, "num_hidden_layers")?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = encoder.pp(format!("layer.{i}"));
                Ok(Layer {
                    attention: Attention::new(&l.pp("attention"), c, &settings)?,
                    feed_forward: FeedForward::new(&l, c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rel_embeddings = settings
            .relative_attention
            .then(|| {
                encoder.embedding(
                    "rel_embeddings.weight",
                    (2 * settings.span, h),
                    ("position_buckets", "hidden_size"),
                )
            })
            .transpose()?;
        let rel_norm = (settings.relative_attention && settings.norm_rel_ebd)
            .then(|| LayerNorm::new(&encoder.pp("LayerNorm"), h, c.layer_norm_eps))
            .transpose()?;
        let p = settings.pooler_hidden_size;
        Ok(Box::new(DebertaNetwork {
            word,
            position,
            token_type,
            embed_proj,
            embedding_norm,
            layers,
            rel_embeddings,
            rel_norm,
            pooler: Linear::new(&root.pp("pooler.dense").head(), h, p)?,
            classifier: Linear::new(&root.pp("classifier").head(), p, num_labels)?,
            dropout: c.classifier_dropout_prob(),
            hidden_dropout: c.hidden_dropout_prob,
            settings,
        }))
    }
}

impl DebertaNetwork {
    fn embeddings(&self, batch: &Batch, mode: &mut ForwardMode) -> candle_core::Result<Tensor> {
        let seq = batch.input_ids.dim(1)?;
        let mut x = layers::lookup(&self.word, &batch.input_ids)?;
        if let Some(position) = &self.position {
            let rows = position.dim(0)?;
            if seq > rows {
                candle_core::bail!("input of {seq} tokens exceeds max_position_embeddings {rows}");
            }
            x = x.broadcast_add(&position.narrow(0, 0, seq)?.unsqueeze(0)?)?;
        }
        if let Some(token_type) = &self.token_type {
            x = (x + layers::lookup(token_type, &batch.token_type_ids)?)?;
        }
        if let Some(project) = &self.embed_proj {
            x = project.forward(&x)?;
        }
        let x = self.embedding_norm.forward(&x)?;
        // Padding positions are zeroed, as transformers does with the mask.
        let mask = batch.attention_mask.to_dtype(x.dtype())?.unsqueeze(2)?;
        mode.dropout(&x.broadcast_mul(&mask)?, self.hidden_dropout)
    }
}

impl Network for DebertaNetwork {
    fn forward(&self, batch: &Batch, cls_only: bool, mode: &mut ForwardMode) -> Result<Outputs> {
        let mask = layers::mask_bias(&batch.attention_mask, self.word.dtype())?;
        let x = self.embeddings(batch, mode)?;
        let seq = x.dim(1)?;
        let relative = match &self.rel_embeddings {
            Some(table) => {
                let table = match &self.rel_norm {
                    Some(norm) => norm.forward(table)?,
                    None => table.clone(),
                };
                let all = Relative::new(&self.settings, &table, seq, seq, x.device())?;
                let first = Relative::new(&self.settings, &table, 1, seq, x.device())?;
                Some((all, first))
            }
            None => None,
        };
        let x = layers::stack(
            &self.layers,
            x,
            cls_only,
            |layer, x, queries, only_first| {
                let rel = relative
                    .as_ref()
                    .map(|(all, first)| if only_first { first } else { all });
                let attended =
                    layer
                        .attention
                        .forward(&self.settings, x, queries, &mask, rel, mode)?;
                layer.feed_forward.forward(&attended, mode)
            },
        )?;
        let first = mode.dropout(&layers::first_token(&x)?, self.settings.pooler_dropout)?;
        let pooled = self
            .settings
            .pooler_activation
            .apply(&self.pooler.forward(&first)?)?;
        let logits = self
            .classifier
            .forward(&mode.dropout(&pooled, self.dropout)?)?;
        Ok(Outputs {
            hidden: x,
            pooled: Some(pooled),
            logits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buckets_match_transformers() {
        // make_log_bucket_position(torch.arange(-20, 21), 8, 64) in transformers 5.24 ...
        let small = [
            -6, -6, -6, -6, -6, -6, -6, -6, -6, -6, -5, -5, -5, -5, -5, -5, -4, -3, -2, -1, 0, 1,
            2, 3, 4, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
        ];
        let ours: Vec<i64> = (-20..=20).map(|r| log_bucket(r, 8, 64)).collect();
        assert_eq!(ours, small);
        // ... and of torch.arange(-600, 601, 37) with DeBERTa-v3-base's 256 buckets of 512.
        let base = [
            -270, -264, -258, -251, -244, -236, -228, -218, -208, -196, -182, -166, -147, -119,
            -82, -45, -8, 29, 66, 103, 137, 158, 176, 190, 203, 214, 224, 233, 241, 248, 255, 262,
            268,
        ];
        let ours: Vec<i64> = (-600..=600)
            .step_by(37)
            .map(|r| log_bucket(r, 256, 512))
            .collect();
        assert_eq!(ours, base);
    }
}
