//! Text form of a lowered program: buffers with the memory plan, kernels, roots.
//! Deterministic (no hash-map order), so it can be snapshot-tested.

use std::fmt;

use super::{Affine, BufferKind, Kernel, KernelBody, LoopKernel, Program};

fn dims(v: &[usize]) -> String {
    let parts: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn access(a: &Affine) -> String {
    let parts: Vec<String> = a.strides.iter().map(|d| d.to_string()).collect();
    format!("{{{} [{}]}}", a.offset, parts.join(","))
}

fn loop_kind(l: &LoopKernel) -> String {
    match l.reduce {
        Some(r) => format!("reduce.{}", r.name()),
        None => "loop".into(),
    }
}

/// `HEAD over [shape] -> outputs`, then the loads and the expression.
fn write_loop(f: &mut fmt::Formatter<'_>, head: &str, l: &LoopKernel) -> fmt::Result {
    // One output that is the expression's root prints as `-> b3 {..}`; a merged
    // kernel names each output's value.
    let single = l.outs.len() == 1 && l.outs[0].value == l.expr.root();
    let outs: Vec<String> = l
        .outs
        .iter()
        .map(|o| {
            if single {
                format!("b{} {}", o.buf.0, access(&o.at))
            } else {
                format!("b{} {} = e{}", o.buf.0, access(&o.at), o.value)
            }
        })
        .collect();
    writeln!(f, "{head} over {} -> {}", dims(&l.shape), outs.join(", "))?;
    for (j, (b, a)) in l.loads.iter().enumerate() {
        writeln!(f, "      l{j} = b{} {}", b.0, access(a))?;
    }
    write!(f, "{}", l.expr)
}

impl Program {
    /// The `buffers:` section: each buffer's type, size, kind and node.
    fn fmt_buffers(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "buffers:")?;
        for (i, b) in self.buffers.iter().enumerate() {
            if b.elems == 0 && matches!(b.kind, BufferKind::Arena { .. }) {
                continue; // folded into an in-place update
            }
            let node = b.node.map(|n| format!(" ({n})")).unwrap_or_default();
            let what = match &b.kind {
                BufferKind::Input(n) => format!("input {n:?}"),
                BufferKind::Persistent(n) => format!("persistent {n:?}"),
                BufferKind::PersistentSpan(names) => format!(
                    "persistent span {}",
                    names
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                BufferKind::Const(_) => "const".to_string(),
                BufferKind::Arena { offset } => {
                    // Live ranges come with the memory plan (`assign_offsets`, the last
                    // kernel-plan pass); a program printed before it, whose passes may
                    // have added buffers, has none for them yet.
                    let live = (self.live.get(i).copied().flatten())
                        .map(|(a, z)| format!("k{a}..k{z}"))
                        .unwrap_or_else(|| "unused".into());
                    format!("arena @{offset} live {live}")
                }
            };
            writeln!(
                f,
                "  b{i}: {}[{}] {} B {what}{node}",
                b.dtype.name(),
                b.elems,
                b.bytes()
            )?;
        }
        Ok(())
    }

    /// One line (or a few, for row kernels and epilogues) of the `kernels:` section.
    fn fmt_kernel(&self, f: &mut fmt::Formatter<'_>, t: usize, k: &Kernel) -> fmt::Result {
        match &k.body {
            KernelBody::Loop(l) => {
                write_loop(f, &format!("  k{t}: {} {}", loop_kind(l), k.node), l)?;
            }
            KernelBody::Rows(r) => {
                writeln!(f, "  k{t}: rows {} {} stages", r.rows, r.stages.len())?;
                for l in &r.stages {
                    let node = l.outs[0].node;
                    write_loop(f, &format!("    {} {node}", loop_kind(l)), l)?;
                }
            }
            KernelBody::MatMul(m) => {
                writeln!(
                    f,
                    "  k{t}: matmul {} {} batch {} m={} n={} k={} a=b{} {} b=b{} {} -> b{}",
                    k.node,
                    m.dtype.name(),
                    dims(&m.batch),
                    m.m,
                    m.n,
                    m.k,
                    m.a.0.0,
                    access(&m.a.1),
                    m.b.0.0,
                    access(&m.b.1),
                    m.c.0
                )?;
                if let Some(e) = &m.epilogue {
                    write_loop(f, &format!("    epilogue {}", e.outs[0].node), e)?;
                }
            }
            KernelBody::Library(l) => {
                let ins: Vec<String> = l.inputs.iter().map(|(b, _)| format!("b{}", b.0)).collect();
                let what = if self.start_of(k.node) == Some(t) {
                    "start collective"
                } else {
                    "library"
                };
                writeln!(
                    f,
                    "  k{t}: {what} {} over {} ({}) -> b{}",
                    k.node,
                    dims(&l.shape),
                    ins.join(", "),
                    l.out.0
                )?;
            }
            KernelBody::Wait(w) => {
                let start = self.start_of(k.node);
                let from = start.map_or_else(|| "?".to_string(), |a| format!("k{a}"));
                let overlap = match start {
                    Some(a) if t > a + 1 => format!(", overlapping {} kernels", t - a - 1),
                    _ => String::new(),
                };
                writeln!(
                    f,
                    "  k{t}: wait collective {} started at {from} -> b{}{overlap}",
                    k.node, w.out.0
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program {}", self.name)?;
        for (k, v) in &self.env {
            write!(f, " {k}={v}")?;
        }
        writeln!(f)?;
        self.fmt_buffers(f)?;
        writeln!(f, "kernels:")?;
        for (t, k) in self.kernels.iter().enumerate() {
            self.fmt_kernel(f, t, k)?;
        }
        if !self.saved.is_empty() {
            let list: Vec<String> = self
                .saved
                .iter()
                .map(|b| format!("b{} ({} B)", b.0, self.buffer(*b).bytes()))
                .collect();
            let total: usize = self.saved.iter().map(|b| self.buffer(*b).bytes()).sum();
            writeln!(f, "saved for backward: {} = {total} B", list.join(", "))?;
        }
        writeln!(f, "outputs:")?;
        for o in &self.outputs {
            writeln!(f, "  {} = b{} {}", o.name, o.buf.0, access(&o.at))?;
        }
        writeln!(f, "updates:")?;
        for u in &self.updates {
            match &u.source {
                None => writeln!(f, "  {} (b{}) in place", u.name, u.target.0)?,
                Some((b, a)) => writeln!(
                    f,
                    "  {} (b{}) <- b{} {}",
                    u.name,
                    u.target.0,
                    b.0,
                    access(a)
                )?,
            }
        }
        writeln!(
            f,
            "arena: {} B (peak live {} B) for {} B of intermediates; {} kernels ({} loops, {} row kernels, {} matmuls, {} library)",
            self.arena_bytes,
            self.peak_live_bytes(),
            self.intermediate_bytes(),
            self.kernels.len(),
            self.kernels
                .iter()
                .filter(|k| matches!(k.body, KernelBody::Loop(_)))
                .count(),
            self.kernels
                .iter()
                .filter(|k| matches!(k.body, KernelBody::Rows(_)))
                .count(),
            self.kernels
                .iter()
                .filter(|k| matches!(k.body, KernelBody::MatMul(_)))
                .count(),
            self.kernels
                .iter()
                .filter(|k| matches!(k.body, KernelBody::Library(_)))
                .count(),
        )?;
        let waits = self
            .kernels
            .iter()
            .filter(|k| matches!(k.body, KernelBody::Wait(_)))
            .count();
        if waits > 0 {
            write!(f, "; {waits} collectives")?;
        }
        Ok(())
    }
}

/// For every graph value the lowering wrote to a buffer (instead of fusing it into the
/// kernels that use it), the ops that read it and why: one line per value, in graph
/// order. `aotgrad opt --explain-fusion` prints it.
pub fn explain_fusion(g: &aotgrad_ir::Graph, p: &Program) -> String {
    let mut consumers: Vec<Vec<aotgrad_ir::NodeId>> = vec![Vec::new(); g.len()];
    for (id, n) in g.nodes() {
        for i in &n.inputs {
            if !consumers[i.index()].contains(&id) {
                consumers[i.index()].push(id);
            }
        }
    }
    let mut stored: Vec<&(aotgrad_ir::NodeId, String)> = p.stored.iter().collect();
    stored.sort_by_key(|(id, _)| *id);
    stored.dedup_by_key(|(id, _)| *id);
    let mut out = String::new();
    for (id, why) in stored {
        let uses: Vec<String> = consumers[id.index()]
            .iter()
            .map(|c| format!("{c} {}", g.node(*c).op.name()))
            .collect();
        let to = if uses.is_empty() {
            String::new()
        } else {
            format!(" -> {}", uses.join(", "))
        };
        out.push_str(&format!(
            "{id} {}{to}: not fused: {why}\n",
            g.node(*id).op.name()
        ));
    }
    out
}
