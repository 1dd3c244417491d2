//! The non-matmul operations of the encoder, each with a backward pass.
//!
//! Two implementations of each:
//! - `plain`: composed from candle's differentiable tensor ops. Runs on any device and dtype,
//!   and is the reference the fused kernels are tested against.
//! - fused CPU kernels (f32): one pass over memory forward and one backward, split across
//!   threads by rows. candle's stock `layer_norm` has no backward at all, and its composed
//!   equivalents allocate a tensor per elementary op.
//!
//! The public functions pick the fused kernel for contiguous f32 tensors on the CPU.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail,
};
use rayon::prelude::*;

use std::sync::Arc;

use super::bf16;
use crate::rng::hash_uniform;

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Mixed precision computes layer norm and softmax in f32, as PyTorch's autocast does: their
/// sums lose too much in 8 bits of mantissa.
fn is_half(x: &Tensor) -> bool {
    matches!(x.dtype(), DType::BF16 | DType::F16)
}

/// Rows per parallel task: enough work per task to amortise rayon's overhead.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

pub(super) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: expected f32 input");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expected a contiguous input"),
    }
}

// ---------------------------------------------------------------------------------------------
// Linear layer.

/// `x W^T + b` over the last dimension of `x`, with `W` stored (out, in) as in PyTorch.
///
/// One graph node instead of candle's reshape, transpose, matmul and broadcast add: each of
/// those costs the backward pass a gradient allocation and an addition, and the bias gradient
/// becomes a single-threaded strided sum. Here the bias is the gemm's starting value, and the
/// backward pass is two gemms and a parallel column sum.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op3(
            w,
            b,
            Linear {
                bf16: None,
                packed: None,
            },
        )
    } else {
        plain::linear(x, w, b)
    }
}

/// [`linear`] with its three products (forward and backward) on bf16-rounded operands,
/// computed by `kernel` (see [`super::bf16`]); f32 tensors on the CPU. `packed`: `w`ᵀ packed
/// beforehand, for weights that do not change.
pub fn linear_bf16(
    x: &Tensor,
    (w, packed): (&Tensor, Option<&Arc<bf16::PackedB>>),
    b: &Tensor,
    kernel: bf16::Kernel,
) -> Result<Tensor> {
    if !fused(x) {
        bail!("bf16 products: expected f32 tensors on the CPU");
    }
    x.contiguous()?.apply_op3(
        w,
        b,
        Linear {
            bf16: Some(kernel),
            packed: packed.cloned(),
        },
    )
}

/// The products in f32 (gemm), or in bf16 by this kernel.
struct Linear {
    bf16: Option<bf16::Kernel>,
    /// Wᵀ packed for the bf16 kernel beforehand, when the weights do not change.
    packed: Option<Arc<bf16::PackedB>>,
}

/// A (rows, cols) f32 matrix read through strides, every element of it in bounds: an operand
/// of the f32 and bf16 products.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
}

impl<'a> Strided<'a> {
    pub fn new(
        data: &'a [f32],
        (rows, cols): (usize, usize),
        (row_stride, col_stride): (usize, usize),
    ) -> Result<Self> {
        if rows > 0 && cols > 0 && data.len() <= (rows - 1) * row_stride + (cols - 1) * col_stride {
            bail!("product: a ({rows} x {cols}) operand reaches past its storage");
        }
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A row-major matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, (rows, cols), (cols, 1))
    }

    /// The matrix read transposed.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// (m, k, n) of `dst` (m, n) += `a` (m, k) · b, `b` of shape (k, n), or an error naming the
/// shapes that do not fit.
pub(super) fn product_shape(
    dst: usize,
    a: &Strided,
    (b_rows, n): (usize, usize),
) -> Result<(usize, usize, usize)> {
    let (m, k) = (a.rows, a.cols);
    if b_rows != k || dst != m * n {
        bail!("product: ({m} x {k}) . ({b_rows} x {n}) into {dst} values");
    }
    Ok((m, k, n))
}

