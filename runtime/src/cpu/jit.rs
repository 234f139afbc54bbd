//! Setting up a variant for the JIT: the Cranelift module for this host, and the
//! buffer table the generated code indexes.

use super::*;

/// A JIT module for this host: Cranelift optimising for speed, absolute addresses, and
/// every runtime helper (`abi::symbols`) resolvable by name.
pub(super) fn jit_module() -> Result<JITModule, RunError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| RunError::Jit {
            stage: "setting a Cranelift flag",
            message: format!("{k}={v}: {e}"),
        })
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| RunError::Jit {
            stage: "finding the host ISA",
            message: e.to_string(),
        })?
        .finish(settings::Flags::new(flags))
        .map_err(|e| RunError::Jit {
            stage: "building the ISA",
            message: e.to_string(),
        })?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for (name, ptr) in abi::symbols() {
        jb.symbol(&name, ptr);
    }
    Ok(JITModule::new(jb))
}

/// The buffer table of a program as the generated code indexes it: arena buffers at
/// their planned offsets in one cache-line-aligned arena, constants in stores of their
/// own; inputs and persistent tensors are pointed at per call (and spans of the
/// parameter arena, returned by name, per call too).
#[allow(clippy::type_complexity)] // the four parts a variant keeps
pub(super) fn buffer_table(
    program: &Program,
) -> (
    Vec<Line>,
    Vec<Vec<Line>>,
    Vec<*mut u8>,
    Vec<(usize, Vec<String>)>,
) {
    let mut arena = lines(program.arena_bytes);
    let mut consts = Vec::new();
    let mut table = vec![std::ptr::null_mut::<u8>(); program.buffers.len()];
    let mut spans = Vec::new();
    let base = arena.as_mut_ptr() as *mut u8;
    for (i, b) in program.buffers.iter().enumerate() {
        match &b.kind {
            BufferKind::Arena { offset } => {
                // `wrapping_add` keeps this a plain address computation; the offset is
                // inside the arena by construction of the plan.
                table[i] = base.wrapping_add(*offset);
            }
            BufferKind::Const(data) => {
                let t = Tensor::new(&[data.len()], data.clone()).expect("dense");
                let mut store = lines(b.bytes());
                let ptr = store.as_mut_ptr() as *mut u8;
                // SAFETY: `store` has room for `b.bytes()` bytes.
                unsafe { abi::write_dense(ptr, &t) };
                table[i] = ptr;
                consts.push(store);
            }
            BufferKind::PersistentSpan(names) => spans.push((i, names.clone())),
            BufferKind::Input(_) | BufferKind::Persistent(_) => {}
        }
    }
    (arena, consts, table, spans)
}
