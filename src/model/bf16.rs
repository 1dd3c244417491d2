//! bfloat16 matrix products that sum in f32: mixed precision on the CPU (`bf16 = true` for
//! training, `--dtype bf16` for inference).
//!
//! Both operands are rounded to bf16 (to nearest, ties to even) as they are packed; a product
//! of two bf16 numbers is exact in f32 and the sums are f32, which is what AVX512-BF16's
//! `vdpbf16ps` computes and what PyTorch's CPU autocast does for `linear`. Where the CPU has
//! AMX (Sapphire Rapids and later), one `tdpbf16ps` multiplies a 16 x 32 tile by a 32 x 16 one
//! (8,192 products); with AVX512-BF16 alone one `vdpbf16ps` does 32, which on the one such CPU
//! measured (a Sapphire Rapids Xeon) was no faster than f32's fused multiply-adds. Elsewhere the same
//! packed operands are multiplied in f32 (the emulating kernels): the same numbers up to the
//! order of the sums, at no gain over f32, so they run only when asked for
//! (`BERTCLS_BF16_KERNEL`): to check results on any CPU, and in the tests.
//!
//! Linear layers use [`super::ops::linear_bf16`] (forward and backward in bf16 products, bias
//! and gradients in f32); everything else (layer norm, softmax, attention, loss, the optimizer) stays f32.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

pub use super::ops::Strided;
use super::ops::product_shape;

/// The environment variable that picks a bf16 kernel instead of the native one.
pub const KERNEL_VARIABLE: &str = "BERTCLS_BF16_KERNEL";

/// Rows of a micro-tile: one broadcast pair each.
const MR: usize = 8;
/// Columns of a micro-tile: two 512-bit registers of 16 f32 sums.
const NR: usize = 32;

/// Which kernel computes the products; all round the operands alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX `tdpbf16ps` on 16 x 16 tiles of f32 sums.
    Amx,
    /// AVX512-BF16 `vdpbf16ps`: two bf16 products and their sum per f32 lane.
    Avx512,
    /// The bf16 operands widened to f32 and multiplied with AVX2 (emulation).
    Avx2,
    /// Plain Rust, for any CPU (emulation).
    Portable,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Avx512 => "avx512bf16",
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
            if super::amx::usable(super::amx::Products::Bf16) {
                kernels.push(Kernel::Amx);
            }
            if has!("avx512f") && has!("avx512bf16") {
                kernels.push(Kernel::Avx512);
            }
            if has!("avx2") && has!("fma") {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels.push(Kernel::Portable);
        kernels
    }

    /// Whether this kernel multiplies in bf16 in hardware (and so is worth running).
    pub fn is_native(self) -> bool {
        matches!(self, Kernel::Amx | Kernel::Avx512)
    }

    /// The kernel named by `BERTCLS_BF16_KERNEL` (amx, avx512bf16, avx2 or portable), else the
    /// fastest native one. On a CPU without AMX or AVX512-BF16 and without the variable this is
    /// an error that says why: bf16 there would be slower than f32, not faster.
    pub fn from_env() -> std::result::Result<Self, String> {
        let name = std::env::var(KERNEL_VARIABLE).ok();
        Self::choose(name.as_deref(), &Self::available())
    }

    /// The kernel called `name` among `available`, else the native one.
    fn choose(name: Option<&str>, available: &[Self]) -> std::result::Result<Self, String> {
        let Some(name) = name else {
            return available
                .iter()
                .copied()
                .find(|k| k.is_native())
                .ok_or_else(|| {
                    format!(
                        "bf16 on the CPU needs AMX or AVX512-BF16, which this CPU lacks (emulated, \
                     bf16 is slower than f32): use f32, or set {KERNEL_VARIABLE}=portable to \
                     emulate it"
                    )
                });
        };
        super::kernel_named(KERNEL_VARIABLE, name, available, Self::name)
    }

    fn check_runs(self) -> Result<()> {
        if !Self::available().contains(&self) {
            bail!("the {} bf16 kernel does not run on this CPU", self.name());
        }
        Ok(())
    }

    /// The sums of one micro-tile: `a` holds `MR` rows and `b` `NR` columns per pair of
    /// inputs.
    fn tile(self, a: &[u32], b: &[u32]) -> [[f32; NR]; MR] {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `gemm_add` runs a kernel only after `check_runs`.
            Kernel::Avx512 => unsafe { x86::tile_avx512(a, b) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Kernel::Avx2 => unsafe { x86::tile_avx2(a, b) },
            _ => tile_portable(a, b),
        }
    }
}

