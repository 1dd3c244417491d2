//! Scaled dot-product attention with dropout and a backward pass, on the CPU: what training
//! (and any pass that is differentiated) runs instead of the graph of split heads, batched
//! products, softmax and dropout.
//!
//! candle multiplies batched matrices one (sequence, head) pair at a time on one thread, and
//! the graph costs the backward pass a gradient buffer and a copy per node: at the 14-token
//! batches of the SST-2 recipe that is overhead, not arithmetic. Here each (sequence, head)
//! pair is one rayon task, forward and backward. The probabilities are not kept for the
//! backward pass: it recomputes them from q and k (queries x keys x head_dim multiply-adds, as
//! cheap as reading them back at these lengths) and redraws the dropout mask from its seed,
//! the mask [`super::ops::dropout`] would draw on the probabilities.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, bail};
use rayon::prelude::*;

use super::attention::{Geometry, has_fma, head_rows};
use super::ops::{f32_slice, masked_softmax};
use crate::rng::hash_uniform;

/// Dropout on the attention probabilities: rate and seed.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
}

/// `dropout(softmax(q kᵀ · scale + mask_bias)) v` per head, differentiable in q, k and v: `q`
/// (batch, queries, heads * head_dim), `k` and `v` (batch, keys, heads * head_dim),
/// `mask_bias` (batch, 1, 1, keys) as [`super::layers::mask_bias`] builds it. Returns (batch,
/// heads, queries, head_dim), as the graph's `probs.matmul(v)` does. f32 on the CPU.
pub fn context(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_bias: &Tensor,
    heads: usize,
    scale: f64,
    dropout: Option<Dropout>,
) -> Result<Tensor> {
    let mask = mask_bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            heads,
            scale: scale as f32,
            mask,
            dropout,
            avx2: has_fma(),
        },
    )
}

struct Attention {
    heads: usize,
    scale: f32,
    /// (batch, keys).
    mask: Vec<f32>,
    dropout: Option<Dropout>,
    /// Whether the CPU has AVX2 and FMA: the tasks are then compiled for them.
    avx2: bool,
}

/// One (sequence, head) pair: its rows copied out of the interleaved heads, and its
/// probabilities.
struct Head {
    keys: usize,
    dim: usize,
    /// (queries, dim), (keys, dim), (keys, dim).
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// A (dim, keys) transpose of k or v: products along the keys are then multiply-adds of
    /// whole rows, which vectorize, not one dot product per key.
    transposed: Vec<f32>,
    /// (queries, keys): the softmax, and each probability's dropout factor (0, or 1 / (1 - p)).
    probs: Vec<f32>,
    factors: Vec<f32>,
}

impl Head {
    fn new(g: &Geometry) -> Self {
        let (queries, keys, dim) = (g.queries, g.keys, g.head_dim);
        Self {
            keys,
            dim,
            q: vec![0.0; queries * dim],
            k: vec![0.0; keys * dim],
            v: vec![0.0; keys * dim],
            transposed: vec![0.0; dim * keys],
            probs: vec![0.0; queries * keys],
            factors: vec![1.0; queries * keys],
        }
    }

    /// Copies `head`'s rows of sequence `item` out of q, k and v.
    #[inline(always)]
    fn load(
        &mut self,
        g: &Geometry,
        (q, k, v): (&[f32], &[f32], &[f32]),
        item: usize,
        head: usize,
    ) {
        let rows = |t, count| head_rows(t, item, head, count, g.width, g.head_dim);
        for (dst, (src, count)) in [(&mut self.q, (q, g.queries)), (&mut self.k, (k, g.keys))]
            .into_iter()
            .chain([(&mut self.v, (v, g.keys))])
        {
            for (dst, row) in dst.chunks_exact_mut(g.head_dim).zip(rows(src, count)) {
                dst.copy_from_slice(row);
            }
        }
    }

    /// `transposed` = `m`ᵀ for `m` (keys, dim).
    #[inline(always)]
    fn transpose(&mut self, which: fn(&Self) -> &[f32]) {
        let keys = self.keys;
        let mut t = std::mem::take(&mut self.transposed);
        for (j, row) in which(self).chunks_exact(self.dim).enumerate() {
            for (d, &x) in row.iter().enumerate() {
                t[d * keys + j] = x;
            }
        }
        self.transposed = t;
    }

