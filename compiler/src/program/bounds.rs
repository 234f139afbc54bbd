//! The bounds check every backend runs before generated code: each access of each
//! kernel, output and update stays inside its buffer, computed in 128-bit arithmetic.

use super::{Affine, BufferId, KernelBody, LoopKernel, Program};

/// An access of a lowered program outside its buffer: a lowering bug, caught before
/// any generated code runs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what}: access {access:?} over {shape:?} reaches [{}, {}] of {buffer} ({elems} elements)",
    reach.0,
    reach.1
)]
pub struct BoundsError {
    /// The kernel (`k3 (%12)`), output or update name.
    pub what: String,
    pub buffer: BufferId,
    pub access: Affine,
    pub shape: Vec<usize>,
    /// The lowest and highest element offsets the access reaches.
    pub reach: (i128, i128),
    pub elems: usize,
}

/// The smallest and largest element offset `at` reaches over `shape`, in `i128` so
/// that no offset, stride or size can wrap on the way (`hi < lo` for an empty shape).
fn extent(at: &Affine, shape: &[usize]) -> (i128, i128) {
    let (mut lo, mut hi) = (at.offset as i128, at.offset as i128);
    for (&n, &s) in shape.iter().zip(&at.strides) {
        if n == 0 {
            return (0, -1);
        }
        let span = (n as i128 - 1) * s as i128;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    (lo, hi)
}

impl Program {
    /// Checks that every access of every kernel, output and update stays inside its
    /// buffer. Backends call this before running generated code, so a lowering bug
    /// becomes an error instead of an out-of-bounds access.
    pub fn check_bounds(&self) -> Result<(), Box<BoundsError>> {
        let check = |what: &str, b: BufferId, at: &Affine, shape: &[usize]| {
            let (lo, hi) = extent(at, shape);
            let n = self.buffer(b).elems as i128;
            let ranked = at.strides.len() == shape.len();
            if !ranked || (hi >= lo && (lo < 0 || hi >= n)) {
                return Err(Box::new(BoundsError {
                    what: what.to_string(),
                    buffer: b,
                    access: at.clone(),
                    shape: shape.to_vec(),
                    reach: (lo, hi),
                    elems: self.buffer(b).elems,
                }));
            }
            Ok(())
        };
        let check_loop = |what: &str, l: &LoopKernel| {
            for (b, a) in &l.loads {
                check(what, *b, a, &l.shape)?;
            }
            for o in &l.outs {
                check(what, o.buf, &o.at, &l.shape)?;
            }
            Ok::<(), Box<BoundsError>>(())
        };
        for (t, k) in self.kernels.iter().enumerate() {
            let what = format!("k{t} ({})", k.node);
            match &k.body {
                KernelBody::Loop(l) => check_loop(&what, l)?,
                KernelBody::Rows(r) => {
                    for l in &r.stages {
                        check_loop(&what, l)?;
                    }
                }
                KernelBody::MatMul(m) => {
                    let mut sa = m.batch.clone();
                    sa.extend([m.m, m.k]);
                    let mut sb = m.batch.clone();
                    sb.extend([m.k, m.n]);
                    let mut sc = m.batch.clone();
                    sc.extend([m.m, m.n]);
                    check(&what, m.a.0, &m.a.1, &sa)?;
                    check(&what, m.b.0, &m.b.1, &sb)?;
                    check(&what, m.c, &Affine::contiguous(&sc), &sc)?;
                    if let Some(e) = &m.epilogue {
                        check_loop(&what, e)?;
                    }
                }
                KernelBody::Library(l) => {
                    for (b, s) in &l.inputs {
                        check(&what, *b, &Affine::contiguous(s), s)?;
                    }
                    check(&what, l.out, &Affine::contiguous(&l.shape), &l.shape)?;
                }
                // The result has its start's shape, whose check covers `out`.
                KernelBody::Wait(_) => {}
            }
        }
        for o in &self.outputs {
            check(&o.name, o.buf, &o.at, &o.shape)?;
        }
        for u in &self.updates {
            if let Some((b, a)) = &u.source {
                check(&u.name, *b, a, &u.shape)?;
            }
        }
        Ok(())
    }
}
