//! Dynamic int8 quantization of linear layers, for inference (`--quantize int8`).
//!
//! Weights are quantized once, per output channel, symmetric, to 7 bits ([-63, 63]);
//! activations per row at run time, asymmetric, to 8 bits ([0, 255] with a zero point). Each
//! output is `scale_x * scale_w * (sum(q_x * q_w) - zero_x * sum(q_w)) + bias`, the sum exact
//! in i32. Seven-bit weights are ONNX Runtime's `reduce_range` for CPUs without VNNI: AVX2's
//! `vpmaddubsw` adds two u8 x i8 products into a saturating i16, and 2 x 255 x 63 fits where
//! 2 x 255 x 127 does not; every kernel uses the same weights, so every CPU gives the same
//! integers. Where the CPU has AVX512-VNNI, `vpdpbusd` does the u8 x i8 products and their i32
//! sums in one instruction (no saturation to avoid), on the same packed weights. Where it has
//! AMX-INT8 (Sapphire Rapids and later), `tdpbusd` does 16 x 16 x 64 of them, on the same
//! weights laid out as tiles: on a 2-core Emerald Rapids VM, SST-2 prediction at 1.6x VNNI's speed
//! (docs/performance.md, "int8 inference").

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// The largest weight magnitude after quantization (7 bits).
const WEIGHT_MAX: f32 = 63.0;
/// Output columns per packed block, and inputs per group: one 256-bit register holds a block's
/// 4 inputs of 8 columns.
const COLS: usize = 8;
const GROUP: usize = 4;
/// Rows a kernel call computes at once.
const ROWS: usize = 4;
/// Columns of an AMX tile of sums (16 i32 in 64 bytes), and input groups of a tile row.
const PANEL: usize = 16;
/// Rows an AMX task computes: two tiles of 16.
const AMX_ROWS: usize = 32;

/// The environment variable that picks an int8 kernel instead of the fastest.
pub const KERNEL_VARIABLE: &str = "BERTCLS_INT8_KERNEL";

