//! AdamW, the learning-rate schedule and gradient clipping, computing what `torch.optim.AdamW`,
//! transformers' `get_linear_schedule_with_warmup` and `clip_grad_norm_` compute.

use anyhow::Result;
use candle_core::backprop::GradStore;
use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor, Var};
use rayon::prelude::*;

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
    pub fn new(
        base: f64,
        kind: SchedulerType,
        total_steps: usize,
        warmup_steps: usize,
        warmup_ratio: f64,
    ) -> Self {
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
        let (step, warmup, total) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let factor = match self.kind {
            SchedulerType::Constant => 1.0,
            _ if step < warmup => step / warmup.max(1.0),
            SchedulerType::ConstantWithWarmup => 1.0,
            SchedulerType::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
        };
        self.base * factor
    }
}

/// Runs `f` on the contents of a contiguous f32 tensor in CPU memory; `None` for any other.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => {
            let (start, end) = layout.contiguous_offsets()?;
            Some(f(&data[start..end]))
        }
        _ => None,
    }
}

/// The sum of squares in f64, over eight interleaved partial sums: one running sum is a chain
/// of dependent additions that cannot vectorize.
fn sum_of_squares(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += (x as f64) * (x as f64);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// Gradients of the trainable parameters, summed over the micro-batches of one update, and
/// the factor that clipping applies to all of them.
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
    scale: f64,
}

