//! Library ops (gather, scatter-add, arg reductions, bool reductions, integer
//! products, pad, fold, concat, random numbers): one invocation per output element.

use super::*;

impl Emitter<'_> {
    pub(super) fn library_kernel(&mut self, l: &LibraryKernel) -> Result<(), WgslError> {
        let node = self.g.node(self.node);
        let total: usize = l.shape.iter().product();
        if let Op::ScatterAdd { axis } = &node.op
            && total == 0
            && l.inputs[1].1.iter().product::<usize>() > 0
        {
            // An empty output with a non-empty index: the scattered axis is empty (the
            // index is no larger than the output elsewhere), so every index is out of
            // range. No invocation per output would see one: a single one reports the
            // first, as the interpreter does.
            let wx = self.dispatch_1d(1, false)?;
            self.gid_prologue(1, wx, false);
            let j = self.read(l.inputs[1].0, "0");
            let _ = writeln!(self.body, "  let j = {j};");
            self.bounds_check("j", l.inputs[0].1[*axis]);
            return Ok(());
        }
        let wx = self.dispatch_1d(total, false)?;
        self.gid_prologue(total, wx, false);
        match &node.op {
            Op::Gather { axis } => self.gather(l, *axis),
            Op::ScatterAdd { axis } => self.scatter_add(l, *axis),
            Op::ArgReduce { op, axis, .. } => self.arg_reduce(l, *op, *axis),
            Op::Reduce { op, axes, .. } => self.bool_reduce(l, *op, axes),
            Op::MatMul { trans_a, trans_b } => self.int_matmul(l, *trans_a, *trans_b),
            Op::Pad { pads, value } => self.pad(l, pads, *value),
            Op::Fold { window, .. } => self.fold(l, window),
            Op::Concat { axis } => self.concat(l, *axis, 0, &l.shape),
            Op::Random { dist, .. } => self.random(l, *dist),
            Op::TopK { axis, largest, .. } => self.top_k(l, *axis, *largest),
            // In a group of one, the sum and the mean over the group are the value;
            // a GPU step in a larger group stages through the host (issue 30).
            Op::AllReduce { .. } => {
                let v = self.read(l.inputs[0].0, "i32(gid)");
                let st = self.write(l.out, "i32(gid)", &v);
                let _ = writeln!(self.body, "  {st}");
                Ok(())
            }
            other => Err(self.unsupported(format!(
                "no WGSL implementation of library op `{}`",
                other.name()
            ))),
        }
    }

    /// The graph dtype of the node this kernel computes.
    fn dtype(&self) -> DType {
        self.g.node(self.node).ty.dtype
    }

    /// A gather along `axis`: the index chooses the source position there.
    fn gather(&mut self, l: &LibraryKernel, axis: usize) -> Result<(), WgslError> {
        let shape = l.shape.clone();
        let out_axes: Vec<usize> = (0..shape.len()).collect();
        let dense = |s: &[usize]| Affine::contiguous(s);
        let (x, xs) = &l.inputs[0];
        let (ix, _) = &l.inputs[1];
        self.unflatten("gid", &shape, &out_axes, "  ");
        let j = self.read(*ix, "i32(gid)");
        let _ = writeln!(self.body, "  let j = {j};");
        self.bounds_check("j", xs[axis]);
        let mut at = dense(xs);
        let mut idx = at.offset.to_string();
        for d in 0..shape.len() {
            let st = std::mem::take(&mut at.strides[d]);
            if d == axis {
                let _ = write!(idx, " + j * {st}");
            } else if st != 0 {
                let _ = write!(idx, " + i{d} * {st}");
            }
        }
        let v = self.read(*x, &idx);
        let st = self.write(l.out, "i32(gid)", &v);
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// Scatter-add as a gather: each output element loops over the index and adds the
    /// sources aimed at it, in index order (no atomics: WGSL has no float atomics).
    fn scatter_add(&mut self, l: &LibraryKernel, axis: usize) -> Result<(), WgslError> {
        let shape = l.shape.clone();
        let out_axes: Vec<usize> = (0..shape.len()).collect();
        let odt = DevType::of(self.p.buffer(l.out).dtype);
        let dense = |s: &[usize]| Affine::contiguous(s);
        let (x, xs) = &l.inputs[0];
        let (ix, is) = &l.inputs[1];
        let (src, _) = &l.inputs[2];
        self.unflatten("gid", &shape, &out_axes, "  ");
        let v = self.read(*x, "i32(gid)");
        let _ = writeln!(self.body, "  var acc = {v};");
        // Only positions inside the index's extent on the other axes receive.
        let mut inside = vec!["true".to_string()];
        for d in 0..shape.len() {
            if d != axis && is[d] < xs[d] {
                inside.push(format!("i{d} < {}", is[d]));
            }
        }
        let ist = dense(is).strides;
        let mut qidx = "0".to_string();
        for (d, &st) in ist.iter().enumerate() {
            if d == axis {
                let _ = write!(qidx, " + q * {st}");
            } else if st != 0 {
                let _ = write!(qidx, " + i{d} * {st}");
            }
        }
        let j = self.read(*ix, &qidx);
        let s = self.read(*src, &qidx);
        let add = if odt == DevType::Bool {
            format!("acc | {s}")
        } else {
            combine(ReduceOp::Sum, odt, "acc", &s)
        };
        let _ = writeln!(
            self.body,
            "  if ({}) {{\n    for (var q: i32 = 0; q < {}; q = q + 1) {{\n      let j = {j};",
            inside.join(" && "),
            is[axis]
        );
        let _ = writeln!(self.body, "      if (i{axis} == 0) {{");
        self.bounds_check("j", xs[axis]);
        let _ = writeln!(
            self.body,
            "      }}\n      if (j == i{axis}) {{ acc = {add}; }}\n    }}\n  }}"
        );
        let st = self.write(l.out, "i32(gid)", "acc");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// argmax/argmin along `axis`: the first extreme wins, a NaN wins at once (as PyTorch).
    fn arg_reduce(
        &mut self,
        l: &LibraryKernel,
        op: ArgReduceOp,
        axis: usize,
    ) -> Result<(), WgslError> {
        let dense = |s: &[usize]| Affine::contiguous(s);
        let (x, xs) = &l.inputs[0];
        let kept: Vec<usize> = (0..xs.len()).filter(|&d| d != axis).collect();
        self.unflatten("gid", xs, &kept, "  ");
        let xt = DevType::of(self.p.buffer(*x).dtype);
        let mut at = dense(xs);
        at.strides[axis] = 0;
        let base = Self::affine(&at, xs);
        let step = dense(xs).strides[axis];
        let v = self.read(*x, &format!("{base} + p * {step}"));
        let better = match (op, xt) {
            (ArgReduceOp::ArgMax, DevType::F32) => "isnan_(v) || v > best",
            (ArgReduceOp::ArgMin, DevType::F32) => "isnan_(v) || v < best",
            (ArgReduceOp::ArgMax, _) => "v > best",
            (ArgReduceOp::ArgMin, _) => "v < best",
        };
        let nan_stop = if xt == DevType::F32 {
            "if (isnan_(best)) { break; } "
        } else {
            ""
        };
        let v = if xt == DevType::Bool {
            format!("select(0u, 1u, {v})")
        } else {
            v
        };
        let _ = writeln!(
            self.body,
            "  var at: i32 = 0;\n  var p: i32 = 0;\n  var best = {v};\n  for (p = 1; p < {}; p = p + 1) {{\n    {nan_stop}let v = {v};\n    if ({better}) {{ best = v; at = p; }}\n  }}",
            xs[axis]
        );
        let st = self.write(l.out, "i32(gid)", "at");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// `topk` indices: output `r` of a row is the `r`-th element of the row in the op's
    /// order (NaN above every number, ties by lower position), found by `r + 1` passes
    /// that each take the first element after the previous one: no sort buffer per
    /// invocation, `O(k * len)` reads, which suits the small rows topk is asked for.
    fn top_k(&mut self, l: &LibraryKernel, axis: usize, largest: bool) -> Result<(), WgslError> {
        let (x, xs) = &l.inputs[0];
        let shape = l.shape.clone();
        let all: Vec<usize> = (0..shape.len()).collect();
        self.unflatten("gid", &shape, &all, "  ");
        let xt = DevType::of(self.p.buffer(*x).dtype);
        let mut at = Affine::contiguous(xs);
        let step = at.strides[axis];
        at.strides[axis] = 0;
        let base = Self::affine(&at, xs);
        let v = self.read(*x, &format!("{base} + p * {step}"));
        let gt = if largest { ">" } else { "<" };
        // Whether (a at pa) comes before (b at pb).
        let before = |a: &str, pa: &str, b: &str, pb: &str| -> String {
            if xt == DevType::F32 {
                let (na, nb) = (format!("isnan_({a})"), format!("isnan_({b})"));
                let nan_order = if largest {
                    format!("({na} && !{nb})")
                } else {
                    format!("(!{na} && {nb})")
                };
                format!(
                    "({nan_order} || (!{na} && !{nb} && {a} {gt} {b}) || ((({na} && {nb}) || ({a} == {b})) && {pa} < {pb}))"
                )
            } else {
                format!("({a} {gt} {b} || ({a} == {b} && {pa} < {pb}))")
            }
        };
        let after_prev = before("pv", "pp", "v", "p");
        let better = before("v", "p", "bv", "bp");
        let _ = writeln!(
            self.body,
            "  var p: i32 = 0;\n  var pv = {v};\n  var pp: i32 = -1;\n  for (var s: i32 = 0; s <= i{axis}; s = s + 1) {{\n    var found = false;\n    var bv = pv;\n    var bp: i32 = 0;\n    for (p = 0; p < {len}; p = p + 1) {{\n      let v = {v};\n      if (pp >= 0 && !{after_prev}) {{ continue; }}\n      if (!found || {better}) {{ found = true; bv = v; bp = p; }}\n    }}\n    pv = bv;\n    pp = bp;\n  }}",
            len = xs[axis]
        );
        let st = self.write(l.out, "i32(gid)", "pp");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// A max (any) or min (all) over bool axes.
    fn bool_reduce(
        &mut self,
        l: &LibraryKernel,
        op: ReduceOp,
        axes: &[usize],
    ) -> Result<(), WgslError> {
        let dense = |s: &[usize]| Affine::contiguous(s);
        let (x, xs) = &l.inputs[0];
        if xs
            .iter()
            .enumerate()
            .any(|(d, &n)| axes.contains(&d) && n == 0)
        {
            return Err(self.unsupported("a max/min over an empty axis"));
        }
        let kept: Vec<usize> = (0..xs.len()).filter(|d| !axes.contains(d)).collect();
        self.unflatten("gid", xs, &kept, "  ");
        let rn: usize = axes.iter().map(|&d| xs[d]).product();
        let _ = writeln!(
            self.body,
            "  var acc = {};\n  for (var r: u32 = 0u; r < {rn}u; r = r + 1u) {{",
            if op == ReduceOp::Max { "false" } else { "true" }
        );
        self.unflatten("r", xs, axes, "    ");
        let v = self.read(*x, &Self::affine(&dense(xs), xs));
        let c = if op == ReduceOp::Max { "||" } else { "&&" };
        let _ = writeln!(self.body, "    acc = acc {c} {v};\n  }}");
        let st = self.write(l.out, "i32(gid)", "acc");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// An integer matrix product, one dot product per output element.
    fn int_matmul(
        &mut self,
        l: &LibraryKernel,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<(), WgslError> {
        let shape = l.shape.clone();
        let out_axes: Vec<usize> = (0..shape.len()).collect();
        let odt = DevType::of(self.p.buffer(l.out).dtype);
        let dense = |s: &[usize]| Affine::contiguous(s);
        let r = shape.len();
        let (a, ashape) = &l.inputs[0];
        let (b, bshape) = &l.inputs[1];
        self.unflatten("gid", &shape, &out_axes, "  ");
        let (ast, bst) = (dense(ashape).strides, dense(bshape).strides);
        let k = if trans_a {
            ashape[r - 2]
        } else {
            ashape[r - 1]
        };
        let mut ai = "0".to_string();
        let mut bi = "0".to_string();
        for d in 0..r - 2 {
            let _ = write!(ai, " + i{d} * {}", ast[d]);
            let _ = write!(bi, " + i{d} * {}", bst[d]);
        }
        let (ri, ci) = (format!("i{}", r - 2), format!("i{}", r - 1));
        let (sa_i, sa_k) = if trans_a {
            (ast[r - 1], ast[r - 2])
        } else {
            (ast[r - 2], ast[r - 1])
        };
        let (sb_k, sb_j) = if trans_b {
            (bst[r - 1], bst[r - 2])
        } else {
            (bst[r - 2], bst[r - 1])
        };
        let va = self.read(*a, &format!("{ai} + {ri} * {sa_i} + q * {sa_k}"));
        let vb = self.read(*b, &format!("{bi} + q * {sb_k} + {ci} * {sb_j}"));
        let zero = identity(ReduceOp::Sum, odt);
        let prod = match odt {
            DevType::U32 => format!("(({va}) * ({vb})) & 255u"),
            _ => format!("({va}) * ({vb})"),
        };
        let add = combine(ReduceOp::Sum, odt, "acc", &prod);
        let _ = writeln!(
            self.body,
            "  var acc = {zero};\n  for (var q: i32 = 0; q < {k}; q = q + 1) {{ acc = {add}; }}"
        );
        let st = self.write(l.out, "i32(gid)", "acc");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// A constant pad: positions outside the source read `value`.
    fn pad(
        &mut self,
        l: &LibraryKernel,
        pads: &[(usize, usize)],
        value: Scalar,
    ) -> Result<(), WgslError> {
        let shape = l.shape.clone();
        let out_axes: Vec<usize> = (0..shape.len()).collect();
        let dense = |s: &[usize]| Affine::contiguous(s);
        let (x, xs) = &l.inputs[0];
        self.unflatten("gid", &shape, &out_axes, "  ");
        let mut inside = vec!["true".to_string()];
        let xst = dense(xs).strides;
        let mut idx = "0".to_string();
        for (d, &(lo, _)) in pads.iter().enumerate() {
            inside.push(format!("i{d} >= {lo} && i{d} < {}", lo + xs[d]));
            if xst[d] != 0 {
                let _ = write!(idx, " + (i{d} - {lo}) * {}", xst[d]);
            }
        }
        let lit = self.literal(value, self.dtype())?;
        let v = self.read(*x, &idx);
        let _ = writeln!(
            self.body,
            "  var v = {lit};\n  if ({}) {{ v = {v}; }}",
            inside.join(" && ")
        );
        let st = self.write(l.out, "i32(gid)", "v");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// Gather form of col2im: each output element sums the window elements that
    /// unfold would read from it, by increasing (i, j) from zero, as the
    /// interpreter's scatter form adds them. No atomics, deterministic.
    fn fold(&mut self, l: &LibraryKernel, w: &aotgrad_ir::Window) -> Result<(), WgslError> {
        let shape = l.shape.clone();
        let out_axes: Vec<usize> = (0..shape.len()).collect();
        let odt = DevType::of(self.p.buffer(l.out).dtype);
        let dense = |s: &[usize]| Affine::contiguous(s);
        let (x, xs) = &l.inputs[0];
        let r = shape.len();
        let (oh, ow) = (xs[xs.len() - 2], xs[xs.len() - 1]);
        let xst = dense(xs).strides;
        self.unflatten("gid", &shape, &out_axes, "  ");
        let mut plane = "0".to_string();
        for (d, st) in xst.iter().enumerate().take(r - 2) {
            let _ = write!(plane, " + i{d} * {st}");
        }
        let zero = self.literal(Scalar::zero(self.dtype()), self.dtype())?;
        let _ = writeln!(self.body, "  var acc = {zero};");
        let (h, wc) = (format!("i{}", r - 2), format!("i{}", r - 1));
        let (si, sj) = (xst[r - 2], xst[r - 1]);
        let (so, sw) = (xst[r], xst[r + 1]);
        let _ = writeln!(
            self.body,
            "  for (var i = 0; i < {kh}; i++) {{\n    let y = {h} - i * {dh};\n    if (y < 0 || y % {sh} != 0 || y / {sh} >= {oh}) {{ continue; }}\n    for (var j = 0; j < {kw}; j++) {{\n      let x = {wc} - j * {dw};\n      if (x < 0 || x % {sw_} != 0 || x / {sw_} >= {ow}) {{ continue; }}",
            kh = w.kernel[0],
            kw = w.kernel[1],
            dh = w.dilation[0],
            dw = w.dilation[1],
            sh = w.stride[0],
            sw_ = w.stride[1],
        );
        let v = self.read(
            *x,
            &format!(
                "{plane} + i * {si} + j * {sj} + (y / {sh}) * {so} + (x / {sw2}) * {sw}",
                sh = w.stride[0],
                sw2 = w.stride[1]
            ),
        );
        let add = combine(ReduceOp::Sum, odt, "acc", &v);
        let _ = writeln!(self.body, "      acc = {add};\n    }}\n  }}");
        let st = self.write(l.out, "i32(gid)", "acc");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    /// A concatenation along `axis`: each output element reads the input whose range holds it.
    /// Part of a concatenation whose inputs need more storage bindings than one
    /// dispatch has: `l` holds some of the inputs and their concatenated shape, which
    /// lands at `at` along `axis` of the whole output of shape `full`.
    pub(super) fn concat_part(
        &mut self,
        l: &LibraryKernel,
        axis: usize,
        at: usize,
        full: &[usize],
    ) -> Result<(), WgslError> {
        let total: usize = l.shape.iter().product();
        let wx = self.dispatch_1d(total, false)?;
        self.gid_prologue(total, wx, false);
        self.concat(l, axis, at, full)
    }

    /// The inputs of `l` side by side along `axis`; the result is the part of an output
    /// of shape `full` that starts at `at` there (the whole of it when `at` is 0 and
    /// `full` is `l.shape`).
    fn concat(
        &mut self,
        l: &LibraryKernel,
        axis: usize,
        at: usize,
        full: &[usize],
    ) -> Result<(), WgslError> {
        let shape = l.shape.clone();
        let out_axes: Vec<usize> = (0..shape.len()).collect();
        let odt = DevType::of(self.p.buffer(l.out).dtype);
        let dense = |s: &[usize]| Affine::contiguous(s);
        self.unflatten("gid", &shape, &out_axes, "  ");
        let _ = writeln!(self.body, "  var v: {};", odt.name());
        let mut start = 0;
        for (b, s) in &l.inputs {
            let st = dense(s).strides;
            let mut idx = "0".to_string();
            for (d, &sd) in st.iter().enumerate() {
                if sd != 0 {
                    if d == axis {
                        let _ = write!(idx, " + (i{d} - {start}) * {sd}");
                    } else {
                        let _ = write!(idx, " + i{d} * {sd}");
                    }
                }
            }
            let v = self.read(*b, &idx);
            let end = start + s[axis];
            let _ = writeln!(
                self.body,
                "  if (i{axis} >= {start} && i{axis} < {end}) {{ v = {v}; }}"
            );
            start = end;
        }
        let at_out = if at == 0 && full == shape.as_slice() {
            "i32(gid)".to_string()
        } else {
            let mut idx = "0".to_string();
            for (d, &sd) in dense(full).strides.iter().enumerate() {
                if d == axis {
                    let _ = write!(idx, " + (i{d} + {at}) * {sd}");
                } else if sd != 0 {
                    let _ = write!(idx, " + i{d} * {sd}");
                }
            }
            idx
        };
        let st = self.write(l.out, &at_out, "v");
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }

    fn random(&mut self, l: &LibraryKernel, dist: Distribution) -> Result<(), WgslError> {
        // The interpreter's Threefry-2x32-20 (runtime/src/interp/rng.rs), which
        // needs only 32-bit integer ops: uniforms are bit-exact, normals use the
        // device's log and cos.
        let (key, _) = &l.inputs[0];
        let k = self.read(*key, "0");
        self.decls.push_str(&without_comments(THREEFRY));
        let _ = writeln!(
            self.body,
            "  let kw = bitcast<u32>({k});\n  let hi = select(0u, 0xffffffffu, {k} < 0);\n  let x = threefry_(kw, hi, gid, 0u);"
        );
        let v = match dist {
            Distribution::Uniform => "f32(x.x >> 8u) * (1.0 / 16777216.0)",
            Distribution::Normal => {
                "sqrt(-2.0 * log(f32((x.x >> 8u) + 1u) * (1.0 / 16777216.0))) * cos(6.2831855 * (f32(x.y >> 8u) * (1.0 / 16777216.0)))"
            }
        };
        let st = self.write(l.out, "i32(gid)", v);
        let _ = writeln!(self.body, "  {st}");
        Ok(())
    }
}
