//! Scaled dot-product attention for inference on the CPU, in one kernel.
//!
//! The graph version (split heads, `q kᵀ`, [`ops::attention_softmax`], `probs v`) pays for
//! short sequences in overhead, not arithmetic: candle multiplies batched matrices one
//! (sequence, head) pair at a time, on one thread, so a 64 x 25 batch of a 12-head model runs
//! 768 tiny gemms twice per layer, after copying q, k and v into head-major order. Here each
//! (sequence, head) pair is one task on the thread pool, reading q, k and v where the linear
//! layers wrote them. No backward pass: [`ForwardMode::infer`](super::ForwardMode::infer)
//! alone takes it.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::ops::{f32_slice, masked_softmax};

/// Whether [`context`] computes for these tensors.
pub fn fits(q: &Tensor) -> bool {
    q.device().is_cpu() && q.dtype() == DType::F32
}

/// `softmax(q kᵀ · scale + mask_bias) v` per head: `q` (batch, queries, heads * head_dim), `k`
/// and `v` (batch, keys, heads * head_dim), `mask_bias` (batch, 1, 1, keys) as
/// [`layers::mask_bias`](super::layers::mask_bias) builds it. Returns (batch, heads, queries,
/// head_dim), as `probs.matmul(v)` does. No gradient flows through it.
pub fn context(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_bias: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let mask = mask_bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &Attention {
            heads,
            scale: scale as f32,
            mask,
        },
    )
}

struct Attention {
    heads: usize,
    scale: f32,
    /// (batch, keys).
    mask: Vec<f32>,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "bertcls-attention"
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
        let (q, k, v) = (
            f32_slice(qs, ql, self.name())?,
            f32_slice(ks, kl, self.name())?,
            f32_slice(vs, vl, self.name())?,
        );
        let Geometry {
            batch,
            queries,
            keys,
            width,
            heads,
            head_dim,
        } = Geometry::new((ql, kl, vl), self.heads, self.mask.len())?;
        let mut out = vec![0f32; batch * heads * queries * head_dim];
        if out.is_empty() {
            return Ok((
                CpuStorage::F32(out),
                (batch, heads, queries, head_dim).into(),
            ));
        }
        out.par_chunks_mut(queries * head_dim)
            .enumerate()
            .for_each_init(
                || Scratch::new(keys, head_dim),
                |scratch, (task, out)| {
                    let (item, head) = (task / heads, task % heads);
                    let rows = |t, count| head_rows(t, item, head, count, width, head_dim);
                    scratch.load(rows(k, keys), rows(v, keys));
                    let mask = &self.mask[item * keys..(item + 1) * keys];
                    let mut queries_left = rows(q, queries);
                    for out in out.chunks_mut(BLOCK * head_dim) {
                        scratch.attend(&mut queries_left, mask, self.scale, out);
                    }
                },
            );
        Ok((
            CpuStorage::F32(out),
            (batch, heads, queries, head_dim).into(),
        ))
    }
}