/// `x` rounded to bfloat16, to nearest with ties to even; NaN stays NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    // A select rather than an early return, so that packing loops vectorize.
    if x.is_nan() {
        ((bits >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

/// Two bf16 numbers in one word, `lo` in the low half: one operand pair of `vdpbf16ps`.
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

fn low(p: u32) -> f32 {
    f32::from_bits(p << 16)
}

fn high(p: u32) -> f32 {
    f32::from_bits(p & 0xffff_0000)
}

impl Strided<'_> {
    /// Packs rows `first..first + width` (zero past the last row) into `out`, zeroed:
    /// `out[p * width + i]` holds columns `2p` and `2p + 1` of row `first + i` (zero past
    /// the last column). Both operands are packed this way, `b` read transposed.
    fn pack(&self, first: usize, width: usize, out: &mut [u32]) {
        let rows = width.min(self.rows.saturating_sub(first));
        if rows == 0 {
            return;
        }
        let (rs, cs) = (self.row_stride, self.col_stride);
        let data = &self.data[first * rs..];
        let pairs = self.cols.div_ceil(2);
        // Whichever way the operand lies, read it in runs of consecutive numbers, which
        // convert in vector registers: a row at a time when its columns are consecutive (the
        // words then scatter `width` apart, within a block that stays in L1), else a pair of
        // columns at a time (the words are then consecutive too).
        if cs == 1 {
            let mut words = [0u32; 64];
            for i in 0..rows {
                let row = &data[i * rs..][..self.cols];
                for (chunk, row) in row.chunks(2 * words.len()).enumerate() {
                    let n = row.len().div_ceil(2);
                    row_words(row, &mut words[..n]);
                    let at = chunk * words.len();
                    for (p, &w) in words[..n].iter().enumerate() {
                        out[(at + p) * width + i] = w;
                    }
                }
            }
        } else {
            for p in 0..pairs {
                let out = &mut out[p * width..][..rows];
                let hi = (2 * p + 1 < self.cols).then_some((2 * p + 1) * cs);
                column_words(data, rs, 2 * p * cs, hi, out);
            }
        }
    }

    /// Rows `first..first + count` as rows of `row_words` pairs (columns `2p`, `2p + 1` in
    /// word `p`) into `out`, zeroed: the operand layout of an AMX tile.
    #[cfg(target_arch = "x86_64")]
    fn pack_rows(&self, first: usize, count: usize, words: usize, out: &mut [u32]) {
        let rows = count.min(self.rows.saturating_sub(first));
        if rows == 0 {
            return;
        }
        let (rs, cs) = (self.row_stride, self.col_stride);
        let data = &self.data[first * rs..];
        if cs == 1 {
            for (i, out) in out.chunks_exact_mut(words).take(rows).enumerate() {
                row_words(
                    &data[i * rs..][..self.cols],
                    &mut out[..self.cols.div_ceil(2)],
                );
            }
            return;
        }
        // Rows close in memory, columns far apart: read down the columns, as `pack` does.
        let mut column = vec![0u32; rows];
        for p in 0..self.cols.div_ceil(2) {
            let hi = (2 * p + 1 < self.cols).then_some((2 * p + 1) * cs);
            column_words(data, rs, 2 * p * cs, hi, &mut column);
            for (i, &w) in column.iter().enumerate() {
                out[i * words + p] = w;
            }
        }
    }
}

/// `out[i]` = the pair of `data[i * rs + lo]` and `data[i * rs + hi]` (zero without `hi`):
/// two columns of an operand. Consecutive rows (`rs` = 1) convert in vector registers.
fn column_words(data: &[f32], rs: usize, lo: usize, hi: Option<usize>, out: &mut [u32]) {
    let rows = out.len();
    match (rs, hi) {
        (1, Some(hi)) => {
            let (lo, hi) = (&data[lo..][..rows], &data[hi..][..rows]);
            for ((o, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
                *o = pair(l, h);
            }
        }
        (1, None) => {
            for (o, &l) in out.iter_mut().zip(&data[lo..][..rows]) {
                *o = pair(l, 0.0);
            }
        }
        _ => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = pair(data[i * rs + lo], hi.map_or(0.0, |hi| data[i * rs + hi]));
            }
        }
    }
}

/// `out[p]` = the pair of `row[2p]` and `row[2p + 1]` (zero past the end).
fn row_words(row: &[f32], out: &mut [u32]) {
    let (whole, rest) = row.as_chunks::<2>();
    for (o, &[lo, hi]) in out.iter_mut().zip(whole) {
        *o = pair(lo, hi);
    }
    if let [last] = rest {
        out[whole.len()] = pair(*last, 0.0);
    }
}

/// Pairs of inputs a panel of [`PackedB`] holds are a multiple of this: the rows of an AMX tile.
const PANEL_PAIRS: usize = 16;

/// The right operand `b` (k, n) of a product, rounded to bf16 and packed: in panels of NR
/// columns, `[panel][pair of inputs][column]`, zero-padded (pairs to a multiple of
/// `PANEL_PAIRS`). A linear layer whose weights do not change (inference) packs them once;
/// training packs them at every product.
pub struct PackedB {
    k: usize,
    n: usize,
    /// Pairs of inputs per panel, padding included.
    panel_pairs: usize,
    data: Vec<u32>,
}

impl PackedB {
    pub fn new(b: Strided) -> Self {
        let (k, n) = (b.rows, b.cols);
        let panel_pairs = k.div_ceil(2).next_multiple_of(PANEL_PAIRS);
        let mut data = vec![0u32; n.div_ceil(NR) * panel_pairs * NR];
        let columns = b.t();
        if panel_pairs > 0 {
            data.par_chunks_mut(panel_pairs * NR)
                .enumerate()
                .for_each(|(panel, out)| columns.pack(panel * NR, NR, out));
        }
        Self {
            k,
            n,
            panel_pairs,
            data,
        }
    }

    fn panels(&self) -> std::slice::ChunksExact<'_, u32> {
        self.data.chunks_exact(self.panel_pairs * NR)
    }
}

