//! Loop kernels: fused elementwise expressions, and reductions (a loop per output,
//! or a fixed tree in workgroup memory for long reduced extents).

use super::*;

impl Emitter<'_> {
    /// `let e<n> = ...;` lines for the kernel's expression.
    pub(super) fn expr_lines(&mut self, k: &LoopKernel, indent: &str) -> Result<String, WgslError> {
        let mut out = String::new();
        for (i, n) in k.expr.nodes.iter().enumerate() {
            let t = DevType::of(n.dtype);
            let operand = |j: usize| (format!("e{j}"), k.expr.nodes[j].dtype);
            let v = match &n.op {
                FlatOp::Load(l) => {
                    let (b, at) = &k.loads[*l];
                    let idx = Self::affine(at, &k.shape);
                    self.read(*b, &idx)
                }
                FlatOp::Index(a) => format!("({})", Self::affine(a, &k.shape)),
                FlatOp::Const(s) => self.literal(*s, n.dtype)?,
                FlatOp::Unary(u, a) => unary(*u, &operand(*a).0, n.dtype),
                FlatOp::Binary(b, x, y) => {
                    let (x, xd) = operand(*x);
                    binary(*b, &x, &operand(*y).0, DevType::of(xd))
                }
                FlatOp::Where(c, x, y) => format!("select(e{y}, e{x}, e{c})"),
                FlatOp::Cast(a) => {
                    let (a, from) = operand(*a);
                    cast(&a, from, n.dtype)
                }
                FlatOp::Checked { index, len, node } => {
                    // Every invocation carries on (a row stage may meet a barrier
                    // later) with index 0; the run reports the recorded fault.
                    let rec = self.fault_record(&format!("e{index}"), *len, *node);
                    let _ = writeln!(
                        out,
                        "{indent}let ok{i} = e{index} >= 0 && e{index} < {len};\n{indent}if (!ok{i}) {{ {rec} }}"
                    );
                    format!("select(0, e{index}, ok{i})")
                }
                FlatOp::Gather {
                    load,
                    index,
                    stride,
                } => {
                    let (b, at) = &k.loads[*load];
                    let idx = format!("{} + e{index} * {stride}", Self::affine(at, &k.shape));
                    self.read(*b, &idx)
                }
            };
            let _ = writeln!(out, "{indent}let e{i}: {} = {v};", t.name());
        }
        Ok(out)
    }

    pub(super) fn literal(&self, s: Scalar, d: DType) -> Result<String, WgslError> {
        Ok(match DevType::of(d) {
            DevType::F32 => float_literal(s.as_f64() as f32),
            DevType::I32 => {
                let v = int_value(s);
                let v = i32::try_from(v).map_err(|_| {
                    self.unsupported(format!(
                        "the integer constant {v} does not fit the GPU's 32-bit integers"
                    ))
                })?;
                if v == i32::MIN {
                    "(i32(-2147483647) - 1)".into()
                } else {
                    format!("i32({v})")
                }
            }
            DevType::U32 => format!("{}u", int_value(s) & 0xff),
            DevType::Bool => (s.as_f64() != 0.0).to_string(),
        })
    }

    /// A loop kernel's shader: elementwise or reducing.
    pub(super) fn plain_or_reduce(&mut self, k: &LoopKernel) -> Result<(), WgslError> {
        match k.reduce {
            Some(_) => self.reduce_kernel(k),
            None => self.loop_kernel(k),
        }
    }

    pub(super) fn loop_kernel(&mut self, k: &LoopKernel) -> Result<(), WgslError> {
        let total: usize = k.shape.iter().product();
        let wx = self.dispatch_1d(total, false)?;
        self.gid_prologue(total, wx, false);
        let axes: Vec<usize> = (0..k.shape.len()).collect();
        self.unflatten("gid", &k.shape, &axes, "  ");
        let lines = self.expr_lines(k, "  ")?;
        self.body.push_str(&lines);
        let stores = self.store_lines(k, "  ");
        self.body.push_str(&stores);
        Ok(())
    }

    /// One statement per output of `k`, storing its value at its access.
    pub(super) fn store_lines(&mut self, k: &LoopKernel, indent: &str) -> String {
        let mut out = String::new();
        for s in &k.outs {
            let idx = Self::affine(&s.at, &k.shape);
            let st = self.write(s.buf, &idx, &format!("e{}", s.value));
            let _ = writeln!(out, "{indent}{st}");
        }
        out
    }

    pub(super) fn reduce_kernel(&mut self, k: &LoopKernel) -> Result<(), WgslError> {
        let op = k.reduce.expect("a reduction");
        let [out] = k.outs.as_slice() else {
            return Err(self.unsupported("a reduction with several outputs"));
        };
        let dt = DevType::of(self.p.buffer(out.buf).dtype);
        if dt == DevType::Bool {
            return Err(self.unsupported("a bool reduction in a loop kernel"));
        }
        let t = dt.name();
        let axes = reduced_axes(k);
        let (reduced, kept): (Vec<usize>, Vec<usize>) = (0..k.shape.len()).partition(|&d| axes[d]);
        let outs: usize = kept.iter().map(|&d| k.shape[d]).product();
        let rn: usize = reduced.iter().map(|&d| k.shape[d]).product();
        let tree = rn >= TREE_REDUCE_MIN;
        let wx = self.dispatch_1d(outs, tree)?;
        self.gid_prologue(outs, wx, tree);
        self.unflatten("gid", &k.shape, &kept, "  ");
        let id = identity(op, dt);
        let _ = writeln!(self.body, "  var acc: {t} = {id};");
        let (start, step) = if tree {
            ("lid.x", WORKGROUP as usize)
        } else {
            ("0u", 1)
        };
        let _ = writeln!(
            self.body,
            "  for (var r: u32 = {start}; r < {rn}u; r = r + {step}u) {{"
        );
        if !reduced.is_empty() {
            self.unflatten("r", &k.shape, &reduced, "    ");
        }
        let lines = self.expr_lines(k, "    ")?;
        self.body.push_str(&lines);
        let _ = writeln!(
            self.body,
            "    acc = {};",
            combine(op, dt, "acc", &format!("e{}", out.value))
        );
        self.body.push_str("  }\n");
        if tree {
            let _ = writeln!(self.decls, "var<workgroup> red: array<{t}, {WORKGROUP}>;");
            self.body
                .push_str("  red[lid.x] = acc;\n  workgroupBarrier();\n");
            let mut s = WORKGROUP / 2;
            while s >= 1 {
                let c = combine(op, dt, "red[lid.x]", &format!("red[lid.x + {s}u]"));
                let _ = writeln!(
                    self.body,
                    "  if (lid.x < {s}u) {{ red[lid.x] = {c}; }}\n  workgroupBarrier();"
                );
                s /= 2;
            }
            self.body.push_str("  if (lid.x == 0u) {\n");
            let st = self.reduce_store(op, dt, out.buf, &out.at, &k.shape, "red[0]");
            let _ = writeln!(self.body, "    {st}\n  }}");
        } else {
            let st = self.reduce_store(op, dt, out.buf, &out.at, &k.shape, "acc");
            let _ = writeln!(self.body, "  {st}");
        }
        Ok(())
    }

    /// The store of a reduction's result `value`; in a block that continues a reduced
    /// axis (`accumulate`), combined with what the earlier blocks stored.
    pub(super) fn reduce_store(
        &mut self,
        op: ReduceOp,
        dt: DevType,
        buf: BufferId,
        at: &Affine,
        shape: &[usize],
        value: &str,
    ) -> String {
        let idx = Self::affine(at, shape);
        if self.accumulate {
            let old = self.read(buf, &idx);
            let v = combine(op, dt, &old, value);
            self.write(buf, &idx, &v)
        } else {
            self.write(buf, &idx, value)
        }
    }
}
