//! What the AMX kernels of [`super::bf16`] and [`super::int8`] share: whether this CPU and
//! process may use the tiles, and the one tile configuration both use (eight tiles of 16 rows
//! of 64 bytes, held by the calling thread between [`Tiles::configure`] and the drop).

use std::arch::asm;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// Rows of every tile.
pub const TILE_ROWS: usize = 16;
/// Bytes of every tile row.
pub const TILE_BYTES: usize = 64;

/// Which tile instructions the CPU has besides AMX-TILE (CPUID leaf 7, EDX).
#[derive(Clone, Copy)]
pub enum Products {
    /// AMX-BF16: `tdpbf16ps`.
    Bf16 = 22,
    /// AMX-INT8: `tdpbusd` and its siblings.
    Int8 = 25,
}

/// Whether this CPU has AMX-TILE and `products` (CPUID leaf 7) and Linux lets this process use
/// tile data, which it must ask for once (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`; before Linux 5.16 the call fails and AMX stays off).
pub fn usable(products: Products) -> bool {
    // Read once: the kernels ask before every product, and CPUID in a virtual machine is a
    // trap to the hypervisor. An absent leaf 7 reads as zeros: AMX absent.
    static LEAF7_EDX: OnceLock<u32> = OnceLock::new();
    let edx = *LEAF7_EDX.get_or_init(|| std::arch::x86_64::__cpuid_count(7, 0).edx);
    let has = |bit: u32| edx >> bit & 1 == 1;
    has(24) && has(products as u32) && permitted()
}

fn permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a request for a permission; it reads and writes no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    })
}

/// `ldtilecfg`'s operand: palette 1, tiles 0 to 7 each 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

/// The tile configuration, loaded on this thread; dropping it gives the tile state back (on
/// the same thread: a pointer makes it neither `Send` nor `Sync`).
pub struct Tiles(PhantomData<*const ()>);

impl Tiles {
    /// # Safety
    /// [`usable`] must have returned true for the instructions the caller will use.
    pub unsafe fn configure() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for tile in 0..8 {
            c[16 + 2 * tile..18 + 2 * tile].copy_from_slice(&(TILE_BYTES as u16).to_le_bytes());
            c[48 + tile] = TILE_ROWS as u8;
        }
        let config = Config(c);
        // SAFETY: the configuration is valid for palette 1 (AMX is usable, so palette 1 exists).
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
        Self(PhantomData)
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: tiles were configured on this thread (`configure`), and none is used after.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Sets tiles 0 to 3, the sums of a 32 x 32 block, to zero.
///
/// # Safety
/// Tiles must be configured on this thread ([`Tiles::configure`]).
#[inline(always)]
pub unsafe fn zero_sums() {
    // SAFETY: the caller's contract; zeroing reads no memory.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        )
    };
}

/// One step of a 32 x 32 block's sums, with `$op` (`tdpbf16ps`, `tdpbusd`): tiles 4 and 5
/// load the block's rows 0-15 and 16-31 of the left operand (from `a`, `a_stride` bytes a
/// row), tiles 6 and 7 its columns 0-15 and 16-31 of the right one (from `b`, `b_stride`
/// bytes a row), and each product adds into its tile of sums.
macro_rules! block_step {
    ($op:literal, $a:expr, $b:expr) => {
        asm!(
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            concat!($op, " tmm1, tmm4, tmm7"),
            concat!($op, " tmm2, tmm5, tmm6"),
            concat!($op, " tmm3, tmm5, tmm7"),
            a0 = in(reg) $a.0, a1 = in(reg) $a.1, sa = in(reg) $a.2,
            b0 = in(reg) $b.0, b1 = in(reg) $b.1, sb = in(reg) $b.2,
            options(nostack, readonly)
        )
    };
}

/// The two halves of an operand's part of a block step and their row stride in bytes: rows
/// 0-15 and 16-31 of the left operand, or columns 0-15 and 16-31 of the right one.
pub type Halves<T> = (*const T, *const T, usize);

/// [`block_step`] with `tdpbf16ps`: pairs of bf16 in 32-bit words, f32 sums.
///
/// # Safety
/// AMX-BF16 usable, tiles configured on this thread, and each of the four pointers valid for
/// 16 rows of 64 bytes at its stride.
#[inline(always)]
pub unsafe fn step_bf16(a: Halves<u32>, b: Halves<u32>) {
    // SAFETY: the caller's contract.
    unsafe { block_step!("tdpbf16ps", a, b) };
}

/// [`block_step`] with `tdpbusd`: u8 rows by groups of four i8, i32 sums.
///
/// # Safety
/// AMX-INT8 usable, tiles configured on this thread, and each of the four pointers valid for
/// 16 rows of 64 bytes at its stride.
#[inline(always)]
pub unsafe fn step_int8(a: Halves<u8>, b: Halves<i8>) {
    // SAFETY: the caller's contract.
    unsafe { block_step!("tdpbusd", a, b) };
}

/// Stores tiles 0 to 3 into a 32 x 32 block of 4-byte sums at `out`, rows `stride` bytes
/// apart.
///
/// # Safety
/// Tiles configured on this thread, and `out` valid for writes of 32 rows of 128 bytes at
/// `stride`.
#[inline(always)]
pub unsafe fn store_sums<T>(out: *mut T, stride: usize) {
    let out = out.cast::<u8>();
    let half = TILE_ROWS * stride;
    // SAFETY: the caller's contract: each store writes 16 rows of 64 bytes, at byte 0 or 64
    // of row 0 or 16.
    unsafe {
        asm!(
            "tilestored [{c0} + {sc}*1], tmm0",
            "tilestored [{c1} + {sc}*1], tmm1",
            "tilestored [{c2} + {sc}*1], tmm2",
            "tilestored [{c3} + {sc}*1], tmm3",
            c0 = in(reg) out, c1 = in(reg) out.add(TILE_BYTES),
            c2 = in(reg) out.add(half), c3 = in(reg) out.add(half + TILE_BYTES),
            sc = in(reg) stride,
            options(nostack)
        )
    };
}