/// A linear layer's weights `w` (out, in), read as `w`ᵀ (in, out) and packed.
pub fn pack_weights(w: &Tensor) -> Result<PackedB> {
    let (outputs, inputs) = w.dims2()?;
    let values: Vec<f32> = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(PackedB::new(Strided::rows(&values, outputs, inputs)?.t()))
}

/// `dst` (m, n), row-major, += `a` (m, k) · `b` (k, n), both operands rounded to bf16.
pub fn gemm_add(kernel: Kernel, dst: &mut [f32], a: Strided, b: Strided) -> Result<()> {
    gemm_add_packed(kernel, dst, a, &PackedB::new(b))
}

/// [`gemm_add`] with `b` packed beforehand.
pub fn gemm_add_packed(kernel: Kernel, dst: &mut [f32], a: Strided, b: &PackedB) -> Result<()> {
    kernel.check_runs()?;
    let (m, k, n) = product_shape(dst.len(), &a, (b.k, b.n))?;
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let pairs = k.div_ceil(2);
    let block = if kernel == Kernel::Amx {
        2 * PANEL_PAIRS
    } else {
        MR
    };
    let rows_per_task = (m.div_ceil(4 * rayon::current_num_threads()))
        .next_multiple_of(block)
        .min(8 * MR);
    dst.par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each_init(Vec::new, |packed_a, (task, dst)| {
            let first = task * rows_per_task;
            let rows = dst.len() / n;
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Amx {
                // SAFETY: `check_runs` passed, so this CPU and process may use AMX.
                unsafe { amx::add_rows(dst, n, a, first, b, packed_a) };
                return;
            }
            // This task's rows of `a` in blocks of MR: [block][pair of inputs][row].
            packed_a.clear();
            packed_a.resize(rows.div_ceil(MR) * pairs * MR, 0u32);
            for (block, out) in packed_a.chunks_exact_mut(pairs * MR).enumerate() {
                a.pack(first + block * MR, MR, out);
            }
            for (panel, b) in b.panels().enumerate() {
                for (block, a) in packed_a.chunks_exact(pairs * MR).enumerate() {
                    add_sums(dst, n, &kernel.tile(a, b), block * MR, panel);
                }
            }
        });
    Ok(())
}

