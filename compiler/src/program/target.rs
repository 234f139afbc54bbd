//! What the lowering needs to know of the machine it lowers for, passed in
//! `LowerOptions`, so that one backend's thresholds never shape another's kernels.

/// A lowering target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Elements below which a kernel runs on one thread: a row join that would
    /// serialise a kernel above it is not made (`plan::fuse_rows`).
    pub parallel_min_elems: usize,
    /// Arena offsets are multiples of this many bytes.
    pub arena_align: usize,
}

/// A cache line: the least arena alignment on any target (and enough for any vector
/// load of the CPU's code).
pub const CACHE_LINE: usize = 64;

impl Target {
    /// The CPU backend: a rayon split costs a few microseconds, about 2^15 elements of
    /// work; offsets on cache lines.
    pub const CPU: Target = Target {
        parallel_min_elems: 1 << 15,
        arena_align: CACHE_LINE,
    };

    /// The GPU backend: WebGPU's largest storage-offset alignment, so a binding window
    /// that starts inside a buffer never reaches into the one before. Its row joins use
    /// the CPU's threshold: the WGSL emitter dispatches a row kernel's stages one by one
    /// either way, and no GPU measurement has asked for another value yet.
    pub const GPU: Target = Target {
        parallel_min_elems: 1 << 15,
        arena_align: 256,
    };
}