/// `dst` (m, n), row-major, += `lhs` (m, k) · `rhs` (k, n), in f32 by the `gemm` crate.
fn gemm_add_f32(dst: &mut [f32], lhs: Strided, rhs: Strided) -> Result<()> {
    let (m, k, n) = product_shape(dst.len(), &lhs, (rhs.rows, rhs.cols))?;
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `Strided::new` checked that every element the strides address is in bounds,
    // `product_shape` that `dst` holds m x n, and `dst` is borrowed mutably, so it aliases
    // neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        match self.bf16 {
            None => "bertcls-linear",
            Some(_) => "bertcls-bf16-linear",
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let w = f32_slice(ws, wl, self.name())?;
        let b = f32_slice(bs, bl, self.name())?;
        let (outputs, inputs) = wl.shape().dims2()?;
        if xl.dims().last() != Some(&inputs) || b.len() != outputs {
            bail!(
                "linear: weight {:?} and bias {:?} do not fit input {:?}",
                wl.dims(),
                bl.dims(),
                xl.dims()
            );
        }
        let rows = x.len() / inputs.max(1);
        let mut y = Vec::with_capacity(rows * outputs);
        for _ in 0..rows {
            y.extend_from_slice(b);
        }
        let x = Strided::rows(x, rows, inputs)?;
        // W (out, in) read as W^T (in, out).
        let w = Strided::rows(w, outputs, inputs)?.t();
        match (self.bf16, &self.packed) {
            (None, _) => gemm_add_f32(&mut y, x, w)?,
            (Some(kernel), Some(packed)) => bf16::gemm_add_packed(kernel, &mut y, x, packed)?,
            (Some(kernel), None) => bf16::gemm_add(kernel, &mut y, x, w)?,
        }
        let mut dims = xl.dims().to_vec();
        if let Some(d) = dims.last_mut() {
            *d = outputs;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (outputs, inputs) = w.dims2()?;
        let rows = x.elem_count() / inputs.max(1);
        let dy = grad.detach().contiguous()?.reshape((rows, outputs))?;
        let x2 = x.detach().reshape((rows, inputs))?;
        let product = |a: &Tensor, b: &Tensor| match self.bf16 {
            None => a.matmul(b),
            Some(kernel) => a.apply_op2_no_bwd(b, &bf16::Product(kernel)),
        };
        let dx = product(&dy, &w.detach())?.reshape(x.shape())?;
        let dw = product(&dy.t()?, &x2)?;
        let db = column_sums(&dy)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Adds the partial sums of consecutive chunks of rows into `sums` in row order, not in the
/// order rayon's tasks happened to split and finish: the same bits on every run with the same
/// seed.
fn add_in_order(partials: Vec<Vec<f32>>, sums: &mut [f32]) {
    for partial in partials {
        sums.iter_mut().zip(partial).for_each(|(s, v)| *s += v);
    }
}

/// Sums a contiguous (rows, n) f32 matrix over its rows, in parallel: the bias gradient.
fn column_sums(t: &Tensor) -> Result<Tensor> {
    t.apply_op1_no_bwd(&ColumnSums)
}

struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "bertcls-column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (_, n) = l.shape().dims2()?;
        let chunk = n * rows_per_task(n);
        let partials: Vec<Vec<f32>> = x
            .par_chunks(chunk.max(1))
            .map(|rows| {
                let mut acc = vec![0f32; n];
                for row in rows.chunks(n) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .collect();
        let mut sums = vec![0f32; n];
        add_in_order(partials, &mut sums);
        Ok((CpuStorage::F32(sums), Shape::from(n)))
    }
}

// ---------------------------------------------------------------------------------------------
// Layer normalization over the last dimension.

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over the last dimension (biased variance, as
/// `torch.nn.LayerNorm`).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) {
        let x = x.contiguous()?;
        x.apply_op3(gamma, beta, LayerNorm { eps: eps as f32 })
    } else if is_half(x) {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        plain::layer_norm(&f(x)?, &f(gamma)?, &f(beta)?, eps)?.to_dtype(x.dtype())
    } else {
        plain::layer_norm(x, gamma, beta, eps)
    }
}

struct LayerNorm {
    eps: f32,
}

#[inline]
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "bertcls-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let g = f32_slice(gs, gl, self.name())?;
        let b = f32_slice(bs, bl, self.name())?;
        let h = g.len();
        if xl.dims().last() != Some(&h) || b.len() != h {
            bail!(
                "layer norm: weight of size {h} does not match input {:?}",
                xl.dims()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * rows_per_task(h))
            .zip(x.par_chunks(h * rows_per_task(h)))
            .for_each(|(out, x)| {
                for (o, row) in out.chunks_mut(h).zip(x.chunks(h)) {
                    let (mean, rstd) = row_stats(row, self.eps);
                    for i in 0..h {
                        o[i] = (row[i] - mean) * rstd * g[i] + b[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = gamma.elem_count();
        let n = x.elem_count();
        let grad = grad.detach().contiguous()?;
        let packed = x.detach().apply_op3_no_bwd(
            &gamma.detach(),
            &grad,
            &LayerNormBackward { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, h)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, n + h, h)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Computes `[dx, dgamma, dbeta]` packed in one buffer (a custom op returns one tensor).
struct LayerNormBackward {
    eps: f32,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "bertcls-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let g = f32_slice(gs, gl, self.name())?;
        let dy = f32_slice(dys, dyl, self.name())?;
        let h = g.len();
        let n = x.len();
        let mut out = vec![0f32; n + 2 * h];
        let (dx, param_grads) = out.split_at_mut(n);
        let chunk = h * rows_per_task(h);
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk)))
            .map(|(dx, (x, dy))| {
                // [dgamma, dbeta] of these rows
                let mut acc = vec![0f32; 2 * h];
                let mut xhat = vec![0f32; h];
                for ((dx, row), dy) in dx.chunks_mut(h).zip(x.chunks(h)).zip(dy.chunks(h)) {
                    let (mean, rstd) = row_stats(row, self.eps);
                    let mut sum_dxhat = 0f32;
                    let mut sum_dxhat_xhat = 0f32;
                    for i in 0..h {
                        xhat[i] = (row[i] - mean) * rstd;
                        let dxhat = dy[i] * g[i];
                        sum_dxhat += dxhat;
                        sum_dxhat_xhat += dxhat * xhat[i];
                        acc[i] += dy[i] * xhat[i];
                        acc[h + i] += dy[i];
                    }
                    let mean_dxhat = sum_dxhat / h as f32;
                    let mean_dxhat_xhat = sum_dxhat_xhat / h as f32;
                    for i in 0..h {
                        dx[i] = rstd * (dy[i] * g[i] - mean_dxhat - xhat[i] * mean_dxhat_xhat);
                    }
                }
                acc
            })
            .collect();
        add_in_order(partials, param_grads);
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * h)))
    }
}

