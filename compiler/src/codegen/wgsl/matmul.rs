//! The tiled f32 matrix product, with its fused elementwise epilogue.

use super::*;

impl Emitter<'_> {
    /// The tiled product; with `epilogue`, each invocation runs the epilogue on the
    /// elements of `c` it has just written (a function `epilogue_(i0, .., i<r+1>)` over
    /// the epilogue's index), so the fused pass costs no dispatch and no extra read of
    /// `c` from another invocation. Computes `block` of the product (over
    /// `[batch..., m, n, k]`, see [`windows`]; the whole of it unless a binding is too
    /// small); a block that starts past 0 along `k` adds its partial sums to `c`.
    pub(super) fn matmul_kernel(
        &mut self,
        m: &MatMulKernel,
        epilogue: Option<&LoopKernel>,
        block: &Block,
    ) -> Result<(), WgslError> {
        if DevType::of(m.dtype) != DevType::F32 {
            return Err(self.unsupported("an integer matrix product outside a library kernel"));
        }
        let t = MATMUL_TILE;
        let nb = m.batch.len();
        let (origin, shape) = (&block.origin, &block.shape);
        let whole_batch = origin[..nb].iter().all(|&o| o == 0) && shape[..nb] == m.batch[..];
        let (m0, n0, k0) = (origin[nb], origin[nb + 1], origin[nb + 2]);
        let (bm, bn) = (shape[nb], shape[nb + 1]);
        // Ends of the block along m, n, k.
        let (m1, n1, k1) = (m0 + bm, n0 + bn, k0 + shape[nb + 2]);
        self.matmul_workgroups(m, shape)?;
        self.workgroup_size = (16, 16);
        let _ = writeln!(
            self.decls,
            "var<workgroup> ta: array<f32, {}>;\nvar<workgroup> tb: array<f32, {}>;",
            16 * t,
            16 * t
        );
        let (a, b) = (&m.a, &m.b);
        // Batch offsets of each operand and of C (dense [batch, m, n]).
        let mut bshape = shape[..nb].to_vec();
        bshape.push(1);
        let axes: Vec<usize> = (0..nb).collect();
        let body = &mut self.body;
        let _ = writeln!(body, "  let tid = lid.y * 16u + lid.x;");
        let from = |o: usize| {
            if o == 0 {
                String::new()
            } else {
                format!("{o}u + ")
            }
        };
        let _ = writeln!(
            body,
            "  let row0 = {}wg.y * {t}u;\n  let col0 = {}wg.x * {t}u;\n  let z = wg.z;",
            from(m0),
            from(n0)
        );
        self.unflatten_from("z", &bshape, &axes, &origin[..nb], "  ");
        let boff = |at: &Affine| {
            let mut s = at.offset.to_string();
            for d in 0..nb {
                if at.strides[d] != 0 && m.batch[d] != 1 {
                    let _ = write!(s, " + i{d} * {}", at.strides[d]);
                }
            }
            s
        };
        let (sam, sak) = (a.1.strides[nb], a.1.strides[nb + 1]);
        let (sbk, sbn) = (b.1.strides[nb], b.1.strides[nb + 1]);
        let (ab, bb) = (boff(&a.1), boff(&b.1));
        let (mm, nn) = (m.m, m.n);
        // The flat batch index of `c`: the dispatch's `z` unless the block cuts the batch.
        let zc = if whole_batch {
            "i32(z)".to_string()
        } else {
            let dense = Affine::contiguous(&m.batch);
            format!("({})", Self::affine(&dense, &m.batch))
        };
        let ra = self.read(a.0, &format!("abase + i32(gi) * {sam} + i32(gk) * {sak}"));
        let rb = self.read(b.0, &format!("bbase + i32(gk) * {sbk} + i32(gj) * {sbn}"));
        let epi_call = self.epilogue_fn(epilogue, nb)?;
        // 16 named accumulators and unrolled 4x4 updates: a private array indexed by
        // loop counters lives in scratch memory on some drivers (llvmpipe: 5x slower).
        let mut stores = String::new();
        for r in 0..4 {
            for c in 0..4 {
                let at = format!("{zc} * {} + i32(gi) * {nn} + i32(gj)", mm * nn);
                let value = if self.accumulate {
                    format!("{} + acc{r}{c}", self.read(m.c, &at))
                } else {
                    format!("acc{r}{c}")
                };
                let wc = self.write(m.c, &at, &value);
                let _ = writeln!(
                    stores,
                    "  {{ let gi = row0 + lid.y * 4u + {r}u; let gj = col0 + lid.x * 4u + {c}u; if (gi < {m1}u && gj < {n1}u) {{ {wc}{epi_call} }} }}"
                );
            }
        }
        let _ = writeln!(self.body, "  let abase = {ab};\n  let bbase = {bb};");
        self.tile_loop(k0, k1, m1, n1, &ra, &rb);
        self.body.push_str(&stores);
        Ok(())
    }

    /// The dispatch of a `shape` block of the product: a 64x64 tile per workgroup,
    /// `z` over the batch; refused when a dimension exceeds the device's limit.
    fn matmul_workgroups(&mut self, m: &MatMulKernel, shape: &[usize]) -> Result<(), WgslError> {
        let t = MATMUL_TILE;
        let nb = m.batch.len();
        let (bm, bn) = (shape[nb], shape[nb + 1]);
        let batch: usize = shape[..nb].iter().product();
        let max = self.limits.max_workgroups_per_dimension as usize;
        let (gx, gy) = (bn.div_ceil(t), bm.div_ceil(t));
        if gx > max || gy > max || batch > max {
            return Err(WgslError::Limit {
                node: self.node,
                op: self.op(),
                what: format!("a {}x{} product in {batch} batches", m.m, m.n),
                limit: max as u64,
            });
        }
        self.workgroups = if batch * bm * bn == 0 {
            [0, 0, 0]
        } else {
            [gx as u32, gy as u32, batch as u32]
        };
        Ok(())
    }

    /// Declares `epilogue_(i0, .., i<nb+1>)` running the fused epilogue at one element
    /// of `c`, and returns the call each store makes (empty without an epilogue).
    fn epilogue_fn(
        &mut self,
        epilogue: Option<&LoopKernel>,
        nb: usize,
    ) -> Result<String, WgslError> {
        let mut epi_call = String::new();
        if let Some(e) = epilogue {
            let params: Vec<String> = (0..nb + 2).map(|d| format!("i{d}: i32")).collect();
            let lines = self.expr_lines(e, "  ")?;
            let stores = self.store_lines(e, "  ");
            let _ = writeln!(
                self.decls,
                "fn epilogue_({}) {{\n{lines}{stores}}}",
                params.join(", ")
            );
            let mut args: Vec<String> = (0..nb).map(|d| format!("i{d}")).collect();
            args.extend(["i32(gi)".into(), "i32(gj)".into()]);
            epi_call = format!(" epilogue_({});", args.join(", "));
        }
        Ok(epi_call)
    }

    /// The loop over `k` in steps of 16: stage a 64x16 tile of `a` (read by `ra`) and a
    /// 16x64 tile of `b` (read by `rb`) through workgroup memory, then accumulate 4x4
    /// outputs per invocation in increasing `k`.
    fn tile_loop(&mut self, k0: usize, k1: usize, m1: usize, n1: usize, ra: &str, rb: &str) {
        let t = MATMUL_TILE;
        let body = &mut self.body;
        for r in 0..4 {
            let _ = writeln!(
                body,
                "  var acc{r}0: f32 = 0.0; var acc{r}1: f32 = 0.0; var acc{r}2: f32 = 0.0; var acc{r}3: f32 = 0.0;"
            );
        }
        let _ = writeln!(
            body,
            "  for (var k0: u32 = {k0}u; k0 < {k1}u; k0 = k0 + 16u) {{"
        );
        for q in 0..16 * t / 256 {
            let _ = writeln!(
                body,
                "    {{
      let e = tid + {q}u * 256u;
      let i = e / 16u; let kq = e % 16u;
      let gi = row0 + i; let gk = k0 + kq;
      var v: f32 = 0.0;
      if (gi < {m1}u && gk < {k1}u) {{ v = {ra}; }}
      ta[kq * {t}u + i] = v;
    }}
    {{
      let e = tid + {q}u * 256u;
      let kb = e / {t}u; let j = e % {t}u;
      let gj = col0 + j; let gk = k0 + kb;
      var w: f32 = 0.0;
      if (gj < {n1}u && gk < {k1}u) {{ w = {rb}; }}
      tb[kb * {t}u + j] = w;
    }}"
            );
        }
        let _ = writeln!(
            body,
            "    workgroupBarrier();
    for (var q: u32 = 0u; q < 16u; q = q + 1u) {{
      let ra = q * {t}u + lid.y * 4u;
      let rb = q * {t}u + lid.x * 4u;
      let a0 = ta[ra]; let a1 = ta[ra + 1u]; let a2 = ta[ra + 2u]; let a3 = ta[ra + 3u];
      let b0 = tb[rb]; let b1 = tb[rb + 1u]; let b2 = tb[rb + 2u]; let b3 = tb[rb + 3u];"
        );
        for r in 0..4 {
            let _ = writeln!(
                body,
                "      acc{r}0 = acc{r}0 + a{r} * b0; acc{r}1 = acc{r}1 + a{r} * b1; acc{r}2 = acc{r}2 + a{r} * b2; acc{r}3 = acc{r}3 + a{r} * b3;"
            );
        }
        let _ = writeln!(body, "    }}\n    workgroupBarrier();\n  }}");
    }
}