/// Adds a block of sums (rows of one panel's NR columns) into `dst` (rows of `n`) from row
/// `first` on; the block's rows past `dst`'s last and columns past `n` are padding.
fn add_sums(dst: &mut [f32], n: usize, sums: &[[f32; NR]], first: usize, panel: usize) {
    let cols = NR.min(n - panel * NR);
    for (row, sums) in dst.chunks_exact_mut(n).skip(first).zip(sums) {
        row[panel * NR..][..cols]
            .iter_mut()
            .zip(sums)
            .for_each(|(d, s)| *d += s);
    }
}

#[inline(always)]
fn tile_portable(a: &[u32], b: &[u32]) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    for (a, b) in a.as_chunks::<MR>().0.iter().zip(b.as_chunks::<NR>().0) {
        let (mut lo, mut hi) = ([0f32; NR], [0f32; NR]);
        for c in 0..NR {
            (lo[c], hi[c]) = (low(b[c]), high(b[c]));
        }
        for (acc, &a) in acc.iter_mut().zip(a) {
            let (al, ah) = (low(a), high(a));
            for c in 0..NR {
                acc[c] += al * lo[c] + ah * hi[c];
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// [`super::tile_portable`] compiled for AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx2(a: &[u32], b: &[u32]) -> [[f32; NR]; MR] {
        super::tile_portable(a, b)
    }

    /// The same 64 bytes read as 32 bf16 numbers.
    #[inline(always)]
    fn as_bf16(v: __m512i) -> __m512bh {
        // SAFETY: both are 64-byte vectors of plain bits, every pattern valid.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// One `vdpbf16ps` per row and 16 columns per pair of inputs: each lane adds both
    /// products of its (low, high) pair to its f32 sum.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile_avx512(a: &[u32], b: &[u32]) -> [[f32; NR]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for (a, b) in a.as_chunks::<MR>().0.iter().zip(b.as_chunks::<NR>().0) {
            // SAFETY: `b` holds NR = 32 words: two unaligned 512-bit loads.
            let (b0, b1) = unsafe {
                (
                    as_bf16(_mm512_loadu_si512(b.as_ptr().cast())),
                    as_bf16(_mm512_loadu_si512(b.as_ptr().add(16).cast())),
                )
            };
            for (acc, &a) in acc.iter_mut().zip(a) {
                let a = as_bf16(_mm512_set1_epi32(a as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], a, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], a, b1);
            }
        }
        let mut out = [[0f32; NR]; MR];
        for (out, acc) in out.iter_mut().zip(acc) {
            // SAFETY: each row of `out` holds 32 floats.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), acc[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(16), acc[1]);
            }
        }
        out
    }
}

