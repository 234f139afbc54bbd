//! The step's entry function `step(bufs, ctx) -> status`: the kernels in schedule
//! order (loop and row kernels called directly or split over the pool, matmuls and
//! library kernels through the runtime), stopping at the first non-zero status or
//! faulted index check.

use std::collections::HashMap;

use cranelift_codegen::ir::types;
use cranelift_codegen::ir::{
    AbiParam, Block, FuncRef, Function, InstBuilder, MemFlagsData, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

use super::{
    CodegenError, Emitter, Helper, checked_nodes, import, merr, parallel_worthy,
    rows_parallel_worthy, split_len,
};
use crate::program::{Kernel, KernelBody};

/// The values and callees every kernel call of the entry function uses.
struct Entry {
    bufs: Value,
    hctx: Value,
    fail: Block,
    kernel_fn: FuncRef,
    check_fn: FuncRef,
    parallel_fn: FuncRef,
    mark_fn: Option<FuncRef>,
}

impl<M: Module> Emitter<'_, M> {
    /// Defines the entry function calling the kernels of `kernel_ids` and the runtime.
    pub(super) fn entry(
        &mut self,
        kernel_ids: &HashMap<usize, FuncId>,
    ) -> Result<FuncId, CodegenError> {
        let ptr = self.ptr;
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(ptr));
        sig.returns.push(AbiParam::new(types::I32));
        let entry = self
            .module
            .declare_function("step", Linkage::Local, &sig)
            .map_err(|e| merr("step", e))?;
        let mut ctx = self
            .ctx
            .take()
            .unwrap_or_else(|| self.module.make_context());
        ctx.func = Function::with_name_signature(UserFuncName::user(0, entry.as_u32()), sig);
        // Taken out for the builder's lifetime: kernel calls below borrow `self`.
        let mut fctx = std::mem::replace(&mut self.fctx, FunctionBuilderContext::new());
        {
            let mut fb = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let start = fb.create_block();
            fb.append_block_params_for_function_params(start);
            fb.switch_to_block(start);
            let (bufs, hctx) = (fb.block_params(start)[0], fb.block_params(start)[1]);
            let fail = fb.create_block();
            let status = fb.append_block_param(fail, types::I32);
            let mut ids = [
                Helper::Kernel,
                Helper::Check,
                Helper::Parallel,
                Helper::Mark,
            ]
            .map(|h| import(&mut *self.module, &mut self.helpers, h));
            let [kernel_id, check_id, parallel_id, mark_id] = ids.each_mut().map(|r| r.clone());
            let (kernel_id, check_id) = (kernel_id?, check_id?);
            let (parallel_id, mark_id) = (parallel_id?, mark_id?);
            let module = &mut *self.module;
            let kernel_fn = module.declare_func_in_func(kernel_id, fb.func);
            let check_fn = module.declare_func_in_func(check_id, fb.func);
            let parallel_fn = module.declare_func_in_func(parallel_id, fb.func);
            // Declared only when called: an unused import would print in the IR.
            let mark_fn = self
                .opts
                .profile
                .then(|| module.declare_func_in_func(mark_id, fb.func));
            let e = Entry {
                bufs,
                hctx,
                fail,
                kernel_fn,
                check_fn,
                parallel_fn,
                mark_fn,
            };
            for (t, k) in self.p.kernels.iter().enumerate() {
                e.mark(&mut fb, ptr, t);
                let id = kernel_ids.get(&t).copied();
                self.call_kernel(&mut fb, &e, t, k, id);
            }
            e.mark(&mut fb, ptr, self.p.kernels.len());
            let zero = fb.ins().iconst(types::I32, 0);
            fb.ins().return_(&[zero]);
            fb.switch_to_block(fail);
            fb.ins().return_(&[status]);
            fb.seal_all_blocks();
            fb.finalize(self.module.target_config());
        }
        self.fctx = fctx;
        let r = self
            .texts
            .define(&mut *self.module, &mut ctx, entry, "step", "entry");
        self.ctx = Some(ctx);
        r.map(|()| entry)
    }

    /// Kernel `t`: its call (its own function `id`, split over the pool when worth it,
    /// or the runtime), then the checks that stop the step after it.
    fn call_kernel(
        &mut self,
        fb: &mut FunctionBuilder,
        e: &Entry,
        t: usize,
        k: &Kernel,
        id: Option<FuncId>,
    ) {
        let ptr = self.ptr;
        match id {
            Some(id) => {
                let f = self.module.declare_func_in_func(id, fb.func);
                let (n, parallel) = match &k.body {
                    KernelBody::Loop(lk) => (split_len(lk), parallel_worthy(lk)),
                    // Rows are independent (each fills its own reduction outputs),
                    // unless a stage sums across them (never split then).
                    KernelBody::Rows(r) => (r.rows as i64, rows_parallel_worthy(r)),
                    _ => unreachable!("only loop and row kernels have functions"),
                };
                if self.opts.threads > 1 && parallel {
                    // The runtime splits [0, n) over the pool: elementwise kernels
                    // compute each element the same way whichever call does it.
                    let addr = fb.ins().func_addr(ptr, f);
                    let nv = fb.ins().iconst(ptr, n);
                    fb.ins().call(e.parallel_fn, &[e.hctx, addr, e.bufs, nv]);
                } else {
                    let lo = fb.ins().iconst(types::I64, 0);
                    let hi = fb.ins().iconst(types::I64, n);
                    fb.ins().call(f, &[e.bufs, lo, hi]);
                }
            }
            None => e.call_status(fb, ptr, e.kernel_fn, t),
        }
        self.check_faults(fb, e, k);
        if self.opts.check_numerics && self.p.buffer(k.output()).dtype.is_float() {
            e.call_status(fb, ptr, e.check_fn, t);
        }
    }

    /// A kernel that checks indices stops the step when one was out of range, before
    /// any later kernel (an optimizer update) runs. A checked node with no slot was in
    /// a loop with no iterations (nothing was emitted for it, so it cannot have
    /// faulted).
    fn check_faults(&self, fb: &mut FunctionBuilder, e: &Entry, k: &Kernel) {
        let checked: Vec<usize> = checked_nodes(&k.body)
            .into_iter()
            .filter_map(|node| self.faults.iter().position(|f| f.node == node))
            .collect();
        if checked.is_empty() {
            return;
        }
        let table = fb.ins().load(
            self.ptr,
            MemFlagsData::trusted().with_readonly(),
            e.bufs,
            (self.p.buffers.len() * 8) as i32,
        );
        let mut any = fb.ins().iconst(types::I64, 0);
        for slot in checked {
            let flag = fb.ins().load(
                types::I64,
                MemFlagsData::trusted(),
                table,
                (slot * 16) as i32,
            );
            any = fb.ins().bor(any, flag);
        }
        let s = fb.ins().ireduce(types::I32, any);
        let next = fb.create_block();
        fb.ins().brif(s, e.fail, &[s.into()], next, &[]);
        fb.switch_to_block(next);
    }
}

impl Entry {
    /// Calls `f(ctx, t, bufs)` and leaves for the failure block on a non-zero status.
    fn call_status(&self, fb: &mut FunctionBuilder, ptr: types::Type, f: FuncRef, t: usize) {
        let ti = fb.ins().iconst(ptr, t as i64);
        let call = fb.ins().call(f, &[self.hctx, ti, self.bufs]);
        let s = fb.inst_results(call)[0];
        let next = fb.create_block();
        fb.ins().brif(s, self.fail, &[s.into()], next, &[]);
        fb.switch_to_block(next);
    }

    /// With profiling, the runtime's clock before kernel `t`.
    fn mark(&self, fb: &mut FunctionBuilder, ptr: types::Type, t: usize) {
        if let Some(f) = self.mark_fn {
            let ti = fb.ins().iconst(ptr, t as i64);
            fb.ins().call(f, &[self.hctx, ti]);
        }
    }
}