// ---------------------------------------------------------------------------------------------
// Attention probabilities: softmax over keys of scaled, masked scores.

/// `softmax(scores * scale + mask_bias)` over the last dimension, where `scores` is (batch,
/// heads, queries, keys) and `mask_bias` (batch, 1, 1, keys) holds 0 for real tokens and a huge
/// negative for padding.
///
/// One op instead of three: the scaled and the masked scores (each as large as the attention
/// matrix) are neither written nor kept for the backward pass.
pub fn attention_softmax(scores: &Tensor, mask_bias: &Tensor, scale: f64) -> Result<Tensor> {
    if fused(scores) && mask_bias.dtype() == DType::F32 {
        scores.contiguous()?.apply_op2(
            &mask_bias.contiguous()?,
            AttentionSoftmax {
                scale: scale as f32,
            },
        )
    } else if is_half(scores) {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        plain::attention_softmax(&f(scores)?, &f(mask_bias)?, scale)?.to_dtype(scores.dtype())
    } else {
        plain::attention_softmax(scores, mask_bias, scale)
    }
}

/// `softmax(scores * scale + mask)` in place: the attention kernels' one definition.
#[inline(always)]
pub(super) fn masked_softmax(scores: &mut [f32], mask: &[f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for (p, &b) in scores.iter_mut().zip(mask) {
        *p = *p * scale + b;
        max = max.max(*p);
    }
    let mut sum = 0f32;
    for p in scores.iter_mut() {
        *p = (*p - max).exp();
        sum += *p;
    }
    let inv = 1.0 / sum;
    scores.iter_mut().for_each(|p| *p *= inv);
}

struct AttentionSoftmax {
    scale: f32,
}

impl CustomOp2 for AttentionSoftmax {
    fn name(&self) -> &'static str {
        "bertcls-attention-softmax"
    }

    fn cpu_fwd(
        &self,
        ss: &CpuStorage,
        sl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(ss, sl, self.name())?;
        let mask = f32_slice(ms, ml, self.name())?;
        let (batch, heads, queries, keys) = sl.shape().dims4()?;
        if ml.dims() != [batch, 1, 1, keys] {
            bail!(
                "attention softmax: mask {:?} does not fit scores {:?}",
                ml.dims(),
                sl.dims()
            );
        }
        let rows_per_item = heads * queries;
        let rows_per_chunk = rows_per_task(keys);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(keys * rows_per_chunk)
            .zip(x.par_chunks(keys * rows_per_chunk))
            .enumerate()
            .for_each(|(c, (out, x))| {
                let first_row = c * rows_per_chunk;
                for (r, (o, row)) in out.chunks_mut(keys).zip(x.chunks(keys)).enumerate() {
                    let item = (first_row + r) / rows_per_item;
                    o.copy_from_slice(row);
                    masked_softmax(o, &mask[item * keys..(item + 1) * keys], self.scale);
                }
            });
        Ok((CpuStorage::F32(out), sl.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach().contiguous()?;
        let backward = SoftmaxBackward { scale: self.scale };
        Ok((Some(y.detach().apply_op2_no_bwd(&grad, &backward)?), None))
    }
}

/// `dx = scale * y * (dy - sum(dy * y))` per row.
struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "bertcls-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(ys, yl, self.name())?;
        let dy = f32_slice(gs, gl, self.name())?;
        let d = *yl.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; y.len()];
        let chunk = d * rows_per_task(d);
        out.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk).zip(dy.par_chunks(chunk)))
            .for_each(|(out, (y, dy))| {
                for ((o, y), dy) in out.chunks_mut(d).zip(y.chunks(d)).zip(dy.chunks(d)) {
                    let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
                    for i in 0..d {
                        o[i] = self.scale * y[i] * (dy[i] - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// GELU (exact, with erf).

pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        plain::gelu(x)
    }
}

/// erf for f32 to within about 1e-7 absolute: the rational approximation used by Eigen and
/// XLA (inputs clamped to [-4, 4], where erf is ±1 in f32). Branch-free, so it vectorizes.
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn map_parallel(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(16_384)
        .zip(x.par_chunks(16_384))
        .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v)));
    out
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "bertcls-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let out = map_parallel(x, |v| 0.5 * v * (1.0 + erf_f32(v * FRAC_1_SQRT_2)));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.detach().contiguous()?;
        Ok(Some(x.detach().apply_op2_no_bwd(&grad, &GeluBackward)?))
    }
}

