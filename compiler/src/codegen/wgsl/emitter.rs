//! One dispatch's shader under construction: bindings, reads and writes through
//! windows, the invocation index, bounds and status records, and the final text.

use super::*;

impl<'a> Emitter<'a> {
    pub(super) fn new(
        p: &'a Program,
        g: &'a Graph,
        index: usize,
        node: NodeId,
        limits: WgslLimits,
    ) -> Emitter<'a> {
        Emitter {
            p,
            g,
            index,
            node,
            limits,
            bindings: Vec::new(),
            windows: Vec::new(),
            accumulate: false,
            body: String::new(),
            decls: String::new(),
            workgroup_size: (WORKGROUP, 1),
            workgroups: [0; 3],
        }
    }

    pub(super) fn op(&self) -> &'static str {
        self.g.node(self.node).op.name()
    }

    pub(super) fn unsupported(&self, why: impl Into<String>) -> WgslError {
        WgslError::Unsupported {
            node: self.node,
            op: self.op(),
            why: why.into(),
        }
    }

    /// The binding index of `mem` (through `window`), marking it written when `write`.
    pub(super) fn bind(&mut self, mem: Mem, window: Option<BindingWindow>, write: bool) -> usize {
        if let Some(i) = self
            .bindings
            .iter()
            .position(|b| b.mem == mem && b.window == window)
        {
            self.bindings[i].written |= write;
            return i;
        }
        self.bindings.push(Binding {
            mem,
            window,
            written: write,
        });
        self.bindings.len() - 1
    }

    /// `m<k>[u32(base + idx)]` for buffer `b` at element index `idx` (an i32 expression);
    /// through a window, `base` is relative to the window's first word.
    pub(super) fn word(&mut self, b: BufferId, idx: &str, write: bool) -> String {
        let window = self.windows.iter().find(|(x, _)| *x == b).map(|(_, w)| *w);
        let m = self.bind(mem_of(self.p, b), window, write);
        let base = base_word(self.p, b) as i64 - window.map_or(0, |w| w.start as i64);
        if base == 0 {
            format!("m{m}[u32({idx})]")
        } else if idx == "0" {
            format!("m{m}[{base}u]")
        } else {
            format!("m{m}[u32({base} + {idx})]")
        }
    }

    /// A typed read of `b`'s element `idx`.
    pub(super) fn read(&mut self, b: BufferId, idx: &str) -> String {
        let w = self.word(b, idx, false);
        match DevType::of(self.p.buffer(b).dtype) {
            DevType::F32 => format!("bitcast<f32>({w})"),
            DevType::I32 => format!("bitcast<i32>({w})"),
            DevType::U32 => w,
            DevType::Bool => format!("({w} != 0u)"),
        }
    }

    /// A statement writing `value` to `b`'s element `idx`.
    pub(super) fn write(&mut self, b: BufferId, idx: &str, value: &str) -> String {
        let w = self.word(b, idx, true);
        match DevType::of(self.p.buffer(b).dtype) {
            DevType::F32 | DevType::I32 => format!("{w} = bitcast<u32>({value});"),
            DevType::U32 => format!("{w} = {value};"),
            DevType::Bool => format!("{w} = select(0u, 1u, {value});"),
        }
    }

    /// Sets a 1-D dispatch of `total` invocations (or workgroups when `per_group`).
    pub(super) fn dispatch_1d(&mut self, total: usize, per_group: bool) -> Result<u32, WgslError> {
        let groups = if per_group {
            total
        } else {
            total.div_ceil(WORKGROUP as usize)
        };
        let max = self.limits.max_workgroups_per_dimension as usize;
        let wx = groups.clamp(1, max);
        let wy = groups.div_ceil(wx);
        if wy > max {
            return Err(WgslError::Limit {
                node: self.node,
                op: self.op(),
                what: format!("{groups} workgroups"),
                limit: (max * max) as u64,
            });
        }
        self.workgroups = if total == 0 {
            [0, 0, 0]
        } else {
            [wx as u32, wy as u32, 1]
        };
        Ok(wx as u32)
    }

    /// `let gid = ...; if (gid >= total) { return; }` for a 1-D dispatch `wx` wide.
    pub(super) fn gid_prologue(&mut self, total: usize, wx: u32, per_group: bool) {
        if per_group {
            let _ = writeln!(self.body, "  let gid = wg.y * {wx}u + wg.x;");
        } else {
            let _ = writeln!(
                self.body,
                "  let gid = (wg.y * {wx}u + wg.x) * {WORKGROUP}u + lid.x;"
            );
        }
        let _ = writeln!(self.body, "  if (gid >= {total}u) {{ return; }}");
    }

    /// Declares `i<d>: i32` for each axis in `axes` of `shape` from the linear `var`.
    pub(super) fn unflatten(&mut self, var: &str, shape: &[usize], axes: &[usize], indent: &str) {
        self.unflatten_from(var, shape, axes, &[], indent);
    }

    /// [`Self::unflatten`], plus `origin[k]` on the `k`-th of `axes` (where given).
    pub(super) fn unflatten_from(
        &mut self,
        var: &str,
        shape: &[usize],
        axes: &[usize],
        origin: &[usize],
        indent: &str,
    ) {
        let _ = writeln!(self.body, "{indent}var rem_{var} = {var};");
        for (k, &d) in axes.iter().enumerate().rev() {
            let n = shape[d];
            let plus = match origin.get(k) {
                Some(&o) if o > 0 => format!(" + {o}"),
                _ => String::new(),
            };
            if k == 0 {
                let _ = writeln!(self.body, "{indent}let i{d} = i32(rem_{var}){plus};");
            } else {
                let _ = writeln!(
                    self.body,
                    "{indent}let i{d} = i32(rem_{var} % {n}u){plus}; rem_{var} = rem_{var} / {n}u;"
                );
            }
        }
    }

    pub(super) fn finish(mut self) -> Result<WgslKernel, WgslError> {
        // wgpu tracks usage per buffer, not per range: read-only and read-write bindings
        // of one buffer in a dispatch conflict, so windows of a written memory are all
        // bound read-write.
        for i in 0..self.bindings.len() {
            let mem = self.bindings[i].mem;
            if self.bindings.iter().any(|b| b.mem == mem && b.written) {
                self.bindings[i].written = true;
            }
        }
        if self.bindings.len() > self.limits.max_storage_buffers_per_stage as usize {
            return Err(WgslError::Limit {
                node: self.node,
                op: self.op(),
                what: format!("{} storage buffers", self.bindings.len()),
                limit: self.limits.max_storage_buffers_per_stage as u64,
            });
        }
        let mut src = String::new();
        for (i, b) in self.bindings.iter().enumerate() {
            let access = if b.written { "read_write" } else { "read" };
            let ty = if b.mem == Mem::Status {
                "array<atomic<u32>>"
            } else {
                "array<u32>"
            };
            let _ = writeln!(
                src,
                "@group(0) @binding({i}) var<storage, {access}> m{i}: {ty};"
            );
        }
        src.push_str(&without_comments(PRELUDE));
        src.push_str(&self.decls);
        let (x, y) = self.workgroup_size;
        let _ = writeln!(src, "@compute @workgroup_size({x}, {y}, 1)");
        src.push_str(
            "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {\n",
        );
        src.push_str(&self.body);
        src.push_str("}\n");
        Ok(WgslKernel {
            name: format!("k{}", self.index),
            node: self.node,
            source: src,
            bindings: self.bindings,
            workgroups: self.workgroups,
        })
    }

    /// `offset + sum(i<d> * stride)` over the axes of `shape` as an i32 expression.
    pub(super) fn affine(at: &Affine, shape: &[usize]) -> String {
        let mut terms = Vec::new();
        if at.offset != 0 {
            terms.push(at.offset.to_string());
        }
        for (d, (&st, &n)) in at.strides.iter().zip(shape).enumerate() {
            match st {
                _ if n == 1 => {}
                0 => {}
                1 => terms.push(format!("i{d}")),
                _ => terms.push(format!("i{d} * {st}")),
            }
        }
        if terms.is_empty() {
            "0".into()
        } else {
            terms.join(" + ")
        }
    }
    /// The statements recording that `var` (an i32 index into an axis of `size`
    /// checked inside a fused kernel) is out of range, under the code
    /// `FAULT_NODE | node` so the runtime names the gather or scatter it belongs to.
    pub(super) fn fault_record(&mut self, var: &str, size: usize, node: NodeId) -> String {
        self.status_record(var, size, FAULT_NODE | node.index() as u32)
    }

    /// The statement writing `[code, var, size]` to the status words unless a larger
    /// code is there already (so the record is one fault's, whichever invocation won).
    pub(super) fn status_record(&mut self, var: &str, size: usize, code: u32) -> String {
        let s = self.bind(Mem::Status, None, true);
        format!(
            "if (atomicMax(&m{s}[0], {code}u) < {code}u) {{ atomicStore(&m{s}[1], bitcast<u32>({var})); atomicStore(&m{s}[2], {size}u); }}"
        )
    }

    /// Records an out-of-range `var` (an i32 index into an axis of `size`) in the status
    /// words and clamps nothing: the run reports the error instead of returning numbers.
    pub(super) fn bounds_check(&mut self, var: &str, size: usize) {
        let rec = self.status_record(var, size, self.index as u32 + 1);
        let _ = writeln!(
            self.body,
            "  if ({var} < 0 || {var} >= {size}) {{ {rec} return; }}"
        );
    }
}