    /// The probabilities of every query and their dropout factors; `first` is the index of
    /// this pair's first probability in the (batch, heads, queries, keys) tensor the graph
    /// would drop out, so that the mask is the one [`super::ops::dropout`] draws there.
    #[inline(always)]
    fn probabilities(&mut self, mask: &[f32], scale: f32, dropout: Option<Dropout>, first: u64) {
        self.transpose(|h| &h.k);
        let keys = self.keys;
        for (q, probs) in self
            .q
            .chunks_exact(self.dim)
            .zip(self.probs.chunks_exact_mut(keys))
        {
            probs.fill(0.0);
            for (&x, key_d) in q.iter().zip(self.transposed.chunks_exact(keys)) {
                for (p, &k) in probs.iter_mut().zip(key_d) {
                    *p += x * k;
                }
            }
            masked_softmax(probs, mask, scale);
        }
        if let Some(Dropout { p, seed }) = dropout {
            let kept = 1.0 / (1.0 - p);
            for (i, f) in self.factors.iter_mut().enumerate() {
                let keep = hash_uniform(seed, first + i as u64) >= p;
                *f = if keep { kept } else { 0.0 };
            }
        }
    }

    /// `out` (queries, dim) = the dropped-out probabilities times the values.
    #[inline(always)]
    fn context(&self, out: &mut [f32]) {
        let keys = self.keys;
        for ((out, probs), factors) in out
            .chunks_exact_mut(self.dim)
            .zip(self.probs.chunks_exact(keys))
            .zip(self.factors.chunks_exact(keys))
        {
            out.fill(0.0);
            for ((&p, &f), value) in probs.iter().zip(factors).zip(self.v.chunks_exact(self.dim)) {
                let w = p * f;
                for (o, &x) in out.iter_mut().zip(value) {
                    *o += w * x;
                }
            }
        }
    }

    /// The gradients of q, k and v from `d_out` (queries, dim), the context's gradient.
    #[inline(always)]
    fn backward(&mut self, d_out: &[f32], scale: f32, grads: &mut HeadGrads) {
        let (keys, dim) = (self.keys, self.dim);
        grads.clear();
        self.transpose(|h| &h.v);
        for (i, d_out) in d_out.chunks_exact(dim).enumerate() {
            let probs = &self.probs[i * keys..][..keys];
            let factors = &self.factors[i * keys..][..keys];
            // dv[j] += dropped[i][j] * d_out[i]
            for ((&p, &f), dv) in probs.iter().zip(factors).zip(grads.v.chunks_exact_mut(dim)) {
                let w = p * f;
                for (g, &x) in dv.iter_mut().zip(d_out) {
                    *g += w * x;
                }
            }
            // d_probs[j] = (d_out[i] · v[j]) * factor[j]
            let d_probs = &mut grads.row[..keys];
            d_probs.fill(0.0);
            for (&x, value_d) in d_out.iter().zip(self.transposed.chunks_exact(keys)) {
                for (g, &v) in d_probs.iter_mut().zip(value_d) {
                    *g += x * v;
                }
            }
            let mut dot = 0f32;
            for ((g, &f), &p) in d_probs.iter_mut().zip(factors).zip(probs) {
                *g *= f;
                dot += p * *g;
            }
            // The softmax's backward pass, times the scores' scale: d_scores[j].
            for (g, &p) in d_probs.iter_mut().zip(probs) {
                *g = p * (*g - dot) * scale;
            }
            let dq = &mut grads.q[i * dim..][..dim];
            let q = &self.q[i * dim..][..dim];
            for ((&s, key), dk) in d_probs
                .iter()
                .zip(self.k.chunks_exact(dim))
                .zip(grads.k.chunks_exact_mut(dim))
            {
                for ((gq, &k), (gk, &x)) in dq.iter_mut().zip(key).zip(dk.iter_mut().zip(q)) {
                    *gq += s * k;
                    *gk += s * x;
                }
            }
        }
    }
}

/// One (sequence, head) pair's gradients: (queries, dim), (keys, dim), (keys, dim), and a
/// row of keys to work in.
struct HeadGrads {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    row: Vec<f32>,
}

impl HeadGrads {
    fn new(g: &Geometry) -> Self {
        Self {
            q: vec![0.0; g.queries * g.head_dim],
            k: vec![0.0; g.keys * g.head_dim],
            v: vec![0.0; g.keys * g.head_dim],
            row: vec![0.0; g.keys],
        }
    }

    fn clear(&mut self) {
        for t in [&mut self.q, &mut self.k, &mut self.v] {
            t.fill(0.0);
        }
    }
}