/// Which kernel computes the integer products; all give identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX-INT8 `tdpbusd`: 16 rows x 64 inputs by 64 inputs x 16 columns an instruction.
    Amx,
    /// AVX512-VNNI `vpdpbusd` on 256-bit registers (AVX512-VL).
    Vnni,
    /// AVX2 `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// Plain Rust, for any CPU.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs. (VNNI was opt-in until scripts/gpu-check.sh ran it
    /// on a CPU with AVX512-VNNI, 2026-11-26: the portable kernel's bytes, 1.29x AVX2's
    /// speed. AMX has run on CPUs that have it since the unit tests passed there.)
    pub fn detect() -> Self {
        Self::available()[0]
    }

    /// The kernel named by `BERTCLS_INT8_KERNEL` (amx, vnni, avx2 or portable), else
    /// [`Kernel::detect`]'s: how one kernel is checked against another on the same machine.
    pub fn from_env() -> std::result::Result<Self, String> {
        let Ok(name) = std::env::var(KERNEL_VARIABLE) else {
            return Ok(Self::detect());
        };
        super::kernel_named(KERNEL_VARIABLE, &name, &Self::available(), Self::name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Vnni => "vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Every kernel this CPU runs, fastest first.
    pub fn available() -> Vec<Self> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if super::amx::usable(super::amx::Products::Int8)
                && has!("avx2")
                && has!("fma")
                && has!("avx512f")
            {
                kernels.push(Kernel::Amx);
            }
            if has!("avx512vnni") && has!("avx512vl") && has!("avx2") && has!("fma") {
                kernels.push(Kernel::Vnni);
            }
            if has!("avx2") && has!("fma") {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels.push(Kernel::Portable);
        kernels
    }
}

/// A linear layer's weights, quantized and packed for the kernels.
#[derive(Debug, Clone)]
pub struct QuantizedLinear {
    inputs: usize,
    outputs: usize,
    /// `[column block][input group][column in block][input in group]`, zero-padded.
    packed: Vec<i8>,
    /// The same weights as AMX tiles (for [`Kernel::Amx`] only, else empty):
    /// `[panel of 16 columns][input group][column in panel][input in group]`, input groups
    /// padded to whole tiles (16) and panels to an even count.
    tiles: Vec<i8>,
    /// Per output: the weight scale, `sum(q_w)` and the bias.
    scales: Vec<f32>,
    sums: Vec<i32>,
    bias: Vec<f32>,
    kernel: Kernel,
}

impl QuantizedLinear {
    /// Quantizes `weight` (outputs, inputs) and `bias` (outputs), for `kernel`, which must be
    /// one this CPU runs.
    pub fn new(weight: &Tensor, bias: &Tensor, kernel: Kernel) -> Result<Self> {
        check_runs(kernel)?;
        let (outputs, inputs) = weight.dims2()?;
        let w: Vec<Vec<f32>> = weight.to_dtype(DType::F32)?.to_vec2()?;
        let bias: Vec<f32> = bias.to_dtype(DType::F32)?.to_vec1()?;
        let groups = inputs.div_ceil(GROUP);
        let blocks = outputs.div_ceil(COLS);
        let mut packed = vec![0i8; blocks * groups * COLS * GROUP];
        let mut scales = vec![0f32; outputs];
        let mut sums = vec![0i32; outputs];
        for (o, row) in w.iter().enumerate() {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / WEIGHT_MAX } else { 1.0 };
            scales[o] = scale;
            let (block, col) = (o / COLS, o % COLS);
            for (k, v) in row.iter().enumerate() {
                let q = (v / scale).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8;
                sums[o] += q as i32;
                let at = ((block * groups + k / GROUP) * COLS + col) * GROUP + k % GROUP;
                packed[at] = q;
            }
        }
        Self {
            inputs,
            outputs,
            packed,
            tiles: Vec::new(),
            scales,
            sums,
            bias,
            kernel: Kernel::Portable,
        }
        .with_kernel(kernel)
    }

    /// The same weights computed by `kernel`, which must be one this CPU runs.
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<Self> {
        check_runs(kernel)?;
        self.kernel = kernel;
        self.tiles = if kernel == Kernel::Amx {
            self.tile_layout()
        } else {
            Vec::new()
        };
        Ok(self)
    }

    /// `packed` rearranged as AMX's `tiles`.
    fn tile_layout(&self) -> Vec<i8> {
        let groups = self.inputs.div_ceil(GROUP);
        let tile_groups = groups.next_multiple_of(PANEL);
        let panels = self.outputs.div_ceil(PANEL).next_multiple_of(2);
        let mut tiles = vec![0i8; panels * tile_groups * PANEL * GROUP];
        for o in 0..self.outputs {
            for k in 0..self.inputs {
                let from = ((o / COLS * groups + k / GROUP) * COLS + o % COLS) * GROUP + k % GROUP;
                let to =
                    ((o / PANEL * tile_groups + k / GROUP) * PANEL + o % PANEL) * GROUP + k % GROUP;
                tiles[to] = self.packed[from];
            }
        }
        tiles
    }

    /// `x` (rows, inputs) f32 -> (rows, outputs).
    fn run(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * self.outputs];
        // A layer without inputs has no tiles to load: the general path gives its bias.
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Amx && self.inputs > 0 {
            let width = self.inputs.div_ceil(GROUP).next_multiple_of(PANEL) * GROUP;
            out.par_chunks_mut(AMX_ROWS * self.outputs)
                .enumerate()
                .for_each_init(
                    || vec![0u8; AMX_ROWS * width],
                    // SAFETY: `with_kernel` accepts Amx only where the CPU and process may use
                    // AMX-INT8 and the CPU has AVX2, FMA and AVX-512F.
                    |q, (chunk, out)| unsafe { self.rows_amx(x, chunk * AMX_ROWS, out, q) },
                );
            return out;
        }
        let width = self.inputs.div_ceil(GROUP) * GROUP;
        // One buffer of quantized rows per worker, not one per chunk of 4 rows.
        out.par_chunks_mut(ROWS * self.outputs)
            .enumerate()
            .for_each_init(
                || vec![0u8; ROWS * width],
                |q, (chunk, out)| match self.kernel {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `new` and `with_kernel` accept Vnni only where the CPU has it.
                    Kernel::Vnni => unsafe { self.rows_vnni(x, chunk * ROWS, out, q) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `new` and `with_kernel` accept Avx2 only where the CPU has it.
                    Kernel::Avx2 => unsafe { self.rows_avx2(x, chunk * ROWS, out, q) },
                    _ => self.rows(x, chunk * ROWS, out, q, portable_pair),
                },
            );
        out
    }

    /// [`QuantizedLinear::rows`] compiled for AVX2, so that quantizing and dequantizing
    /// vectorize too (rounding included: without SSE4.1 each rounding is a libm call).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(&self, x: &[f32], first: usize, out: &mut [f32], q: &mut [u8]) {
        self.rows(x, first, out, q, |q, width, w, w2, groups, acc| {
            // SAFETY: this function only runs where the CPU has AVX2.
            unsafe { x86::avx2(q, width, w, w2, groups, acc) }
        })
    }

    /// [`QuantizedLinear::rows`] with the VNNI kernel.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    unsafe fn rows_vnni(&self, x: &[f32], first: usize, out: &mut [f32], q: &mut [u8]) {
        self.rows(x, first, out, q, |q, width, w, w2, groups, acc| {
            // SAFETY: this function only runs where the CPU has AVX512-VNNI and AVX512-VL.
            unsafe { x86::vnni(q, width, w, w2, groups, acc) }
        })
    }

    /// The outputs of rows `first..` (up to [`AMX_ROWS`]; as many as `out` holds), each row
    /// quantized into `q` (`AMX_ROWS` rows of whole tiles of inputs), in blocks of 32 rows by
    /// 32 columns: four tiles of i32 sums, each 16 x 16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn rows_amx(&self, x: &[f32], first: usize, out: &mut [f32], q: &mut [u8]) {
        use super::amx::{self, TILE_BYTES, TILE_ROWS, Tiles};
        let width = q.len() / AMX_ROWS;
        let n = out.len() / self.outputs;
        let mut scale = [0f32; AMX_ROWS];
        let mut zero = [0i32; AMX_ROWS];
        q.fill(0);
        for r in 0..n {
            let row = &x[(first + r) * self.inputs..][..self.inputs];
            (scale[r], zero[r]) = quantize_row(row, &mut q[r * width..][..self.inputs]);
        }
        let panel_len = width * PANEL;
        let mut sums = [[0i32; 2 * PANEL]; AMX_ROWS];
        // SAFETY: the caller's contract: AMX-INT8 is usable.
        let _tiles = unsafe { Tiles::configure() };
        for (pair, w) in self.tiles.chunks_exact(2 * panel_len).enumerate() {
            // SAFETY: tiles are configured on this thread (`_tiles`).
            unsafe { amx::zero_sums() };
            for chunk in 0..width / TILE_BYTES {
                let a0 = q[chunk * TILE_BYTES..].as_ptr();
                let a1 = q[TILE_ROWS * width + chunk * TILE_BYTES..].as_ptr();
                let b0 = w[chunk * TILE_ROWS * TILE_BYTES..].as_ptr();
                let b1 = w[panel_len + chunk * TILE_ROWS * TILE_BYTES..].as_ptr();
                // SAFETY: AMX-INT8 is usable (the caller's contract) and tiles configured;
                // each load reads 16 rows of 64 bytes: inputs `64 * chunk..` of rows 0-15 or
                // 16-31 of `q` (rows `width` bytes apart, `width` a multiple of 64), and input
                // groups `16 * chunk..` of the pair's two panels (rows of 16 columns x 4
                // inputs, 64 bytes apart); all inside the slices.
                unsafe { amx::step_int8((a0, a1, width), (b0, b1, TILE_BYTES)) };
            }
            // SAFETY: `sums` holds 32 rows of 32 i32 (128 bytes).
            unsafe { amx::store_sums(sums.as_mut_ptr(), 2 * PANEL * 4) };
            let base = pair * 2 * PANEL;
            let cols = (2 * PANEL).min(self.outputs.saturating_sub(base));
            self.dequantize(&sums[..n], (&scale, &zero), base, cols, out);
        }
    }

    /// Writes `out`'s columns `base..base + cols` (rows of `outputs`) from the integer sums
    /// `acc` of each row and the row's (scale, zero point).
    #[inline(always)]
    fn dequantize<const C: usize>(
        &self,
        acc: &[[i32; C]],
        (scale, zero): (&[f32], &[i32]),
        base: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        let (sums, scales) = (&self.sums[base..][..cols], &self.scales[base..][..cols]);
        let bias = &self.bias[base..][..cols];
        for (r, acc) in acc.iter().enumerate() {
            let out = &mut out[r * self.outputs + base..][..cols];
            for c in 0..cols {
                let exact = acc[c] - zero[r] * sums[c];
                out[c] = scale[r] * scales[c] * exact as f32 + bias[c];
            }
        }
    }

    /// The outputs of rows `first..` (as many as `out` holds): each row quantized into `q`
    /// (zero-padded to whole input groups), then every pair of column blocks summed by `pair`
    /// and dequantized.
    #[inline(always)]
    fn rows(
        &self,
        x: &[f32],
        first: usize,
        out: &mut [f32],
        q: &mut [u8],
        pair: impl Fn(&[u8], usize, &[i8], Option<&[i8]>, usize, &mut Accumulators),
    ) {
        let groups = self.inputs.div_ceil(GROUP);
        let width = groups * GROUP;
        let n = out.len() / self.outputs;
        let mut scale = [0f32; ROWS];
        let mut zero = [0i32; ROWS];
        for r in 0..n {
            let row = &x[(first + r) * self.inputs..(first + r + 1) * self.inputs];
            (scale[r], zero[r]) = quantize_row(row, &mut q[r * width..r * width + self.inputs]);
        }
        let block_len = groups * COLS * GROUP;
        let blocks = self.outputs.div_ceil(COLS);
        let mut acc = [[[0i32; COLS]; ROWS]; 2];
        for first_block in (0..blocks).step_by(2) {
            let two = first_block + 1 < blocks;
            let w = &self.packed[first_block * block_len..][..block_len];
            let w2 = two.then(|| &self.packed[(first_block + 1) * block_len..][..block_len]);
            pair(q, width, w, w2, groups, &mut acc);
            for (half, acc) in acc.iter().enumerate().take(1 + two as usize) {
                let base = (first_block + half) * COLS;
                let cols = COLS.min(self.outputs - base);
                self.dequantize(&acc[..n], (&scale, &zero), base, cols, out);
            }
        }
    }
}