/// The AMX kernel: C (32 x 32 f32 sums, four tiles) += A (32 rows x 16 pairs, two tiles) ·
/// B (16 pairs x 32 columns, two tiles), 16 pairs at a time. The tile registers live in the
/// thread's state between `asm!` blocks: nothing else in this process uses them, and each
/// task configures them first and releases them last.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::super::amx::{self, TILE_ROWS, Tiles};
    use super::{NR, PANEL_PAIRS, PackedB, Strided, add_sums};

    /// Rows of A and C a task block holds: two tiles of 16.
    const BLOCK_ROWS: usize = 2 * TILE_ROWS;

    /// `dst` (the rows from `first` of the product, `n` columns) += `a`'s rows · `b`.
    ///
    /// # Safety
    /// AMX-BF16 must be usable ([`super::super::amx::usable`]).
    pub unsafe fn add_rows(
        dst: &mut [f32],
        n: usize,
        a: Strided,
        first: usize,
        b: &PackedB,
        packed_a: &mut Vec<u32>,
    ) {
        let rows = dst.len() / n;
        let row_words = b.panel_pairs;
        let blocks = rows.div_ceil(BLOCK_ROWS);
        packed_a.clear();
        packed_a.resize(blocks * BLOCK_ROWS * row_words, 0);
        a.pack_rows(first, rows, row_words, packed_a);
        let mut sums = [[0f32; NR]; BLOCK_ROWS];
        let (a_stride, b_stride) = (row_words * 4, NR * 4);
        // SAFETY: the caller's contract: AMX-BF16 is usable.
        let _tiles = unsafe { Tiles::configure() };
        for (panel, b) in b.panels().enumerate() {
            for block in 0..blocks {
                let a_block = &packed_a[block * BLOCK_ROWS * row_words..][..BLOCK_ROWS * row_words];
                // SAFETY: tiles are configured on this thread (`_tiles`).
                unsafe { amx::zero_sums() };
                for chunk in 0..row_words / PANEL_PAIRS {
                    let a0 = a_block[chunk * PANEL_PAIRS..].as_ptr();
                    let a1 = a_block[TILE_ROWS * row_words + chunk * PANEL_PAIRS..].as_ptr();
                    let b0 = b[chunk * PANEL_PAIRS * NR..].as_ptr();
                    let b1 = b[chunk * PANEL_PAIRS * NR + NR / 2..].as_ptr();
                    // SAFETY: AMX-BF16 is usable (the caller's contract) and tiles configured;
                    // each tile load reads 16 rows of 64 bytes at its stride: rows `16 *
                    // chunk..` of 16 pairs of the block's 32 rows of A (`row_words`, a
                    // multiple of 16, per row), and pairs `16 * chunk..+16` of the panel's 16
                    // left or right columns (rows of 32 words); all inside the slices.
                    unsafe { amx::step_bf16((a0, a1, a_stride), (b0, b1, b_stride)) };
                }
                // SAFETY: `sums` holds 32 rows of 32 floats (128 bytes).
                unsafe { amx::store_sums(sums.as_mut_ptr(), NR * 4) };
                add_sums(dst, n, &sums, block * BLOCK_ROWS, panel);
            }
        }
    }
}

/// The storage of a 2-D f32 operand with its strides.
fn strided<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<Strided<'a>> {
    let CpuStorage::F32(data) = s else {
        bail!("{op}: expected f32 input");
    };
    let (rows, cols) = l.shape().dims2()?;
    let stride = l.stride();
    Strided::new(
        &data[l.start_offset().min(data.len())..],
        (rows, cols),
        (stride[0], stride[1]),
    )
}

