//! Each lowered kernel becomes one or more dispatches: which buffers are bound
//! through windows, how a product too large for one binding is cut into blocks.

use super::*;

/// `[batch..., m, n, k]`: the iteration space of a product, which windows split.
pub(super) fn matmul_space(m: &MatMulKernel) -> Vec<usize> {
    let mut s = m.batch.clone();
    s.extend([m.m, m.n, m.k]);
    s
}

/// Every access of a loop kernel (loads and stores) over its shape.
pub(super) fn loop_accesses(l: &LoopKernel) -> Vec<(BufferId, Affine)> {
    let loads = l.loads.iter().cloned();
    loads
        .chain(l.outs.iter().map(|o| (o.buf, o.at.clone())))
        .collect()
}

/// The axes a loop kernel reduces over.
pub(super) fn reduced_axes(l: &LoopKernel) -> Vec<bool> {
    (0..l.shape.len())
        .map(|d| {
            l.reduce.is_some() && l.shape[d] != 1 && l.outs.iter().all(|o| o.at.strides[d] == 0)
        })
        .collect()
}

/// The operands and result of a product over [`matmul_space`], and with `epilogue`
/// its accesses too (over `[batch..., m, n]`, constant along `k`).
pub(super) fn matmul_accesses(
    m: &MatMulKernel,
    epilogue: Option<&LoopKernel>,
) -> Vec<(BufferId, Affine)> {
    let nb = m.batch.len();
    let lift = |at: &Affine, zero: usize| {
        let mut strides = at.strides.clone();
        strides.insert(zero, 0);
        Affine {
            offset: at.offset,
            strides,
        }
    };
    // a over [batch, m, k], b over [batch, k, n], c dense over [batch, m, n].
    let a = lift(&m.a.1, nb + 1);
    let mut b = m.b.1.clone();
    let sbk = b.strides.remove(nb);
    b.strides.insert(nb, 0);
    b.strides.push(sbk);
    let c = lift(&Affine::contiguous(&m.domain()), nb + 2);
    let mut out = vec![(m.a.0, a), (m.b.0, b), (m.c, c)];
    if let Some(e) = epilogue {
        out.extend(
            loop_accesses(e)
                .into_iter()
                .map(|(buf, at)| (buf, lift(&at, nb + 2))),
        );
    }
    out
}