/// The SIMD kernels are `unsafe` to run on a CPU without their instructions: refuse them there.
fn check_runs(kernel: Kernel) -> Result<()> {
    if !Kernel::available().contains(&kernel) {
        bail!("the {} int8 kernel does not run on this CPU", kernel.name());
    }
    Ok(())
}

/// The sums of two column blocks for every row of a chunk.
type Accumulators = [[[i32; COLS]; ROWS]; 2];

/// [`portable_block`] for one or two column blocks.
fn portable_pair(
    q: &[u8],
    width: usize,
    w: &[i8],
    w2: Option<&[i8]>,
    groups: usize,
    acc: &mut Accumulators,
) {
    portable_block(q, width, w, groups, &mut acc[0]);
    if let Some(w2) = w2 {
        portable_block(q, width, w2, groups, &mut acc[1]);
    }
}

/// Quantizes `row` into `q` (u8 with a zero point); returns (scale, zero point). The range
/// always holds 0, so that 0 (padding's contribution, ReLU's floor) is exact.
fn quantize_row(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = row
        .iter()
        .fold((0f32, 0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    // Ties to even, as ONNX Runtime's QuantizeLinear rounds; unlike `round`, it is one
    // vectorizable instruction, not a call per element.
    let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    let inverse = 1.0 / scale;
    for (q, v) in q.iter_mut().zip(row) {
        // `max` takes NaN to 0 (what a saturating cast gives it), so the value is a whole
        // number in 0..=255 and the unchecked conversion, unlike the saturating one, is one
        // vector instruction for many elements.
        #[expect(clippy::manual_clamp, reason = "clamp keeps NaN")]
        let f = (v * inverse + zero).round_ties_even().max(0.0).min(255.0);
        // SAFETY: `f` is finite and within i32's range.
        *q = unsafe { f.to_int_unchecked::<i32>() } as u8;
    }
    (scale, zero as i32)
}

/// `acc[r][c] = sum over inputs of q[r] * w[c]` for one block of columns: the reference the
/// SIMD kernels are tested against.
fn portable_block(q: &[u8], width: usize, w: &[i8], groups: usize, acc: &mut [[i32; COLS]; ROWS]) {
    for (r, acc) in acc.iter_mut().enumerate() {
        let x = &q[r * width..(r + 1) * width];
        *acc = [0; COLS];
        for g in 0..groups {
            let w = &w[g * COLS * GROUP..(g + 1) * COLS * GROUP];
            for (c, sum) in acc.iter_mut().enumerate() {
                for i in 0..GROUP {
                    *sum += x[g * GROUP + i] as i32 * w[c * GROUP + i] as i32;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Accumulators, COLS, GROUP, ROWS};

    /// [`super::portable_block`] for two adjacent column blocks at once (`w2`: the second
    /// block's weights; a layer's last block may be alone), 8 accumulators, each broadcast
    /// group of 4 activations feeding both blocks. `mac(sums, x, w)` adds the products of the
    /// u8 activations `x` and a block's 4 x 8 i8 weights `w` into 8 i32 sums: it is each
    /// kernel's instruction choice, and inlining makes it the kernel's own code.
    #[inline(always)]
    unsafe fn pair_with(
        q: &[u8],
        width: usize,
        w: &[i8],
        w2: Option<&[i8]>,
        groups: usize,
        acc: &mut Accumulators,
        mac: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    ) {
        let [acc, acc2] = acc;
        let Some(w2) = w2 else {
            return super::portable_block(q, width, w, groups, acc);
        };
        assert!(q.len() >= ROWS * width && width >= groups * GROUP);
        assert!(w.len() >= groups * COLS * GROUP && w2.len() >= groups * COLS * GROUP);
        // SAFETY (every block below): the asserts above bound every read, all loads and stores
        // are unaligned, and the callers run only where the CPU has their instruction sets.
        let mut sums = [unsafe { _mm256_setzero_si256() }; ROWS];
        let mut sums2 = sums;
        for g in 0..groups {
            unsafe {
                let wv = _mm256_loadu_si256(w.as_ptr().add(g * COLS * GROUP) as *const __m256i);
                let wv2 = _mm256_loadu_si256(w2.as_ptr().add(g * COLS * GROUP) as *const __m256i);
                for r in 0..ROWS {
                    let x = (q.as_ptr().add(r * width + g * GROUP) as *const i32).read_unaligned();
                    let x = _mm256_set1_epi32(x);
                    sums[r] = mac(sums[r], x, wv);
                    sums2[r] = mac(sums2[r], x, wv2);
                }
            }
        }
        for r in 0..ROWS {
            // acc[r] and acc2[r] are 8 i32 each: one 256-bit store.
            unsafe {
                _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, sums[r]);
                _mm256_storeu_si256(acc2[r].as_mut_ptr() as *mut __m256i, sums2[r]);
            }
        }
    }

    /// AVX2: `vpmaddubsw` (u8 x i8 pairs into i16, which 7-bit weights keep from saturating),
    /// `vpmaddwd` (pairs into i32), `vpaddd`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2(
        q: &[u8],
        width: usize,
        w: &[i8],
        w2: Option<&[i8]>,
        groups: usize,
        acc: &mut Accumulators,
    ) {
        let ones = _mm256_set1_epi16(1);
        let mac =
            |s, x, w| _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones));
        // SAFETY: this function only runs where the CPU has AVX2.
        unsafe { pair_with(q, width, w, w2, groups, acc, mac) }
    }

    /// AVX512-VNNI: `vpdpbusd`, the four u8 x i8 products and their sum in one instruction.
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub unsafe fn vnni(
        q: &[u8],
        width: usize,
        w: &[i8],
        w2: Option<&[i8]>,
        groups: usize,
        acc: &mut Accumulators,
    ) {
        let mac = |s, x, w| _mm256_dpbusd_epi32(s, x, w);
        // SAFETY: this function only runs where the CPU has AVX512-VNNI and AVX512-VL.
        unsafe { pair_with(q, width, w, w2, groups, acc, mac) }
    }
}

impl CustomOp1 for QuantizedLinear {
    fn name(&self) -> &'static str {
        "int8-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            bail!("int8-linear: expected f32 input");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("int8-linear: expected a contiguous input");
        };
        let dims = layout.shape().dims();
        if dims.last() != Some(&self.inputs) {
            bail!(
                "int8-linear: input {dims:?} does not end in {}",
                self.inputs
            );
        }
        let rows = layout.shape().elem_count() / self.inputs;
        let out = self.run(&data[start..end], rows);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("checked above") = self.outputs;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n = shape.0 * shape.1;
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Every kernel this CPU runs against the portable one (on a CPU with AVX512-VNNI that is
    /// VNNI and AVX2; on CI's, AVX2), and the portable one against the f32 product.
    #[test]
    fn every_kernel_gives_the_same_integers_and_tracks_the_f32_product() {
        let kernels = Kernel::available();
        eprintln!("int8 kernels on this CPU: {kernels:?}");
        assert_eq!(Kernel::detect(), kernels[0], "the fastest");
        // Sizes that leave partial column blocks, input groups and row chunks.
        for (rows, inputs, outputs) in [(1, 4, 8), (7, 37, 13), (33, 384, 1152), (5, 1536, 384)] {
            let x = random((rows, inputs), 1);
            let w = (random((outputs, inputs), 2) * 0.05).unwrap();
            let b = random((1, outputs), 3).squeeze(0).unwrap();
            let exact = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let portable = QuantizedLinear::new(&w, &b, Kernel::Portable).unwrap();
            let ours = x.apply_op1_no_bwd(&portable).unwrap();
            for &kernel in &kernels {
                let fast = x
                    .apply_op1_no_bwd(&portable.clone().with_kernel(kernel).unwrap())
                    .unwrap();
                let diff = (&ours - &fast).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{kernel:?}");
            }
            // Quantization error: about 1% of the output scale.
            let err = (&ours - &exact).unwrap().abs().unwrap().max_all().unwrap();
            let scale = exact.abs().unwrap().max_all().unwrap();
            let relative = err.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap();
            assert!(relative < 0.02, "{rows}x{inputs}x{outputs}: {relative}");
        }
    }

    #[test]
    fn a_kernel_this_cpu_lacks_is_refused() {
        let (w, b) = (random((8, 4), 1), random((1, 8), 2).squeeze(0).unwrap());
        let portable = QuantizedLinear::new(&w, &b, Kernel::Portable).unwrap();
        for kernel in [Kernel::Amx, Kernel::Vnni, Kernel::Avx2, Kernel::Portable] {
            let runs = Kernel::available().contains(&kernel);
            assert_eq!(QuantizedLinear::new(&w, &b, kernel).is_ok(), runs);
            let switched = portable.clone().with_kernel(kernel);
            match switched {
                Ok(_) => assert!(runs, "{kernel:?}"),
                Err(e) => assert!(
                    !runs && e.to_string().contains("does not run on this CPU"),
                    "{e}"
                ),
            }
        }
    }

    #[test]
    fn zero_is_exact_and_constant_rows_do_not_divide_by_zero() {
        let mut q = [0u8; 4];
        assert_eq!(quantize_row(&[0.0; 4], &mut q), (1.0, 0));
        let (scale, zero) = quantize_row(&[-1.0, 0.0, 0.5, 3.0], &mut q);
        assert_eq!(q[1] as i32, zero, "0 maps to the zero point");
        assert!((scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(q[0], 0, "the least value maps to 0");
        assert_eq!(q[3], 255, "the greatest to 255");
        // NaN (a diverged model's activation) quantizes to 0, as a saturating cast would.
        quantize_row(&[-1.0, f32::NAN, 3.0, 0.0], &mut q);
        assert_eq!((q[0], q[1], q[2]), (0, 0, 255));
    }
}
