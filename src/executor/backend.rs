//! Which backend runs a trainer's programs: the choice a user makes, and the key
//! [`super::for_backend`] builds an executor from.

/// Where compiled programs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter (the oracle every other backend is tested against).
    Interpreter,
    /// Native code: the step JIT-compiled with Cranelift, matmuls on `threads` threads
    /// (results are bitwise the same for any thread count).
    Cpu { threads: usize },
    /// WGSL compute shaders through wgpu (Vulkan, Metal or DX12; Mesa's llvmpipe counts):
    /// parameters and optimizer state stay on the device between steps.
    Gpu,
}

impl Default for Backend {
    fn default() -> Self {
        Backend::Cpu { threads: 1 }
    }
}

impl Backend {
    /// The same backend with `threads` worker threads (no effect on the interpreter).
    pub fn with_threads(self, threads: usize) -> Backend {
        match self {
            Backend::Cpu { .. } => Backend::Cpu {
                threads: threads.max(1),
            },
            b => b,
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "interp" | "interpreter" => Ok(Backend::Interpreter),
            "cpu" => Ok(Backend::Cpu { threads: 1 }),
            "gpu" => Ok(Backend::Gpu),
            _ => Err(format!("unknown backend {s:?} (cpu, gpu, interp)")),
        }
    }
}