/// One (sequence, head) pair of a call: its index among the call's pairs.
#[derive(Clone, Copy)]
struct Task<'a> {
    g: &'a Geometry,
    qkv: (&'a [f32], &'a [f32], &'a [f32]),
    task: usize,
}

impl Attention {
    /// One pair's context into `out`.
    #[inline(always)]
    fn forward_task(&self, t: Task, head: &mut Head, out: &mut [f32]) {
        self.prepare(t, head);
        head.context(out);
    }

    /// One pair's gradients into `grads`.
    #[inline(always)]
    fn backward_task(&self, t: Task, head: &mut Head, d_out: &[f32], grads: &mut HeadGrads) {
        self.prepare(t, head);
        head.backward(d_out, self.scale, grads);
    }

    /// [`Attention::forward_task`] compiled for AVX2, so that its loops run 8 floats wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_task_avx2(&self, t: Task, head: &mut Head, out: &mut [f32]) {
        self.forward_task(t, head, out)
    }

    /// [`Attention::backward_task`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward_task_avx2(
        &self,
        t: Task,
        head: &mut Head,
        d_out: &[f32],
        grads: &mut HeadGrads,
    ) {
        self.backward_task(t, head, d_out, grads)
    }

    fn geometry(&self, ql: &Layout, kl: &Layout, vl: &Layout) -> Result<Geometry> {
        Geometry::new((ql, kl, vl), self.heads, self.mask.len())
    }

    /// Loads pair `task` (sequence-major) and computes its probabilities.
    #[inline(always)]
    fn prepare(&self, Task { g, qkv, task }: Task, head: &mut Head) {
        let item = task / g.heads;
        head.load(g, qkv, item, task % g.heads);
        let mask = &self.mask[item * g.keys..][..g.keys];
        let first = (task * g.queries * g.keys) as u64;
        head.probabilities(mask, self.scale, self.dropout, first);
    }

    /// The gradients of q, k and v, laid out as q, k and v, from `d_out` (batch, heads,
    /// queries, head_dim).
    fn backward(
        &self,
        g: &Geometry,
        qkv: (&[f32], &[f32], &[f32]),
        d_out: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let per_task = g.queries * g.head_dim;
        let pairs: Vec<HeadGrads> = d_out
            .par_chunks(per_task)
            .enumerate()
            .map_init(
                || Head::new(g),
                |head, (task, d_out)| {
                    let mut grads = HeadGrads::new(g);
                    let task = Task { g, qkv, task };
                    match self.avx2 {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: `avx2` is set only where the CPU has AVX2 and FMA.
                        true => unsafe { self.backward_task_avx2(task, head, d_out, &mut grads) },
                        _ => self.backward_task(task, head, d_out, &mut grads),
                    }
                    grads
                },
            )
            .collect();
        let mut dq = vec![0f32; g.batch * g.queries * g.width];
        let mut dk = vec![0f32; g.batch * g.keys * g.width];
        let mut dv = vec![0f32; g.batch * g.keys * g.width];
        for (task, grads) in pairs.iter().enumerate() {
            let (item, head) = (task / g.heads, task % g.heads);
            for (dst, src, count) in [
                (&mut dq, &grads.q, g.queries),
                (&mut dk, &grads.k, g.keys),
                (&mut dv, &grads.v, g.keys),
            ] {
                let start = item * count * g.width + head * g.head_dim;
                for (r, row) in src.chunks_exact(g.head_dim).enumerate() {
                    dst[start + r * g.width..][..g.head_dim].copy_from_slice(row);
                }
            }
        }
        (dq, dk, dv)
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "bertcls-training-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = (
            f32_slice(qs, ql, self.name())?,
            f32_slice(ks, kl, self.name())?,
            f32_slice(vs, vl, self.name())?,
        );
        let g = self.geometry(ql, kl, vl)?;
        let shape = Shape::from((g.batch, g.heads, g.queries, g.head_dim));
        let mut out = vec![0f32; shape.elem_count()];
        if !out.is_empty() {
            out.par_chunks_mut(g.queries * g.head_dim)
                .enumerate()
                .for_each_init(
                    || Head::new(&g),
                    |head, (task, out)| {
                        let task = Task { g: &g, qkv, task };
                        match self.avx2 {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: `avx2` is set only where the CPU has AVX2 and FMA.
                            true => unsafe { self.forward_task_avx2(task, head, out) },
                            _ => self.forward_task(task, head, out),
                        }
                    },
                );
        }
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach().contiguous()?;
        let (q_storage, ql) = q.storage_and_layout();
        let (k_storage, kl) = k.storage_and_layout();
        let (v_storage, vl) = v.storage_and_layout();
        let (g_storage, gl) = grad.storage_and_layout();
        let (Storage::Cpu(qs), Storage::Cpu(ks), Storage::Cpu(vs), Storage::Cpu(gs)) =
            (&*q_storage, &*k_storage, &*v_storage, &*g_storage)
        else {
            bail!("{}: expected tensors on the CPU", self.name());
        };
        let g = self.geometry(ql, kl, vl)?;
        if gl.dims() != [g.batch, g.heads, g.queries, g.head_dim] {
            bail!("{}: gradient of shape {:?}", self.name(), gl.dims());
        }
        let qkv = (
            f32_slice(qs, ql, self.name())?,
            f32_slice(ks, kl, self.name())?,
            f32_slice(vs, vl, self.name())?,
        );
        let (dq, dk, dv) = self.backward(&g, qkv, f32_slice(gs, gl, self.name())?);
        let device = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), device)?),
            Some(Tensor::from_vec(dk, k.shape(), device)?),
            Some(Tensor::from_vec(dv, v.shape(), device)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::model::attention::fixtures::{CASES, graph, padded_bias, randn};
    use crate::model::layers::{ForwardMode, mask_bias};
    use crate::testing::max_abs_diff;

    /// Forward values and the gradients of q, k and v against the graph's, with and without
    /// dropout, with padding, one query (the last layer's first-token pass) and odd sizes.
    #[test]
    fn matches_the_graph_forward_and_backward() {
        for (i, &(batch, queries, keys, heads, head_dim)) in CASES.iter().enumerate() {
            let width = heads * head_dim;
            let seed = 10 * i as u64;
            let vars: Vec<Var> = [(queries, seed), (keys, seed + 1), (keys, seed + 2)]
                .iter()
                .map(|&(rows, s)| Var::from_tensor(&randn(&[batch, rows, width], s)).unwrap())
                .collect();
            let bias = padded_bias(batch, keys);
            let upstream = randn(&[batch, heads, queries, head_dim], seed + 3);
            let scale = 1.0 / (head_dim as f64).sqrt();
            for dropout in [None, Some(Dropout { p: 0.3, seed: 7 })] {
                let qkv = (
                    vars[0].as_tensor(),
                    vars[1].as_tensor(),
                    vars[2].as_tensor(),
                );
                let fused = context(qkv.0, qkv.1, qkv.2, &bias, heads, scale, dropout).unwrap();
                let expected = graph(qkv, &bias, heads, dropout.map(|d| (d.p, d.seed)));
                let diff = max_abs_diff(&fused, &expected);
                assert!(
                    diff < 1e-5,
                    "case {i} {dropout:?}: output differs by {diff}"
                );
                let fused_grads = (&fused * &upstream).unwrap().sum_all().unwrap();
                let graph_grads = (&expected * &upstream).unwrap().sum_all().unwrap();
                let (a, b) = (
                    fused_grads.backward().unwrap(),
                    graph_grads.backward().unwrap(),
                );
                for (n, var) in vars.iter().enumerate() {
                    let (ga, gb) = (a.get(var).unwrap(), b.get(var).unwrap());
                    let diff = max_abs_diff(ga, gb);
                    assert!(
                        diff < 1e-4,
                        "case {i} {dropout:?}: gradient {n} differs by {diff}"
                    );
                }
            }
        }
    }

    /// The kernel draws its dropout mask from the seed the graph's dropout would get at the
    /// same point of the pass, so both paths train alike.
    #[test]
    fn dropout_seeds_do_not_depend_on_the_attention_path() {
        let mut fused = ForwardMode::train(3);
        let mut graph = ForwardMode::train(3).with_graph_attention();
        assert!(!fused.graph_attention() && graph.graph_attention());
        for _ in 0..3 {
            assert_eq!(fused.dropout_seed(0.1), graph.dropout_seed(0.1));
        }
        assert_eq!(fused.dropout_seed(0.0), None);
        assert_eq!(ForwardMode::eval().dropout_seed(0.1), None);
    }

    #[test]
    fn shapes_that_do_not_fit_are_an_error() {
        let q = randn(&[2, 3, 8], 1);
        let k = randn(&[2, 4, 8], 2);
        let mask = Tensor::ones((2, 4), DType::U32, &Device::Cpu).unwrap();
        let bias = mask_bias(&mask, DType::F32).unwrap();
        let err = context(&q, &k, &randn(&[2, 3, 8], 3), &bias, 2, 0.5, None).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }
}