/// The sizes of one attention call: q (batch, queries, width), k and v (batch, keys, width),
/// `width` = `heads` x `head_dim`.
pub(super) struct Geometry {
    pub batch: usize,
    pub queries: usize,
    pub keys: usize,
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Geometry {
    /// The sizes of q, k and v, checked against each other, `heads` and the mask's length.
    pub fn new(
        (ql, kl, vl): (&Layout, &Layout, &Layout),
        heads: usize,
        mask: usize,
    ) -> Result<Self> {
        let (batch, queries, width) = ql.shape().dims3()?;
        let keys = kl.shape().dims3()?.1;
        if heads == 0
            || width % heads != 0
            || kl.dims() != [batch, keys, width]
            || vl.dims() != kl.dims()
            || keys == 0
            || mask != batch * keys
        {
            bail!(
                "attention: q {:?}, k {:?}, v {:?}, {mask} mask values and {heads} heads do not fit",
                ql.dims(),
                kl.dims(),
                vl.dims(),
            );
        }
        Ok(Self {
            batch,
            queries,
            keys,
            width,
            heads,
            head_dim: width / heads,
        })
    }
}

/// Sequence `item`'s `count` rows of `head` in `t` (batch, count, width).
pub(super) fn head_rows(
    t: &[f32],
    item: usize,
    head: usize,
    count: usize,
    width: usize,
    head_dim: usize,
) -> impl Iterator<Item = &[f32]> {
    let start = item * count * width + head * head_dim;
    (0..count).map(move |r| &t[start + r * width..][..head_dim])
}

/// Floats per vector: the loops below run on fixed arrays of this many, which the compiler
/// keeps in one AVX register.
const LANES: usize = 8;

/// Queries scored together, and vectors of one output row summed together: independent
/// multiply-add chains, so that each waits less on the latency of the one before.
const BLOCK: usize = 4;

/// (sequence, head) pairs' keys, values and queries, laid out for [`Scratch::attend`]; reused
/// across the tasks a thread runs.
struct Scratch {
    keys: usize,
    head_dim: usize,
    /// The keys transposed, (head_dim, keys rounded up to LANES), zero-padded: scores are then
    /// multiply-adds along the keys, not one horizontal dot product per key.
    keys_t: Vec<f32>,
    /// The values, (keys, head_dim rounded up to BLOCK * LANES), zero-padded.
    values: Vec<f32>,
    /// (BLOCK, head_dim): the queries being scored, zero rows past the last.
    queries: Vec<f32>,
    /// (BLOCK, keys rounded up): their scores, then their probabilities.
    probs: Vec<f32>,
    /// Whether the CPU has AVX2 and FMA, asked once per thread, not once per query block.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fma: bool,
}

impl Scratch {
    fn new(keys: usize, head_dim: usize) -> Self {
        Self {
            keys,
            head_dim,
            keys_t: vec![0.0; head_dim * Self::keys_padded(keys)],
            values: vec![0.0; keys * Self::dim_padded(head_dim)],
            queries: vec![0.0; BLOCK * head_dim],
            probs: vec![0.0; BLOCK * Self::keys_padded(keys)],
            fma: has_fma(),
        }
    }

    fn keys_padded(keys: usize) -> usize {
        keys.div_ceil(LANES) * LANES
    }

    fn dim_padded(head_dim: usize) -> usize {
        head_dim.div_ceil(BLOCK * LANES) * BLOCK * LANES
    }

    fn load<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a [f32]>,
        values: impl Iterator<Item = &'a [f32]>,
    ) {
        let stride = Self::keys_padded(self.keys);
        for (j, key) in keys.enumerate() {
            for (d, &x) in key.iter().enumerate() {
                self.keys_t[d * stride + j] = x;
            }
        }
        let stride = Self::dim_padded(self.head_dim);
        for (dst, value) in self.values.chunks_exact_mut(stride).zip(values) {
            dst[..value.len()].copy_from_slice(value);
        }
    }

