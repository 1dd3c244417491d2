//! AdamW, the learning-rate schedule and gradient clipping, computing what `torch.optim.AdamW`,
//! transformers' `get_linear_schedule_with_warmup` and `clip_grad_norm_` compute.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::config::SchedulerType;

/// The learning rate at each optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub kind: SchedulerType,
}

impl LrSchedule {
    /// Warmup as transformers computes it: `warmup_steps` if set, else
    /// `ceil(total_steps * warmup_ratio)`.
    pub fn new(base: f64, kind: SchedulerType, total_steps: usize, warmup_steps: usize, warmup_ratio: f64) -> Self {
        let warmup_steps = if warmup_steps > 0 {
            warmup_steps
        } else {
            (total_steps as f64 * warmup_ratio).ceil() as usize
        };
        Self {
            base,
            warmup_steps,
            total_steps,
            kind,
        }
    }

    /// The rate used by the update at 0-based `step` (transformers' scheduler is stepped after
    /// each update, so the first update uses step 0: zero under warmup).
    pub fn lr(&self, step: usize) -> f64 {
        let (step, warmup, total) = (step as f64, self.warmup_steps as f64, self.total_steps as f64);
        let factor = match self.kind {
            SchedulerType::Constant => 1.0,
            _ if step < warmup => step / warmup.max(1.0),
            SchedulerType::ConstantWithWarmup => 1.0,
            SchedulerType::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
        };
        self.base * factor
    }
}

/// Gradients of the trainable parameters, summed over the micro-batches of one update.
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
}

impl Gradients {
    pub fn new(count: usize) -> Self {
        Self {
            grads: vec![None; count],
        }
    }

    /// Adds `store`'s gradient of each parameter. Gradients are detached so that the graph of
    /// the micro-batch can be freed.
    pub fn accumulate(&mut self, store: &GradStore, params: &[Var]) -> Result<()> {
        for (slot, var) in self.grads.iter_mut().zip(params) {
            if let Some(g) = store.get(var.as_tensor()) {
                let g = g.detach();
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    pub fn get(&self, i: usize) -> Option<&Tensor> {
        self.grads[i].as_ref()
    }

    /// The global L2 norm over every gradient.
    pub fn norm(&self) -> Result<f64> {
        let mut sum = 0f64;
        for g in self.grads.iter().flatten() {
            sum += g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(sum.sqrt())
    }

    /// Scales all gradients so their global norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.norm()?;
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        if coef < 1.0 {
            for g in self.grads.iter_mut().flatten() {
                *g = (&*g * coef)?;
            }
        }
        Ok(norm)
    }

    pub fn clear(&mut self) {
        self.grads.iter_mut().for_each(|g| *g = None);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Slot {
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW with bias correction and decoupled weight decay; decay only where `decay` is set.
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: u64,
}

impl AdamW {
    /// `params`: each trainable variable and whether weight decay applies to it.
    pub fn new(params: Vec<(Var, bool)>, config: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(var, decay)| {
                Ok(Slot {
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    var,
                    decay,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            config,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`. A parameter without a gradient is left as it is,
    /// weight decay included, as torch skips parameters whose `.grad` is None.
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias1;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(g) = grads.get(i) else { continue };
            let mut p = slot.var.as_tensor().detach();
            if slot.decay && weight_decay > 0.0 {
                p = (p * (1.0 - lr * weight_decay))?;
            }
            slot.m = ((&slot.m * beta1)? + (g * (1.0 - beta1))?)?;
            slot.v = ((&slot.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let denom = ((slot.v.sqrt()? / bias2_sqrt)? + eps)?;
            let p = (p - (slot.m.div(&denom)? * step_size)?)?;
            slot.var.set(&p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn linear_warmup_then_linear_decay() {
        let s = LrSchedule::new(1.0, SchedulerType::Linear, 10, 0, 0.2);
        assert_eq!(s.warmup_steps, 2);
        let lrs: Vec<f64> = (0..11).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]);
        let s = LrSchedule::new(2.0, SchedulerType::Linear, 250, 0, 0.1);
        assert_eq!(s.warmup_steps, 25);
        let c = LrSchedule::new(1.0, SchedulerType::ConstantWithWarmup, 10, 4, 0.0);
        assert_eq!((c.lr(2), c.lr(4), c.lr(9)), (0.5, 1.0, 1.0));
    }

    /// One AdamW step on a scalar, worked by hand from torch.optim.AdamW's update rule.
    #[test]
    fn adamw_matches_the_torch_update_rule() {
        let p = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let b = Var::new(&[0.5f32], &Device::Cpu).unwrap();
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(vec![(p.clone(), true), (b.clone(), false)], config).unwrap();
        let mut grads = Gradients::new(2);
        grads.grads[0] = Some(Tensor::new(&[0.5f32, 0.0], &Device::Cpu).unwrap());
        grads.grads[1] = Some(Tensor::new(&[-1.0f32], &Device::Cpu).unwrap());
        opt.step(&grads, 0.01).unwrap();
        // First step: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
        let p = p.as_tensor().to_vec1::<f32>().unwrap();
        let expected0 = 1.0 * (1.0 - 0.01 * 0.1) - 0.01 * 0.5 / (0.5 + 1e-8);
        let expected1 = -2.0 * (1.0 - 0.01 * 0.1);
        assert!((p[0] as f64 - expected0).abs() < 1e-7, "{} vs {expected0}", p[0]);
        assert!((p[1] as f64 - expected1).abs() < 1e-7, "{} vs {expected1}", p[1]);
        let b = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!((b[0] as f64 - (0.5 + 0.01)).abs() < 1e-7, "no decay on biases: {}", b[0]);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut grads = Gradients::new(2);
        grads.grads[0] = Some(Tensor::new(&[3.0f32], &Device::Cpu).unwrap());
        grads.grads[1] = Some(Tensor::new(&[4.0f32], &Device::Cpu).unwrap());
        let before = grads.clip(1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((grads.norm().unwrap() - 1.0).abs() < 1e-5);
        let small = grads.clip(10.0).unwrap();
        assert!((small - 1.0).abs() < 1e-5, "no change below the limit");
    }
}
