//! The wgpu device, and the device-resident tensors (parameters and optimizer state)
//! that persist across calls.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use aotgrad_ir::{DType, Data};

use crate::{RunError, Tensor};

/// The adapter, device and queue every GPU program of the process shares.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    info: wgpu::AdapterInfo,
}

impl GpuContext {
    /// The adapter's name, API and kind, saying so when it is a software renderer:
    /// `llvmpipe (LLVM 15.0.6, 256 bits) via Vulkan, a software renderer on the CPU`.
    pub fn describe(&self) -> String {
        let kind = match self.info.device_type {
            wgpu::DeviceType::Cpu => ", a software renderer on the CPU (no GPU: expect CPU speed)",
            wgpu::DeviceType::DiscreteGpu => ", a discrete GPU",
            wgpu::DeviceType::IntegratedGpu => ", an integrated GPU",
            wgpu::DeviceType::VirtualGpu => ", a virtual GPU",
            wgpu::DeviceType::Other => "",
        };
        format!("{} via {:?}{kind}", self.info.name, self.info.backend)
    }

    /// Whether the adapter is a software renderer (Mesa's llvmpipe, SwiftShader).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Runs `f` inside a validation error scope and turns a captured wgpu error into a
    /// [`RunError::Gpu`] that says what was being done.
    pub(crate) fn checked<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T, RunError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        match pollster::block_on(scope.pop()) {
            None => Ok(out),
            Some(e) => Err(RunError::Gpu(format!("{what}: {e}"))),
        }
    }

    /// Blocks until the queue is idle.
    pub(crate) fn wait(&self) -> Result<(), RunError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| RunError::Gpu(format!("waiting for the device: {e}")))
    }

    pub(crate) fn storage(&self, label: &str, words: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (words.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Copies `ranges` (buffer, first word, word count) into one mappable buffer with
    /// one submission and returns each range's words.
    pub(crate) fn read_words(
        &self,
        ranges: &[(&wgpu::Buffer, usize, usize)],
        encoder: Option<wgpu::CommandEncoder>,
    ) -> Result<Vec<Vec<u32>>, RunError> {
        let total: usize = ranges.iter().map(|r| r.2).sum();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("aotgrad read-back"),
            size: (total.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = encoder.unwrap_or_else(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        let mut at = 0u64;
        for &(b, first, n) in ranges {
            if n > 0 {
                encoder.copy_buffer_to_buffer(b, (first * 4) as u64, &staging, at, (n * 4) as u64);
            }
            at += (n * 4) as u64;
        }
        self.checked("submitting the step", || {
            self.queue.submit([encoder.finish()]);
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| RunError::Gpu("the read-back was dropped".into()))?
            .map_err(|e| RunError::Gpu(format!("mapping the read-back: {e}")))?;
        let words: Vec<u32> = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| RunError::Gpu(format!("reading the read-back: {e}")))?;
            view.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        staging.unmap();
        let mut out = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for r in ranges {
            out.push(words[at..at + r.2].to_vec());
            at += r.2;
        }
        Ok(out)
    }
}

/// The shared GPU context: the first call requests the adapter (the highest-performance
/// one wgpu finds; `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` choose another) and device.
pub fn context() -> Result<Arc<GpuContext>, RunError> {
    static CONTEXT: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| open().map(Arc::new))
        .clone()
        .map_err(RunError::NoDevice)
}

fn open() -> Result<GpuContext, String> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| {
        format!(
            "{e} (on Linux without a GPU, install Mesa's software Vulkan driver: apt-get install \
             mesa-vulkan-drivers libvulkan1)"
        )
    })?;
    let limits = adapter.limits();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("aotgrad"),
        required_features: wgpu::Features::empty(),
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| format!("requesting a device: {e}"))?;
    // Every call is inside an error scope; anything else is reported, not a panic.
    device.on_uncaptured_error(Arc::new(|e| {
        eprintln!("aotgrad: uncaptured wgpu error: {e}")
    }));
    Ok(GpuContext {
        device,
        queue,
        limits,
        info: adapter.get_info(),
    })
}