    /// The next `out.len() / head_dim` (at most BLOCK) of `queries`: each one's probabilities
    /// over the keys times the values, into `out`'s rows. With FMA where the CPU has it.
    fn attend<'a>(
        &mut self,
        queries: &mut impl Iterator<Item = &'a [f32]>,
        mask: &[f32],
        scale: f32,
        out: &mut [f32],
    ) {
        self.load_queries(queries, out.len() / self.head_dim);
        #[cfg(target_arch = "x86_64")]
        if self.fma {
            // SAFETY: `has_fma` found AVX2 and FMA on this CPU.
            return unsafe { self.attend_fma(mask, scale, out) };
        }
        self.attend_with::<Separate>(mask, scale, out)
    }

    /// The next `rows` queries into `self.queries`, zero rows after them.
    fn load_queries<'a>(&mut self, queries: &mut impl Iterator<Item = &'a [f32]>, rows: usize) {
        self.queries.fill(0.0);
        for (dst, query) in self
            .queries
            .chunks_exact_mut(self.head_dim)
            .zip(queries.take(rows))
        {
            dst.copy_from_slice(query);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn attend_fma(&mut self, mask: &[f32], scale: f32, out: &mut [f32]) {
        self.attend_with::<Fused>(mask, scale, out)
    }

    #[inline(always)]
    fn attend_with<M: MulAdd>(&mut self, mask: &[f32], scale: f32, out: &mut [f32]) {
        let (head_dim, keys_padded) = (self.head_dim, Self::keys_padded(self.keys));
        for c in 0..keys_padded / LANES {
            let mut acc = [[0f32; LANES]; BLOCK];
            for d in 0..head_dim {
                let key_d = &self.keys_t[d * keys_padded + c * LANES..][..LANES];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let x = self.queries[b * head_dim + d];
                    for (a, &k) in acc.iter_mut().zip(key_d) {
                        *a = M::mul_add(x, k, *a);
                    }
                }
            }
            for (b, acc) in acc.iter().enumerate() {
                self.probs[b * keys_padded + c * LANES..][..LANES].copy_from_slice(acc);
            }
        }
        let dim_padded = Self::dim_padded(head_dim);
        for (probs, out) in self
            .probs
            .chunks_exact_mut(keys_padded)
            .zip(out.chunks_exact_mut(head_dim))
        {
            let probs = &mut probs[..self.keys];
            masked_softmax(probs, mask, scale);
            for (g, out) in out.chunks_mut(BLOCK * LANES).enumerate() {
                let mut acc = [[0f32; LANES]; BLOCK];
                for (&p, value) in probs.iter().zip(self.values.chunks_exact(dim_padded)) {
                    let value = &value[g * BLOCK * LANES..][..BLOCK * LANES];
                    for (acc, value) in acc.iter_mut().zip(value.chunks_exact(LANES)) {
                        for (a, &x) in acc.iter_mut().zip(value) {
                            *a = M::mul_add(p, x, *a);
                        }
                    }
                }
                for (o, a) in out.iter_mut().zip(acc.as_flattened()) {
                    *o = *a;
                }
            }
        }
    }
}

/// Whether the CPU has AVX2 and FMA.
pub(super) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `a * b + c`, as one instruction or two.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// Rounded once (FMA); only where the CPU has FMA, else it is a slow library call.
#[cfg(target_arch = "x86_64")]
struct Fused;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Inputs both attention kernels are tested with, and the graph they are tested against.
#[cfg(test)]
pub(super) mod fixtures {
    use candle_core::{DType, Device, Tensor};

    use crate::model::layers::{mask_bias, split_heads};
    use crate::model::ops;

    pub fn randn(dims: &[usize], seed: u64) -> Tensor {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n as u64)
            .map(|i| crate::rng::hash_uniform(seed, i) * 4.0 - 2.0)
            .collect();
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    /// (batch, queries, keys, heads, head_dim): queries = 1 is the last layer's
    /// first-token-only pass; head_dim 5 leaves remainders in every vector loop.
    pub const CASES: [(usize, usize, usize, usize, usize); 4] = [
        (3, 7, 7, 2, 8),
        (2, 1, 9, 3, 5),
        (4, 14, 14, 12, 32),
        (1, 3, 3, 1, 1),
    ];

    /// The additive mask of `batch` sequences of `keys` tokens, every one but the first
    /// ending in padding.
    pub fn padded_bias(batch: usize, keys: usize) -> Tensor {
        let mask: Vec<u32> = (0..batch * keys)
            .map(|x| u32::from(x % keys < keys - x / keys))
            .collect();
        let mask = Tensor::from_vec(mask, (batch, keys), &Device::Cpu).unwrap();
        mask_bias(&mask, DType::F32).unwrap()
    }