/// `a` (m, k) · `b` (k, n) in bf16 products: the backward pass of
/// [`super::ops::linear_bf16`].
pub(super) struct Product(pub Kernel);

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "bertcls-bf16-product"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = strided(s1, l1, self.name())?;
        let b = strided(s2, l2, self.name())?;
        let mut out = vec![0f32; a.rows * b.cols];
        gemm_add(self.0, &mut out, a, b)?;
        Ok((CpuStorage::F32(out), Shape::from((a.rows, b.cols))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::{Device, Var};

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| crate::rng::hash_uniform(seed, i as u64) * 2.0 - 1.0)
            .collect()
    }

    fn rounded(v: &[f32]) -> Vec<f32> {
        v.iter()
            .map(|&x| f32::from_bits((to_bf16(x) as u32) << 16))
            .collect()
    }

    fn get(m: &Strided, row: usize, col: usize) -> f32 {
        m.data[row * m.row_stride + col * m.col_stride]
    }

    /// The product of the bf16-rounded operands in f64: what every kernel must give up to
    /// the order of its f32 sums.
    fn reference(a: &Strided, b: &Strided) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let round = |x: f32| f32::from_bits((to_bf16(x) as u32) << 16) as f64;
                out[i * b.cols + j] = (0..a.cols)
                    .map(|p| round(get(a, i, p)) * round(get(b, p, j)))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn the_native_kernel_unless_one_is_named() {
        use Kernel::*;
        assert_eq!(
            Kernel::choose(None, &[Amx, Avx512, Avx2, Portable]),
            Ok(Amx)
        );
        assert_eq!(Kernel::choose(None, &[Avx512, Avx2, Portable]), Ok(Avx512));
        let err = Kernel::choose(None, &[Avx2, Portable]).unwrap_err();
        assert!(
            err.contains("needs AMX or AVX512-BF16") && err.contains(KERNEL_VARIABLE),
            "{err}"
        );
        assert_eq!(
            Kernel::choose(Some("portable"), &[Avx2, Portable]),
            Ok(Portable)
        );
        let err = Kernel::choose(Some("avx512bf16"), &[Avx2, Portable]).unwrap_err();
        assert!(
            err.contains("not a kernel this CPU runs (it runs: avx2, portable)"),
            "{err}"
        );
    }

    #[test]
    fn rounds_to_nearest_even() {
        let bf = |x: f32| f32::from_bits((to_bf16(x) as u32) << 16);
        assert_eq!(bf(1.0), 1.0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
        assert_eq!(bf(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(bf(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(bf(1.0 + 1.5 / 256.0), 1.0 + 2.0 / 256.0);
        assert_eq!(bf(-2.5), -2.5);
        assert!(bf(f32::NAN).is_nan());
        assert_eq!(bf(f32::INFINITY), f32::INFINITY);
        assert_eq!(bf(f32::MAX), f32::INFINITY);
        assert_eq!(bf(-f32::MAX), f32::NEG_INFINITY);
    }

    #[test]
    fn every_kernel_matches_the_product_of_rounded_operands() {
        // Shapes around the tile sizes, odd inner sizes, and operands read transposed.
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (8, 2, 32),
            (17, 33, 65),
            (70, 384, 40),
        ] {
            let a_data = values(m * k, 1);
            let b_data = values(k * n, 2);
            let operands = [
                Strided::rows(&a_data, m, k).unwrap(),
                Strided::rows(&a_data, k, m).unwrap().t(),
            ]
            .into_iter()
            .flat_map(|a| {
                [
                    Strided::rows(&b_data, k, n).unwrap(),
                    Strided::rows(&b_data, n, k).unwrap().t(),
                ]
                .map(|b| (a, b))
            });
            for (a, b) in operands {
                let expected = reference(&a, &b);
                for kernel in Kernel::available() {
                    let mut out = vec![0.5f32; m * n];
                    gemm_add(kernel, &mut out, a, b).unwrap();
                    let out: Vec<f32> = out.iter().map(|v| v - 0.5).collect();
                    let diff = max_diff(&out, &expected);
                    assert!(
                        diff < 1e-4 * (k as f32).sqrt(),
                        "{kernel:?} {m}x{k}x{n}: {diff}"
                    );
                }
            }
        }
    }

    /// The AMX kernel's operand layout, which only a CPU with AMX multiplies, checked here on
    /// any CPU: rows of pairs, zero past the last column, from operands lying either way.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rows_pack_into_pairs_whichever_way_the_operand_lies() {
        let (m, k, words) = (5, 7, 16);
        let data = values(m * k, 21);
        for a in [
            Strided::rows(&data, m, k).unwrap(),
            Strided::rows(&data, k, m).unwrap().t(),
        ] {
            let mut out = vec![u32::MAX; 4 * words];
            out[..3 * words].fill(0);
            a.pack_rows(1, 3, words, &mut out[..3 * words]);
            for i in 0..3 {
                for p in 0..words {
                    let at = |c: usize| if c < k { get(&a, 1 + i, c) } else { 0.0 };
                    assert_eq!(
                        out[i * words + p],
                        pair(at(2 * p), at(2 * p + 1)),
                        "row {i}, pair {p}"
                    );
                }
            }
            assert!(out[3 * words..].iter().all(|&w| w == u32::MAX));
        }
    }

    #[test]
    fn packing_the_right_operand_beforehand_changes_nothing() {
        let (m, k, n) = (13, 41, 37);
        let (a_data, b_data) = (values(m * k, 11), values(k * n, 12));
        let a = Strided::rows(&a_data, m, k).unwrap();
        let b = Strided::rows(&b_data, n, k).unwrap().t();
        let packed = PackedB::new(b);
        for kernel in Kernel::available() {
            let (mut once, mut each) = (vec![0f32; m * n], vec![0f32; m * n]);
            gemm_add_packed(kernel, &mut once, a, &packed).unwrap();
            gemm_add(kernel, &mut each, a, b).unwrap();
            assert_eq!(once, each, "{kernel:?}");
        }
    }

    #[test]
    fn the_product_is_close_to_f32s() {
        // bf16 keeps 8 bits of mantissa: each product is off by at most ~2^-8 relative.
        let (m, k, n) = (9, 384, 12);
        let a_data = values(m * k, 3);
        let b_data = values(k * n, 4);
        let (a, b) = (
            Strided::rows(&a_data, m, k).unwrap(),
            Strided::rows(&b_data, k, n).unwrap(),
        );
        let mut f32_product = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                f32_product[i * n + j] = (0..k).map(|p| get(&a, i, p) * get(&b, p, j)).sum();
            }
        }
        let mut out = vec![0f32; m * n];
        gemm_add(Kernel::Portable, &mut out, a, b).unwrap();
        let diff = max_diff(&out, &f32_product);
        assert!(diff > 0.0 && diff < 0.05, "{diff}");
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let data = values(12, 5);
        assert!(Strided::new(&data, (4, 4), (4, 1)).is_err());
        let a = Strided::rows(&data, 3, 4).unwrap();
        let mut out = vec![0f32; 9];
        assert!(gemm_add(Kernel::Portable, &mut out, a, a).is_err());
    }

    #[test]
    fn the_linear_layer_and_its_gradients_match_f32_on_rounded_inputs() {
        let dev = Device::Cpu;
        let (rows, inputs, outputs) = (2 * 7, 20, 9);
        let x = Var::from_vec(values(rows * inputs, 6), (2, 7, inputs), &dev).unwrap();
        let w = Var::from_vec(values(outputs * inputs, 7), (outputs, inputs), &dev).unwrap();
        let b = Var::from_vec(values(outputs, 8), outputs, &dev).unwrap();
        let upstream = Tensor::from_vec(values(rows * outputs, 9), (2, 7, outputs), &dev).unwrap();
        for kernel in Kernel::available() {
            let y = super::super::ops::linear_bf16(&x, (&w, None), &b, kernel).unwrap();
            let grads = (&y * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            // The same in f32 on operands rounded as the kernel rounds them.
            let round = |t: &Tensor| {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                Tensor::from_vec(rounded(&v), t.shape(), &dev).unwrap()
            };
            let (xr, wr, ur) = (round(&x), round(&w), round(&upstream));
            let expected = super::super::ops::linear(&xr, &wr, &b).unwrap();
            let pairs = [
                (y.clone(), expected),
                (
                    grads.get(&x).unwrap().clone(),
                    ur.reshape((rows, outputs)).unwrap().matmul(&wr).unwrap(),
                ),
                (
                    grads.get(&w).unwrap().clone(),
                    ur.reshape((rows, outputs))
                        .unwrap()
                        .t()
                        .unwrap()
                        .matmul(&xr.reshape((rows, inputs)).unwrap())
                        .unwrap(),
                ),
                (
                    grads.get(&b).unwrap().clone(),
                    upstream.reshape((rows, outputs)).unwrap().sum(0).unwrap(),
                ),
            ];
            for (i, (got, want)) in pairs.iter().enumerate() {
                let diff = max_abs_diff(&got.flatten_all().unwrap(), &want.flatten_all().unwrap());
                assert!(diff < 1e-4, "{kernel:?}, output {i}: {diff}");
            }
        }
    }
}