/// Encodes a host tensor as device words (see `aotgrad_compiler::codegen::wgsl`).
pub(crate) fn to_words(name: &str, t: &Tensor) -> Result<Vec<u32>, RunError> {
    let bad = |value: i64| RunError::NotI32 {
        name: name.to_string(),
        value,
    };
    Ok(match t.data() {
        Data::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        Data::F64(v) => v.iter().map(|&x| (x as f32).to_bits()).collect(),
        Data::I32(v) => v.iter().map(|&x| x as u32).collect(),
        Data::I64(v) => v
            .iter()
            .map(|&x| i32::try_from(x).map(|x| x as u32).map_err(|_| bad(x)))
            .collect::<Result<_, _>>()?,
        Data::U8(v) => v.iter().map(|&x| x as u32).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u32).collect(),
    })
}

/// Decodes device words into a host tensor of `dtype` and `shape`.
pub(crate) fn from_words(words: &[u32], dtype: DType, shape: &[usize]) -> Tensor {
    let data = match dtype {
        DType::F32 => Data::F32(words.iter().map(|&w| f32::from_bits(w)).collect()),
        DType::F64 => Data::F64(words.iter().map(|&w| f32::from_bits(w) as f64).collect()),
        DType::I32 => Data::I32(words.iter().map(|&w| w as i32).collect()),
        DType::I64 => Data::I64(words.iter().map(|&w| w as i32 as i64).collect()),
        DType::U8 => Data::U8(words.iter().map(|&w| w as u8).collect()),
        DType::Bool => Data::Bool(words.iter().map(|&w| w != 0).collect()),
    };
    Tensor::new(shape, data).expect("the word count is the shape's element count")
}

/// A tensor that lives in device memory.
pub struct DeviceTensor {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
}

/// Named device-resident tensors: parameters and optimizer state stay here across
/// calls and are read back only when asked ([`DeviceStore::download`]).
pub struct DeviceStore {
    pub(crate) ctx: Arc<GpuContext>,
    pub(crate) tensors: HashMap<String, DeviceTensor>,
    /// Bumped whenever a tensor gets a new device buffer (programs rebuild their bind
    /// groups then).
    pub(crate) generation: u64,
}

impl DeviceStore {
    pub fn new() -> Result<DeviceStore, RunError> {
        Ok(DeviceStore {
            ctx: context()?,
            tensors: HashMap::new(),
            generation: 0,
        })
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Copies `t` to the device as `name` (reusing its buffer when the type matches).
    pub fn upload(&mut self, name: &str, t: &Tensor) -> Result<(), RunError> {
        let words = to_words(name, t)?;
        let reuse = self
            .tensors
            .get(name)
            .is_some_and(|d| d.dtype == t.dtype() && d.shape == t.shape());
        if !reuse {
            let buffer = self.ctx.storage(name, words.len());
            self.tensors.insert(
                name.to_string(),
                DeviceTensor {
                    buffer,
                    dtype: t.dtype(),
                    shape: t.shape().to_vec(),
                },
            );
            self.generation += 1;
        }
        if !words.is_empty() {
            let d = &self.tensors[name];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.ctx.checked(&format!("uploading {name:?}"), || {
                self.ctx.queue.write_buffer(&d.buffer, 0, &bytes)
            })?;
        }
        Ok(())
    }

    /// Reads the named tensors back to the host in one submission.
    pub fn download(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, RunError> {
        let mut ranges = Vec::new();
        for n in names {
            let d = self.tensors.get(*n).ok_or_else(|| RunError::Unknown {
                name: n.to_string(),
            })?;
            ranges.push((&d.buffer, 0, d.shape.iter().product::<usize>()));
        }
        let words = self.ctx.read_words(&ranges, None)?;
        Ok(names
            .iter()
            .zip(words)
            .map(|(n, w)| {
                let d = &self.tensors[*n];
                (n.to_string(), from_words(&w, d.dtype, &d.shape))
            })
            .collect())
    }

    /// The dtype and shape of a stored tensor.
    pub fn ty(&self, name: &str) -> Option<(DType, &[usize])> {
        self.tensors
            .get(name)
            .map(|d| (d.dtype, d.shape.as_slice()))
    }
}