    /// The graph: split heads, `q kᵀ`, the fused softmax, dropout (rate, seed) when given,
    /// `probs v`.
    pub fn graph(
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        bias: &Tensor,
        heads: usize,
        dropout: Option<(f32, u64)>,
    ) -> Tensor {
        let split = |t: &Tensor| split_heads(t, heads).unwrap();
        let (q, k, v) = (split(q), split(k), split(v));
        let scale = 1.0 / (q.dim(3).unwrap() as f64).sqrt();
        let scores = q.matmul(&k.t().unwrap()).unwrap();
        let mut probs = ops::attention_softmax(&scores, bias, scale).unwrap();
        if let Some((p, seed)) = dropout {
            probs = ops::dropout(&probs, p, seed).unwrap();
        }
        probs.matmul(&v).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::fixtures::{CASES, graph, padded_bias, randn};
    use super::*;
    use crate::model::layers::mask_bias;
    use crate::testing::max_abs_diff;

    #[test]
    fn matches_the_graph_version() {
        for (i, &(batch, queries, keys, heads, head_dim)) in CASES.iter().enumerate() {
            let width = heads * head_dim;
            let seed = 10 * i as u64;
            let q = randn(&[batch, queries, width], seed);
            let k = randn(&[batch, keys, width], seed + 1);
            let v = randn(&[batch, keys, width], seed + 2);
            let bias = padded_bias(batch, keys);
            let scale = 1.0 / (head_dim as f64).sqrt();
            let fused = context(&q, &k, &v, &bias, heads, scale).unwrap();
            let expected = graph((&q, &k, &v), &bias, heads, None);
            assert_eq!(fused.dims(), expected.dims());
            let diff = max_abs_diff(&fused, &expected);
            assert!(diff < 1e-5, "case {i}: largest difference {diff}");
        }
    }

    /// The plain path, which CPUs without AVX2 and FMA take, against the one this CPU takes.
    #[test]
    fn the_portable_path_matches_the_vectorized_one() {
        let (keys, head_dim, queries) = (11, 40, 6);
        let values = |seed| randn(&[keys, head_dim], seed).to_vec2::<f32>().unwrap();
        let (k, v) = (values(1), values(2));
        let q = randn(&[queries, head_dim], 3).to_vec2::<f32>().unwrap();
        let mask: Vec<f32> = (0..keys)
            .map(|j| if j < 9 { 0.0 } else { f32::MIN })
            .collect();
        let run = |portable: bool| {
            let mut scratch = Scratch::new(keys, head_dim);
            scratch.load(k.iter().map(Vec::as_slice), v.iter().map(Vec::as_slice));
            let mut out = vec![0f32; queries * head_dim];
            let mut rows = q.iter().map(Vec::as_slice);
            for out in out.chunks_mut(BLOCK * head_dim) {
                if portable {
                    scratch.load_queries(&mut rows, out.len() / head_dim);
                    scratch.attend_with::<Separate>(&mask, 0.3, out);
                } else {
                    scratch.attend(&mut rows, &mask, 0.3, out);
                }
            }
            out
        };
        let (portable, native) = (run(true), run(false));
        let worst = portable
            .iter()
            .zip(&native)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
    }

    #[test]
    fn shapes_that_do_not_fit_are_an_error() {
        let q = randn(&[2, 3, 8], 1);
        let k = randn(&[2, 4, 8], 2);
        let mask = Tensor::ones((2, 4), DType::U32, &Device::Cpu).unwrap();
        let bias = mask_bias(&mask, DType::F32).unwrap();
        let err = context(&q, &k, &randn(&[2, 3, 8], 3), &bias, 2, 0.5).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let err = context(&q, &k, &k, &bias, 3, 0.5).unwrap_err();
        assert!(err.to_string().contains("3 heads"), "{err}");
    }
}