impl<'a> Gen<'a> {
    pub(super) fn emitter(&self, i: usize, node: NodeId) -> Emitter<'a> {
        Emitter::new(self.p, self.g, i, node, self.limits)
    }

    pub(super) fn needs_window(&self, b: BufferId) -> bool {
        windows::windowed(self.p, b, self.limits.binding())
    }

    pub(super) fn too_wide(&self, node: NodeId, buf: BufferId, words: usize) -> WgslError {
        WgslError::Limit {
            node,
            op: self.g.node(node).op.name(),
            what: format!(
                "{buf} accessed over {} bytes by one dispatch (the kernel cannot be cut \
                 so that its accesses fit one storage binding)",
                words * 4
            ),
            limit: self.limits.max_storage_buffer_binding_size,
        }
    }

    /// The window of every buffer that needs one, for `accesses` over the block: the
    /// arena's buffers share windows where their ranges fit one together.
    pub(super) fn windows_for(
        &self,
        accesses: &[(BufferId, Affine)],
        origin: &[usize],
        shape: &[usize],
    ) -> Vec<(BufferId, BindingWindow)> {
        let lim = self.limits.binding();
        let mut out = Vec::new();
        let mut arena = Vec::new();
        for (b, lo, hi) in windows::ranges(accesses, origin, shape) {
            if !self.needs_window(b) {
                continue;
            }
            let base = base_word(self.p, b) as i64;
            let (lo, hi) = ((base + lo) as usize, (base + hi) as usize);
            match mem_of(self.p, b) {
                Mem::Arena => arena.push((b, lo, hi)),
                _ => out.push((b, lim.window(lo, hi))),
            }
        }
        arena.sort_by_key(|&(b, lo, _)| (lo, b.0));
        let mut groups: Vec<(usize, usize, Vec<BufferId>)> = Vec::new();
        for (b, lo, hi) in arena {
            if let Some(g) = groups.last_mut()
                && lim.window(g.0, g.1.max(hi)).words <= lim.max_words
            {
                g.1 = g.1.max(hi);
                g.2.push(b);
                continue;
            }
            groups.push((lo, hi, vec![b]));
        }
        for (lo, hi, bufs) in groups {
            let w = lim.window(lo, hi);
            out.extend(bufs.into_iter().map(|b| (b, w)));
        }
        out
    }

    /// A loop kernel: one dispatch, or one per block when it touches a memory too large
    /// to bind whole.
    pub(super) fn loop_kernel(
        &mut self,
        i: usize,
        node: NodeId,
        l: &LoopKernel,
    ) -> Result<(), WgslError> {
        let lim = self.limits.binding();
        let blocks = windows::split(
            &l.shape,
            &loop_accesses(l),
            &reduced_axes(l),
            &|b| self.needs_window(b),
            lim,
        )
        .map_err(|u| self.too_wide(node, u.buf, u.words))?;
        for block in blocks {
            // The one block of a kernel that fits is the whole kernel, unshifted.
            let sub = l.sub_block(&block.origin, &block.shape);
            let mut e = self.emitter(i, node);
            e.windows =
                self.windows_for(&loop_accesses(&sub), &vec![0; sub.shape.len()], &sub.shape);
            e.accumulate = block.accumulate;
            e.plain_or_reduce(&sub)?;
            self.kernels.push(e.finish()?);
        }
        Ok(())
    }

    /// The product's dispatches over `blocks`, with `epilogue` fused into each.
    pub(super) fn product(
        &self,
        i: usize,
        node: NodeId,
        m: &MatMulKernel,
        epilogue: Option<&LoopKernel>,
        blocks: &[Block],
    ) -> Result<Vec<WgslKernel>, WgslError> {
        let accesses = matmul_accesses(m, epilogue);
        let mut out = Vec::with_capacity(blocks.len());
        for block in blocks {
            let mut e = self.emitter(i, node);
            e.windows = self.windows_for(&accesses, &block.origin, &block.shape);
            e.accumulate = block.accumulate;
            e.matmul_kernel(m, epilogue, block)?;
            out.push(e.finish()?);
        }
        Ok(out)
    }

    pub(super) fn product_blocks(
        &self,
        node: NodeId,
        m: &MatMulKernel,
        epilogue: Option<&LoopKernel>,
    ) -> Result<Vec<Block>, WgslError> {
        let nb = m.batch.len();
        let mut reduced = vec![false; nb + 2];
        reduced.push(true);
        windows::split(
            &matmul_space(m),
            &matmul_accesses(m, epilogue),
            &reduced,
            &|b| self.needs_window(b),
            self.limits.binding(),
        )
        .map_err(|u| self.too_wide(node, u.buf, u.words))
    }

    /// A matrix product: its epilogue fused into the product's dispatches where it can
    /// be, otherwise the product alone and then the epilogue as a loop kernel.
    pub(super) fn matmul(
        &mut self,
        i: usize,
        node: NodeId,
        m: &MatMulKernel,
    ) -> Result<(), WgslError> {
        let nb = m.batch.len();
        // An epilogue in another order than `c` (a convolution's bias + ReLU in pooling
        // layout) would need the inverse of its access to find the elements an
        // invocation finished.
        if let Some(epilogue) = m.epilogue.as_deref().filter(|_| m.epilogue_in_order()) {
            let blocks = self.product_blocks(node, m, Some(epilogue))?;
            // A block that covers part of `k` leaves partial sums, not `c`.
            if blocks.iter().all(|b| b.shape[nb + 2] == m.k) {
                match self.product(i, node, m, Some(epilogue), &blocks) {
                    Ok(ks) => {
                        self.kernels.extend(ks);
                        return Ok(());
                    }
                    // The epilogue's buffers push the product past the adapter's
                    // storage bindings.
                    Err(WgslError::Limit { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        let blocks = self.product_blocks(node, m, None)?;
        let ks = self.product(i, node, m, None, &blocks)?;
        self.kernels.extend(ks);
        if let Some(epilogue) = m.epilogue.as_deref() {
            self.loop_kernel(i, node, epilogue)?;
        }
        Ok(())
    }

    /// A library kernel reads and writes its buffers anywhere: each must fit a window.
    pub(super) fn library(
        &mut self,
        i: usize,
        node: NodeId,
        l: &LibraryKernel,
    ) -> Result<(), WgslError> {
        let windows = self.library_windows(node, l)?;
        let mut e = self.emitter(i, node);
        e.windows = windows;
        e.library_kernel(l)?;
        match (e.finish(), &self.g.node(node).op) {
            (Ok(k), _) => self.kernels.push(k),
            // The inputs of a concatenation need more storage bindings than a dispatch
            // has (inputs bound separately: the clipped norm of a GPT stacks 50-odd
            // per-parameter scalars, which needed 53 bindings on lavapipe's 32): it
            // runs as several dispatches, each writing its part of the output.
            (Err(WgslError::Limit { .. }), Op::Concat { axis }) if l.inputs.len() > 1 => {
                self.concat_in_parts(i, node, l, *axis)?;
            }
            (Err(err), _) => return Err(err),
        }
        Ok(())
    }

    /// A concatenation as dispatches of at most `room` inputs each (one binding per
    /// input, plus the output and the status word).
    fn concat_in_parts(
        &mut self,
        i: usize,
        node: NodeId,
        l: &LibraryKernel,
        axis: usize,
    ) -> Result<(), WgslError> {
        let room = (self.limits.max_storage_buffers_per_stage as usize)
            .saturating_sub(2)
            .max(1);
        let mut at = 0;
        for chunk in l.inputs.chunks(room) {
            let mut shape = l.shape.clone();
            shape[axis] = chunk.iter().map(|(_, s)| s[axis]).sum();
            let part = LibraryKernel {
                inputs: chunk.to_vec(),
                out: l.out,
                shape,
            };
            let mut e = self.emitter(i, node);
            e.windows = self.library_windows(node, &part)?;
            e.concat_part(&part, axis, at, &l.shape)?;
            self.kernels.push(e.finish()?);
            at += part.shape[axis];
        }
        Ok(())
    }

    /// The window of each of a library kernel's buffers (read and written anywhere).
    fn library_windows(
        &self,
        node: NodeId,
        l: &LibraryKernel,
    ) -> Result<Vec<(BufferId, BindingWindow)>, WgslError> {
        let mut windows = Vec::new();
        for b in l.inputs.iter().map(|(b, _)| *b).chain([l.out]) {
            let n = self.p.buffer(b).elems;
            let whole = Affine {
                offset: 0,
                strides: vec![1],
            };
            for (b, w) in self.windows_for(&[(b, whole)], &[0], &[n]) {
                if w.words > self.limits.binding().max_words {
                    return Err(self.too_wide(node, b, n));
                }
                windows.push((b, w));
            }
        }
        Ok(windows)
    }
}