/// `dx = dy * (Phi(x) + x * phi(x))`
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "bertcls-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let dy = f32_slice(gs, gl, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(16_384)
            .zip(x.par_chunks(16_384).zip(dy.par_chunks(16_384)))
            .for_each(|(o, (x, dy))| {
                for ((o, &v), &g) in o.iter_mut().zip(x).zip(dy) {
                    let cdf = 0.5 * (1.0 + erf_f32(v * FRAC_1_SQRT_2));
                    let pdf = INV_SQRT_2PI * (-0.5 * v * v).exp();
                    *o = g * (cdf + v * pdf);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout.

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`. The mask
/// is a pure function of `(seed, element index)`, so the backward pass regenerates it
/// instead of keeping it in memory, and a run is reproducible from its seed.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if fused(x) {
        x.contiguous()?.apply_op1(Dropout { p, seed })
    } else {
        plain::dropout(x, p, seed)
    }
}

#[derive(Clone, Copy)]
struct Dropout {
    p: f32,
    seed: u64,
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "bertcls-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let scale = 1.0 / (1.0 - self.p);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(16_384)
            .zip(x.par_chunks(16_384))
            .enumerate()
            .for_each(|(c, (o, x))| {
                let base = (c * 16_384) as u64;
                for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                    let keep = hash_uniform(self.seed, base + i as u64) >= self.p;
                    *o = if keep { v * scale } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.detach().contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// The reference implementations, composed of candle's differentiable ops.
pub mod plain {
    use super::*;
    use candle_core::D;

    pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (outputs, inputs) = w.dims2()?;
        let mut dims = x.dims().to_vec();
        let rows = x.elem_count() / inputs.max(1);
        let y = x
            .reshape((rows, inputs))?
            .matmul(&w.t()?)?
            .broadcast_add(b)?;
        if let Some(d) = dims.last_mut() {
            *d = outputs;
        }
        y.reshape(dims)
    }

    pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(gamma)?.broadcast_add(beta)
    }

    pub fn attention_softmax(scores: &Tensor, mask_bias: &Tensor, scale: f64) -> Result<Tensor> {
        let x = (scores * scale)?.broadcast_add(mask_bias)?;
        let max = x.max_keepdim(D::Minus1)?;
        let exp = x.broadcast_sub(&max)?.exp()?;
        exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
    }

    pub fn gelu(x: &Tensor) -> Result<Tensor> {
        let cdf = ((x * FRAC_1_SQRT_2 as f64)?.erf()? + 1.0)? * 0.5;
        x * cdf?
    }

    /// The same mask as the fused kernel, built on the host.
    pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..x.elem_count() as u64)
            .map(|i| {
                if hash_uniform(seed, i) >= p {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 2.0).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// The bias gradient's sums: the same bits however the work is split (so the same seed
    /// trains the same weights), and the plain sums up to rounding.
    #[test]
    fn column_sums_are_the_same_on_any_thread_count() {
        // Magnitudes from 1e-3 to 1e3: sums whose last bits depend on the order of the adds.
        let (rows, n) = (4000, 24);
        let mut rng = crate::rng::Rng::new(7);
        let data: Vec<f32> = (0..rows * n)
            .map(|i| rng.normal() as f32 * 10f32.powi((i % 7) as i32 - 3))
            .collect();
        let t = Tensor::from_vec(data, (rows, n), &Device::Cpu).unwrap();
        let sums = crate::testing::same_on_any_thread_count(|| {
            column_sums(&t).unwrap().to_vec1::<f32>().unwrap()
        });
        let plain = t.sum(0).unwrap().to_vec1::<f32>().unwrap();
        for (s, p) in sums.iter().zip(&plain) {
            assert!((s - p).abs() <= 1e-3 * p.abs().max(1.0), "{s} vs {p}");
        }
    }

    /// Forward and backward of `fused` and `plain` agree on the same random input, with a
    /// random upstream gradient so that every output element matters.
    fn check_unary(
        fused: impl Fn(&Tensor) -> Result<Tensor>,
        plain: impl Fn(&Tensor) -> Result<Tensor>,
        tol: f64,
    ) {
        let x = Var::from_tensor(&randn(&[6, 5, 40], 1)).unwrap();
        let w = randn(&[6, 5, 40], 2);
        let yf = fused(x.as_tensor()).unwrap();
        let yp = plain(x.as_tensor()).unwrap();
        assert!(
            max_abs_diff(&yf, &yp) < tol,
            "forward differs: {}",
            max_abs_diff(&yf, &yp)
        );
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (yp * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (
            gf.get(x.as_tensor()).unwrap(),
            gp.get(x.as_tensor()).unwrap(),
        );
        assert!(
            max_abs_diff(gf, gp) < tol * 10.0,
            "backward differs: {}",
            max_abs_diff(gf, gp)
        );
    }

    #[test]
    fn erf_matches_f64_erf() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            let exact = candle_core::cpu::erf::erf_f64(x);
            worst = worst.max((erf_f32(x as f32) as f64 - exact).abs());
        }
        assert!(worst < 5e-7, "max error {worst}");
    }

    #[test]
    fn fused_attention_softmax_matches_plain() {
        // (batch 6, heads 5, one query row, 40 keys): the check's shape read as attention
        // scores, with padding masked in the second and fifth items.
        let mut bias = vec![0f32; 6 * 40];
        bias[40 + 30..80].iter_mut().for_each(|b| *b = f32::MIN);
        bias[4 * 40 + 7..5 * 40]
            .iter_mut()
            .for_each(|b| *b = f32::MIN);
        let mask = Tensor::from_vec(bias, (6, 1, 1, 40), &Device::Cpu).unwrap();
        let as_scores = |x: &Tensor| x.reshape((6, 5, 1, 40));
        check_unary(
            |x| attention_softmax(&as_scores(x)?, &mask, 0.125)?.reshape(x.shape()),
            |x| plain::attention_softmax(&as_scores(x)?, &mask, 0.125)?.reshape(x.shape()),
            1e-6,
        );
        let probs = attention_softmax(&as_scores(&randn(&[6, 5, 40], 3)).unwrap(), &mask, 0.125)
            .unwrap()
            .flatten_to(2)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Rows 5..10: the five heads of the second item, whose keys 30.. are padding.
        for row in &probs[5..10] {
            assert!(
                row[30..].iter().all(|&p| p == 0.0),
                "padding gets no weight"
            );
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn fused_gelu_matches_plain() {
        check_unary(gelu, plain::gelu, 1e-5);
    }

    #[test]
    fn fused_dropout_matches_plain_and_drops_about_p() {
        check_unary(
            |x| dropout(x, 0.25, 9),
            |x| plain::dropout(x, 0.25, 9),
            1e-6,
        );
        let ones = Tensor::ones(100_000, DType::F32, &Device::Cpu).unwrap();
        let out = dropout(&ones, 0.25, 3).unwrap().to_vec1::<f32>().unwrap();
        let zeros = out.iter().filter(|&&v| v == 0.0).count() as f64 / out.len() as f64;
        assert!((zeros - 0.25).abs() < 0.01, "dropped {zeros}");
        assert!(
            out.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
        );
        let other = dropout(&ones, 0.25, 4).unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(out, other, "the mask depends on the seed");
    }

    #[test]
    fn fused_linear_matches_plain_including_parameter_grads() {
        // A 3-d input, and a non-contiguous one (the narrowed rows the [CLS]-only layer uses).
        let x = Var::from_tensor(&randn(&[4, 9, 24], 11)).unwrap();
        let w = Var::from_tensor(&randn(&[40, 24], 12)).unwrap();
        let b = Var::from_tensor(&randn(&[40], 13)).unwrap();
        let up = randn(&[4, 9, 40], 14);
        for narrow in [false, true] {
            let run = |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>| {
                let input = if narrow {
                    x.as_tensor().narrow(1, 0, 1).unwrap()
                } else {
                    x.as_tensor().clone()
                };
                let y = f(&input, w.as_tensor(), b.as_tensor()).unwrap();
                let weight = up.narrow(1, 0, y.dim(1).unwrap()).unwrap();
                let grads = (&y * &weight)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let get = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
                (y, get(&x), get(&w), get(&b))
            };
            let fused = run(&linear);
            let plain = run(&plain::linear);
            assert_eq!(fused.0.dims(), plain.0.dims());
            assert!(max_abs_diff(&fused.0, &plain.0) < 1e-4);
            assert!(max_abs_diff(&fused.1, &plain.1) < 1e-4);
            assert!(max_abs_diff(&fused.2, &plain.2) < 1e-4);
            assert!(max_abs_diff(&fused.3, &plain.3) < 1e-4);
        }
    }

    #[test]
    fn fused_layer_norm_matches_plain_including_parameter_grads() {
        let x = Var::from_tensor(&randn(&[7, 3, 48], 4)).unwrap();
        let g = Var::from_tensor(&((randn(&[48], 5) * 0.5).unwrap() + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&randn(&[48], 6)).unwrap();
        let w = randn(&[7, 3, 48], 7);
        let run = |f: &dyn Fn(&Tensor, &Tensor, &Tensor, f64) -> Result<Tensor>| {
            let y = f(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-12).unwrap();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
            (y, get(&x), get(&g), get(&b))
        };
        let fused = run(&layer_norm);
        let plain = run(&plain::layer_norm);
        assert!(max_abs_diff(&fused.0, &plain.0) < 1e-5);
        assert!(max_abs_diff(&fused.1, &plain.1) < 1e-4);
        assert!(max_abs_diff(&fused.2, &plain.2) < 1e-4);
        assert!(max_abs_diff(&fused.3, &plain.3) < 1e-4);
    }
}
