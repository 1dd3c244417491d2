//! DistilBERT (`DistilBertForSequenceClassification`): no token types and no pooler, its own
//! parameter and config names (`dim`, `n_layers`, `q_lin`, `sa_layer_norm`...), and a head of
//! `pre_classifier`, ReLU, dropout and `classifier` on the first token.

use anyhow::{Result, bail};
use candle_core::Tensor;
use serde_json::Value;

use super::architecture::{Architecture, Network, Outputs};
use super::bert::{Attention, AttentionOutput, Encoder, FeedForward, Layer};
use super::config::ModelConfig;
use super::layers::{self, ForwardMode, LayerNorm, Linear};
use super::params::Scope;
use crate::tokenize::Batch;

/// transformers hard-codes DistilBERT's layer norm epsilon.
const LAYER_NORM_EPS: f64 = 1e-12;

#[derive(Debug)]
pub struct DistilBert;

struct DistilBertNetwork {
    word: Tensor,
    position: Tensor,
    embedding_norm: LayerNorm,
    /// `Transformer`: BERT's layers under other names, with no dropout after the attention
    /// output.
    transformer: Encoder,
    pre_classifier: Linear,
    classifier: Linear,
    dropout: f64,
    classifier_dropout: f64,
}

impl Architecture for DistilBert {
    fn model_types(&self) -> &'static [(&'static str, &'static str)] {
        &[("distilbert", "DistilBertForSequenceClassification")]
    }

    fn base_prefix(&self) -> &'static str {
        "distilbert"
    }

    fn config_aliases(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("dim", "hidden_size"),
            ("n_layers", "num_hidden_layers"),
            ("n_heads", "num_attention_heads"),
            ("hidden_dim", "intermediate_size"),
            ("activation", "hidden_act"),
            ("dropout", "hidden_dropout_prob"),
            ("attention_dropout", "attention_probs_dropout_prob"),
            ("seq_classif_dropout", "classifier_dropout"),
        ]
    }

    fn config_defaults(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("classifier_dropout", Value::from(0.2)),
            ("layer_norm_eps", Value::from(LAYER_NORM_EPS)),
        ]
    }

    fn validate(&self, c: &ModelConfig) -> Result<()> {
        if c.raw("sinusoidal_pos_embds") == Some(&Value::Bool(true)) {
            bail!("sinusoidal_pos_embds is true: only learned position embeddings are supported");
        }
        Ok(())
    }

    fn output_layer(&self) -> &'static str {
        "classifier"
    }

    fn build(&self, c: &ModelConfig, num_labels: usize, root: &Scope) -> Result<Box<dyn Network>> {
        let h = c.hidden_size;
        let base = root.pp("distilbert");
        let emb = base.pp("embeddings");
        let word = emb.embedding(
            "word_embeddings.weight",
            (c.vocab_size, h),
            ("vocab_size", "dim"),
        )?;
        let position = emb.embedding(
            "position_embeddings.weight",
            (c.max_position_embeddings, h),
            ("max_position_embeddings", "dim"),
        )?;
        let embedding_norm = LayerNorm::new(&emb.pp("LayerNorm"), h, LAYER_NORM_EPS)?;
        let transformer = base.pp("transformer");
        transformer.check_count("layer", c.num_hidden_layers, "n_layers")?;
        let blocks = (0..c.num_hidden_layers)
            .map(|i| {
                let l = transformer.pp(format!("layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    attention: Attention::from_parts(
                        Linear::new(&a.pp("q_lin"), h, h)?,
                        Linear::new(&a.pp("k_lin"), h, h)?,
                        Linear::new(&a.pp("v_lin"), h, h)?,
                        AttentionOutput::from_parts(
                            Linear::new(&a.pp("out_lin"), h, h)?,
                            LayerNorm::new(&l.pp("sa_layer_norm"), h, LAYER_NORM_EPS)?,
                            c.attention_probs_dropout_prob,
                            0.0,
                        ),
                        c,
                    ),
                    feed_forward: FeedForward::from_parts(
                        Linear::new(&l.pp("ffn.lin1"), h, c.intermediate_size)?,
                        Linear::new(&l.pp("ffn.lin2"), c.intermediate_size, h)?,
                        LayerNorm::new(&l.pp("output_layer_norm"), h, LAYER_NORM_EPS)?,
                        c,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(DistilBertNetwork {
            word,
            position,
            embedding_norm,
            transformer: Encoder::from_layers(blocks),
            pre_classifier: Linear::new(&root.pp("pre_classifier").head(), h, h)?,
            classifier: Linear::new(&root.pp("classifier").head(), h, num_labels)?,
            dropout: c.hidden_dropout_prob,
            classifier_dropout: c.classifier_dropout_prob(),
        }))
    }
}

impl DistilBertNetwork {
    fn embeddings(&self, ids: &Tensor, mode: &mut ForwardMode) -> candle_core::Result<Tensor> {
        let seq = ids.dim(1)?;
        let rows = self.position.dim(0)?;
        if seq > rows {
            candle_core::bail!("input of {seq} tokens exceeds max_position_embeddings {rows}");
        }
        let x = layers::lookup(&self.word, ids)?
            .broadcast_add(&self.position.narrow(0, 0, seq)?.unsqueeze(0)?)?;
        mode.dropout(&self.embedding_norm.forward(&x)?, self.dropout)
    }
}

impl Network for DistilBertNetwork {
    fn forward(&self, batch: &Batch, cls_only: bool, mode: &mut ForwardMode) -> Result<Outputs> {
        let mask = layers::mask_bias(&batch.attention_mask, self.word.dtype())?;
        let x = self.embeddings(&batch.input_ids, mode)?;
        let x = self.transformer.forward(x, &mask, cls_only, mode)?;
        let pooled = self
            .pre_classifier
            .forward(&layers::first_token(&x)?)?
            .relu()?;
        let logits = self
            .classifier
            .forward(&mode.dropout(&pooled, self.classifier_dropout)?)?;
        Ok(Outputs {
            hidden: x,
            pooled: None,
            logits,
        })
    }
}