impl Gradients {
    pub fn new(count: usize) -> Self {
        Self {
            grads: vec![None; count],
            scale: 1.0,
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

    /// The gradient of parameter `i`, before scaling.
    pub fn get(&self, i: usize) -> Option<&Tensor> {
        self.grads[i].as_ref()
    }

    /// The factor clipping applies to every gradient (1 when not clipped).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The global L2 norm over every gradient, before scaling.
    pub fn norm(&self) -> Result<f64> {
        let mut sum = 0f64;
        // Sums on a GPU stay there until the end: one read back a step, not one a parameter
        // (each read waits for every kernel queued before it).
        let mut on_device = Vec::new();
        for g in self.grads.iter().flatten() {
            // Partial sums collected in order and added in order: a parallel `sum` adds them
            // in whatever order its tasks split, and a different last bit of the norm makes a
            // different clipping factor, so the same seed would not train the same weights.
            let fast = with_cpu_f32(g, |v| {
                let partials: Vec<f64> = v.par_chunks(1 << 16).map(sum_of_squares).collect();
                partials.iter().sum::<f64>()
            });
            match fast {
                Some(s) => sum += s,
                None => on_device.push(g.to_dtype(DType::F64)?.sqr()?.sum_all()?),
            }
        }
        if !on_device.is_empty() {
            sum += Tensor::stack(&on_device, 0)?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        Ok(sum.sqrt())
    }

    /// Scales all gradients so their global norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.norm()?;
        self.scale = (max_norm / (norm + 1e-6)).min(1.0);
        Ok(norm)
    }

    pub fn clear(&mut self) {
        self.grads.iter_mut().for_each(|g| *g = None);
        self.scale = 1.0;
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// First and second moments of one parameter.
enum Moments {
    /// In host memory, updated in place by the fused CPU kernel.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// As tensors, updated with tensor ops on any device.
    Device { m: Tensor, v: Tensor },
}

struct Slot {
    var: Var,
    moments: Moments,
    decay: bool,
}

/// The scalars of one update, as torch computes them (in f64, used in f32 kernels).
#[derive(Clone, Copy)]
struct StepScalars {
    beta1: f64,
    beta2: f64,
    eps: f64,
    decay_factor: f64,
    step_size: f64,
    bias2_sqrt: f64,
    grad_scale: f64,
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
        Self::build(params, config, true)
    }

    /// `fused`: use the single-pass CPU kernel where the parameter allows it.
    fn build(params: Vec<(Var, bool)>, config: AdamWConfig, fused: bool) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(var, decay)| {
                let host = fused && var.device().is_cpu() && var.dtype() == DType::F32;
                let moments = if host {
                    Moments::Host {
                        m: vec![0.0; var.elem_count()],
                        v: vec![0.0; var.elem_count()],
                    }
                } else {
                    Moments::Device {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    }
                };
                Ok(Slot {
                    var,
                    moments,
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

    /// Each parameter's first and second moments, as tensors shaped like the parameter.
    pub fn moments(&self) -> Result<Vec<(Tensor, Tensor)>> {
        self.slots
            .iter()
            .map(|slot| match &slot.moments {
                Moments::Host { m, v } => {
                    let shape = slot.var.shape();
                    Ok((
                        Tensor::from_slice(m, shape, &candle_core::Device::Cpu)?,
                        Tensor::from_slice(v, shape, &candle_core::Device::Cpu)?,
                    ))
                }
                Moments::Device { m, v } => Ok((m.clone(), v.clone())),
            })
            .collect()
    }

    /// Restores the state [`AdamW::moments`] and [`AdamW::steps_taken`] described.
    pub fn restore(&mut self, steps: u64, moments: Vec<(Tensor, Tensor)>) -> Result<()> {
        if moments.len() != self.slots.len() {
            anyhow::bail!(
                "optimizer state has {} parameters, the model {}",
                moments.len(),
                self.slots.len()
            );
        }
        for (slot, (m, v)) in self.slots.iter_mut().zip(moments) {
            if m.dims() != slot.var.dims() || v.dims() != slot.var.dims() {
                anyhow::bail!(
                    "optimizer state shaped {:?} for a parameter shaped {:?}",
                    m.dims(),
                    slot.var.dims()
                );
            }
            slot.moments = match &slot.moments {
                Moments::Host { .. } => Moments::Host {
                    m: m.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
                    v: v.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
                },
                Moments::Device { .. } => Moments::Device {
                    m: m.to_device(slot.var.device())?.to_dtype(slot.var.dtype())?,
                    v: v.to_device(slot.var.device())?.to_dtype(slot.var.dtype())?,
                },
            };
        }
        self.step = steps;
        Ok(())
    }

    /// One update with learning rate `lr`, on gradients times `grads.scale()`. A parameter
    /// without a gradient is left as it is, weight decay included, as torch skips parameters
    /// whose `.grad` is None.
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let scalars = StepScalars {
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            decay_factor: 1.0 - lr * c.weight_decay,
            step_size: lr / (1.0 - c.beta1.powi(t)),
            bias2_sqrt: (1.0 - c.beta2.powi(t)).sqrt(),
            grad_scale: grads.scale(),
        };
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(g) = grads.get(i) {
                slot.update(g, scalars, c.weight_decay > 0.0)?;
            }
        }
        Ok(())
    }
}

impl Slot {
    fn update(&mut self, g: &Tensor, s: StepScalars, weight_decay: bool) -> Result<()> {
        let decay = self.decay && weight_decay;
        match &mut self.moments {
            Moments::Host { m, v } => {
                let g = g.to_dtype(DType::F32)?.contiguous()?;
                let kernel = FusedAdamW {
                    moments: RefCell::new((m.as_mut_slice(), v.as_mut_slice())),
                    scalars: s,
                    decay,
                };
                self.var.as_tensor().inplace_op2(&g, &kernel)?;
            }
            Moments::Device { m, v } => {
                let g = (g.to_dtype(m.dtype())? * s.grad_scale)?;
                let mut p = self.var.as_tensor().detach();
                if decay {
                    p = (p * s.decay_factor)?;
                }
                *m = (&*m + ((&g - &*m)? * (1.0 - s.beta1))?)?;
                *v = ((&*v * s.beta2)? + ((&g * (1.0 - s.beta2))? * &g)?)?;
                let denom = ((v.sqrt()? / s.bias2_sqrt)? + s.eps)?;
                let p = (p - (m.div(&denom)? * s.step_size)?)?;
                self.var.set(&p)?;
            }
        }
        Ok(())
    }
}

/// The AdamW update of one parameter, in place, in a single pass over memory, in the order
/// torch's single-tensor AdamW computes it. The gradient is the op's source operand.
struct FusedAdamW<'a> {
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    scalars: StepScalars,
    decay: bool,
}

/// One AdamW update's per-element constants, in f32 as the kernel uses them.
#[derive(Clone, Copy)]
struct Coefficients {
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    decay_factor: f32,
    step_size: f32,
    bias2_sqrt: f32,
    eps: f32,
    grad_scale: f32,
}

impl Coefficients {
    /// Updates one chunk of a parameter and its moments, compiled for AVX2 where the CPU has
    /// it. Each element's operations are the same IEEE operations in the same order either way
    /// (Rust fuses no multiply-add), so the results are bit for bit the scalar loop's.
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.update_avx2(p, g, m, v) };
        }
        self.update_portable(p, g, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn update_avx2(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.update_portable(p, g, m, v)
    }

    /// Zipped iterators, so there is no bounds check and no branch in the loop: it vectorizes.
    #[inline(always)]
    fn update_portable(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let k = *self;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * k.grad_scale;
            let param = *p * k.decay_factor;
            // torch.lerp with weight < 0.5: m + w * (g - m)
            *m += k.one_minus_b1 * (g - *m);
            *v = *v * k.b2 + k.one_minus_b2 * g * g;
            let denom = v.sqrt() / k.bias2_sqrt + k.eps;
            *p = param - k.step_size * (*m / denom);
        }
    }
}

impl InplaceOp2 for FusedAdamW<'_> {
    fn name(&self) -> &'static str {
        "bertcls-adamw"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_layout: &Layout,
        src: &CpuStorage,
        src_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (dst, src) else {
            candle_core::bail!("adamw: expected f32 parameter and gradient");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (
            dst_layout.contiguous_offsets(),
            src_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("adamw: expected contiguous parameter and gradient");
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if g.len() != p.len() || m.len() != p.len() {
            candle_core::bail!("adamw: gradient or moments sized unlike the parameter");
        }
        let s = self.scalars;
        let k = Coefficients {
            one_minus_b1: (1.0 - s.beta1) as f32,
            b2: s.beta2 as f32,
            one_minus_b2: (1.0 - s.beta2) as f32,
            // Multiplying by 1 changes no bit, so no decay and no clipping need no branch.
            decay_factor: if self.decay {
                s.decay_factor as f32
            } else {
                1.0
            },
            step_size: s.step_size as f32,
            bias2_sqrt: s.bias2_sqrt as f32,
            eps: s.eps as f32,
            grad_scale: s.grad_scale as f32,
        };
        const CHUNK: usize = 1 << 15;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| k.update(p, g, m, v));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sum_of_squares_matches_a_plain_sum() {
        for n in [0, 1, 7, 8, 9, 1000, 65_537] {
            let values: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let plain: f64 = values.iter().map(|&x| (x as f64) * (x as f64)).sum();
            let fast = sum_of_squares(&values);
            assert!(
                (fast - plain).abs() <= 1e-12 * plain.max(1.0),
                "{n}: {fast} vs {plain}"
            );
        }
    }

    /// The gradient norm over many chunks: the same bits however the work is split, since a
    /// different last bit makes a different clipping factor and so different weights.
    #[test]
    fn the_norm_is_the_same_on_any_thread_count() {
        // One chunk's squares sum to 2^60 (its last bit worth 256), eleven chunks' to 100
        // each: added one at a time to the large sum each is lost; added to each other first,
        // they are not. So the result depends on the order of the adds.
        let chunk = 1 << 16;
        let values: Vec<f32> = (0..12 * chunk)
            .map(|i| if i < chunk { 4_194_304.0 } else { 0.0390625 })
            .collect();
        let mut grads = Gradients::new(1);
        grads.grads[0] = Some(Tensor::new(values.as_slice(), &Device::Cpu).unwrap());
        crate::testing::same_on_any_thread_count(|| grads.norm().unwrap().to_bits());
    }

    #[test]
    fn linear_warmup_then_linear_decay() {
        let s = LrSchedule::new(1.0, SchedulerType::Linear, 10, 0, 0.2);
        assert_eq!(s.warmup_steps, 2);
        let lrs: Vec<f64> = (0..11).map(|i| s.lr(i)).collect();
        assert_eq!(
            lrs,
            [
                0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0
            ]
        );
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
        assert!(
            (p[0] as f64 - expected0).abs() < 1e-7,
            "{} vs {expected0}",
            p[0]
        );
        assert!(
            (p[1] as f64 - expected1).abs() < 1e-7,
            "{} vs {expected1}",
            p[1]
        );
        let b = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (b[0] as f64 - (0.5 + 0.01)).abs() < 1e-7,
            "no decay on biases: {}",
            b[0]
        );
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut grads = Gradients::new(2);
        grads.grads[0] = Some(Tensor::new(&[3.0f32], &Device::Cpu).unwrap());
        grads.grads[1] = Some(Tensor::new(&[4.0f32], &Device::Cpu).unwrap());
        let before = grads.clip(1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((grads.scale() - 1.0 / (5.0 + 1e-6)).abs() < 1e-12);
        grads.clip(10.0).unwrap();
        assert_eq!(grads.scale(), 1.0, "no change below the limit");
    }

    /// Gradients that are not contiguous f32 on the CPU (bf16 here; any on a GPU) are summed
    /// where they are and read back once: the same norm.
    #[test]
    fn the_norm_of_gradients_off_the_fast_path() {
        let mut grads = Gradients::new(3);
        grads.grads[0] = Some(Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap());
        let bf16 = |v: &[f32]| {
            Tensor::new(v, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
        };
        grads.grads[1] = Some(bf16(&[4.0, 12.0]));
        grads.grads[2] = Some(bf16(&[84.0]));
        assert_eq!(grads.norm().unwrap(), 85.0, "sqrt(9 + 16 + 144 + 7056)");
    }

    /// The vectorized update against the element-by-element formula it replaced: bit for bit,
    /// with and without decay and clipping, over a length that leaves a scalar tail.
    #[test]
    fn vectorized_update_is_the_scalar_formula_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(7);
        let mut randn = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        let n = 1003;
        for (decay_factor, grad_scale) in [(1.0, 1.0), (0.99995, 1.0), (1.0, 0.37), (0.9999, 0.5)] {
            let k = Coefficients {
                one_minus_b1: 0.1,
                b2: 0.999,
                one_minus_b2: (1.0 - 0.999f64) as f32,
                decay_factor,
                step_size: 2.5e-4,
                bias2_sqrt: 0.0447,
                eps: 1e-8,
                grad_scale,
            };
            let (p0, g) = (randn(n), randn(n));
            let m0: Vec<f32> = randn(n).iter().map(|x| x * 0.01).collect();
            let v0: Vec<f32> = randn(n).iter().map(|x| x * x * 1e-4).collect();
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            k.update(&mut p, &g, &mut m, &mut v);
            for i in 0..n {
                let g = if grad_scale == 1.0 {
                    g[i]
                } else {
                    g[i] * grad_scale
                };
                let param = if decay_factor == 1.0 {
                    p0[i]
                } else {
                    p0[i] * decay_factor
                };
                let m1 = m0[i] + k.one_minus_b1 * (g - m0[i]);
                let v1 = v0[i] * k.b2 + k.one_minus_b2 * g * g;
                let p1 = param - k.step_size * (m1 / (v1.sqrt() / k.bias2_sqrt + k.eps));
                assert_eq!(
                    (p[i].to_bits(), m[i].to_bits(), v[i].to_bits()),
                    (p1.to_bits(), m1.to_bits(), v1.to_bits()),
                    "element {i}"
                );
            }
        }
    }

    /// The fused CPU kernel and the tensor-op path (used on GPUs) compute the same updates.
    #[test]
    fn fused_kernel_matches_tensor_ops() {
        let mut rng = crate::rng::Rng::new(1);
        let mut randn = |n: usize| -> Tensor {
            let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            Tensor::from_vec(v, n, &Device::Cpu).unwrap()
        };
        let init = [randn(70_000), randn(33)];
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let vars = |fused: bool| {
            let params: Vec<(Var, bool)> = init
                .iter()
                .zip([true, false])
                .map(|(t, decay)| (Var::from_tensor(t).unwrap(), decay))
                .collect();
            let vars: Vec<Var> = params.iter().map(|p| p.0.clone()).collect();
            (AdamW::build(params, config, fused).unwrap(), vars)
        };
        let (mut fused, fused_vars) = vars(true);
        let (mut plain, plain_vars) = vars(false);
        assert!(matches!(fused.slots[0].moments, Moments::Host { .. }));
        assert!(matches!(plain.slots[0].moments, Moments::Device { .. }));
        for step in 0..3 {
            let mut grads = Gradients::new(2);
            grads.grads[0] = Some(randn(70_000));
            grads.grads[1] = Some(randn(33));
            grads.clip(50.0).unwrap();
            let lr = 1e-3 * (step + 1) as f64;
            fused.step(&grads, lr).unwrap();
            plain.step(&grads, lr).unwrap();
        }
        for (a, b) in fused_vars.iter().zip(&plain_vars) {
            let diff = (a.as_tensor() - b.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        }
    }
}
