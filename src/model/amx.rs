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
    // An absent leaf 7 reads as zeros: AMX absent.
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let has = |bit: u32| leaf7.edx >> bit & 1 == 1;
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
