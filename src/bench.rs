//! Training-step benchmarks with the same model names, shapes and optimizers as
//! `tools/torch_ref.py` (`../shared/bench/torch_ref.py` with the sequence models
//! added), so the two can run side by side (`aotgrad bench`, `cargo bench`).

use std::time::Instant;

use crate::data::Rng;
use crate::nn::Reduction;
use crate::nn::module::{Linear, ReLU, Sequential, Sigmoid};
use crate::optim::Optimizer;
use crate::train::{Backend, Batch, Loss, Trainer};
use aotgrad_ir::DType;
use aotgrad_runtime::Tensor;

/// Model names `tools/torch_ref.py` knows (the sequence models only there, not in
/// the shared copy it extends).
pub const MODELS: &[&str] = &[
    "linreg",
    "logreg",
    "mlp_mse_sgdm",
    "mlp_ce_adam64",
    "mlp_ce_adam512",
    "lenet",
    "wide_adam",
    "char_lstm",
    "gpt",
];

/// Data-free steps of 0-d graphs (not in `torch_ref.py`): what the per-call overhead
/// of a compiled step is measured on. `himmelblau` is two scalar parameters, the
/// Himmelblau function and SGD, as in `examples/himmelblau.rs`.
pub const SCALAR_MODELS: &[&str] = &["himmelblau"];

/// The data-free trainer of a [`SCALAR_MODELS`] entry.
pub fn setup_scalar(model: &str) -> Result<Trainer, String> {
    match model {
        "himmelblau" => Ok(Trainer::minimize(
            |s| {
                let x = s.param("x", &[], crate::nn::Init::Constant(0.0));
                let y = s.param("y", &[], crate::nn::Init::Constant(0.0));
                (x * x + y - 11.0).square() + (x + y * y - 7.0).square()
            },
            Optimizer::sgd(0.001),
        )
        .name("himmelblau")),
        _ => Err(format!(
            "unknown scalar model {model:?} (known: {})",
            SCALAR_MODELS.join(", ")
        )),
    }
}

/// One benchmark's result (the JSON keys of `aotgrad bench --json`).
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub model: String,
    pub backend: String,
    pub batch: usize,
    pub threads: usize,
    pub params: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub steps: usize,
    pub samples_per_s: f64,
    /// Tracing, autodiff, lowering, code generation and JIT: from nothing to the end of
    /// the first step, minus one median step.
    pub compile_ms: f64,
    pub peak_rss_mb: f64,
    /// With [`BenchOptions::profile`] on the CPU backend: where a step's time goes,
    /// kernel by kernel ([`profile_table`]).
    pub profile: Option<String>,
    /// With a profile: the GEMM rate per thread of the step's products, in GFLOP/s
    /// (`KernelProfile::gemm_gflops`), and one core's f32 FMA peak measured right after
    /// the timed steps ([`aotgrad_runtime::cpu::fma_peak_gflops`]).
    pub gemm_gflops: Option<f64>,
    pub fma_peak_gflops: Option<f64>,
    /// With a profile: how long one step's products alone would take at that peak on
    /// every thread (their operations over `threads x fma_peak_gflops`), in ms. No
    /// implementation of these products can beat it on this machine, so `median_ms`
    /// over it bounds how much faster the step could get.
    pub products_floor_ms: Option<f64>,
}

impl BenchResult {
    pub fn to_json(&self) -> String {
        let mut rates = String::new();
        if let Some(g) = self.gemm_gflops {
            rates.push_str(&format!(", \"gemm_gflops\": {g:.2}"));
        }
        if let Some(p) = self.fma_peak_gflops {
            rates.push_str(&format!(", \"fma_peak_gflops\": {p:.2}"));
        }
        if let Some(f) = self.products_floor_ms {
            rates.push_str(&format!(", \"products_floor_ms\": {f:.6}"));
        }
        format!(
            "{{\"model\": \"{}\", \"backend\": \"{}\", \"batch\": {}, \"threads\": {}, \"params\": {}, \
             \"median_ms\": {:.6}, \"min_ms\": {:.6}, \"max_ms\": {:.6}, \"steps\": {}, \
             \"samples_per_s\": {:.1}, \"compile_ms\": {:.2}, \"peak_rss_mb\": {:.1}{rates}}}",
            self.model,
            self.backend,
            self.batch,
            self.threads,
            self.params,
            self.median_ms,
            self.min_ms,
            self.max_ms,
            self.steps,
            self.samples_per_s,
            self.compile_ms,
            self.peak_rss_mb
        )
    }
}

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    pub warmup: usize,
    pub min_steps: usize,
    pub max_steps: usize,
    pub max_time_s: f64,
    /// Time every kernel of the CPU step too ([`Trainer::profile`]).
    pub profile: bool,
    /// In a group: [`Trainer::bucket_bytes`] (DDP's 25 MiB if `None`).
    pub bucket_bytes: Option<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 5,
            min_steps: 20,
            max_steps: 2000,
            max_time_s: 3.0,
            profile: false,
            bucket_bytes: None,
        }
    }
}

fn mlp(dims: [usize; 4]) -> Sequential {
    Sequential::new()
        .push(Linear::new(dims[0], dims[1]))
        .push(ReLU)
        .push(Linear::new(dims[1], dims[2]))
        .push(ReLU)
        .push(Linear::new(dims[2], dims[3]))
}

/// The trainer and a fixed synthetic batch of `model`.
pub fn setup(model: &str) -> Result<(Trainer, Batch), String> {
    let mut rng = Rng::new(0);
    let mut normal = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // Irwin-Hall approximation of a standard normal: enough for timing.
                (0..12)
                    .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
                    .sum::<f64>() as f32
                    - 6.0
            })
            .collect()
    };
    let f32s = |v: Vec<f32>, shape: &[usize]| Tensor::from_f32(&v, shape).expect("sized");
    let (trainer, batch) = match model {
        "linreg" => {
            let x = f32s(normal(100), &[100, 1]);
            let y = f32s(normal(100), &[100, 1]);
            let t = Trainer::new(
                Linear::new(1, 1),
                Loss::mse(Reduction::Mean),
                Optimizer::sgd(0.01),
            )
            .input(DType::F32, &[1])
            .target(DType::F32, &[1]);
            (t, Batch { x, y })
        }
        "logreg" => {
            let x = f32s(normal(32 * 8), &[32, 8]);
            let y: Vec<f32> = (0..32).map(|i| (i % 2) as f32).collect();
            let net = Sequential::new()
                .push(Linear::new(8, 6))
                .push(Sigmoid)
                .push(Linear::new(6, 4))
                .push(Sigmoid)
                .push(Linear::new(4, 1))
                .push(Sigmoid);
            let t = Trainer::new(net, Loss::bce(Reduction::Mean), Optimizer::sgd(0.1))
                .input(DType::F32, &[8])
                .target(DType::F32, &[1]);
            (
                t,
                Batch {
                    x,
                    y: f32s(y, &[32, 1]),
                },
            )
        }
        "mlp_mse_sgdm" | "mlp_ce_adam64" | "mlp_ce_adam512" | "wide_adam" => {
            let (dims, b) = match model {
                "wide_adam" => ([784, 1024, 1024, 10], 256),
                "mlp_mse_sgdm" | "mlp_ce_adam512" => ([784, 256, 64, 10], 512),
                _ => ([784, 256, 64, 10], 64),
            };
            let x = f32s(normal(b * 784), &[b, 784]);
            let labels: Vec<i64> = (0..b as i64).map(|i| (i * 7) % 10).collect();
            let y = Tensor::from_i64(&labels, &[b]).expect("sized");
            let (loss, optim) = if model == "mlp_mse_sgdm" {
                (
                    Loss::mse_one_hot(10, Reduction::Mean),
                    Optimizer::sgd_momentum(0.01, 0.9),
                )
            } else {
                (Loss::cross_entropy(), Optimizer::adam(1e-3))
            };
            let t = Trainer::new(mlp(dims), loss, optim)
                .input(DType::F32, &[784])
                .target(DType::I64, &[]);
            (t, Batch { x, y })
        }
        "lenet" => {
            let b = 64;
            let mut uniform = Rng::new(1);
            let x: Vec<f32> = (0..b * 784)
                .map(|_| (uniform.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
                .collect();
            let labels: Vec<i64> = (0..b as i64).map(|i| (i * 7) % 10).collect();
            let t = Trainer::new(
                crate::nn::models::lenet(),
                Loss::cross_entropy(),
                Optimizer::sgd_momentum(0.01, 0.5),
            )
            .input(DType::F32, &[1, 28, 28])
            .target(DType::I64, &[]);
            (
                t,
                Batch {
                    x: f32s(x, &[b, 1, 28, 28]),
                    y: Tensor::from_i64(&labels, &[b]).expect("sized"),
                },
            )
        }
        // The examples' trainers (tools/torch_ref.py builds the same in PyTorch) on
        // the first training windows of the bundled corpus.
        "char_lstm" | "gpt" => {
            use crate::data::text::{CharCorpus, Part};
            use crate::train::recipes::{char_lstm_trainer, gpt_trainer};
            let corpus = CharCorpus::bundled().map_err(|e| e.to_string())?;
            let vocab = corpus.vocab_size();
            let (t, b, block) = if model == "char_lstm" {
                (char_lstm_trainer(vocab, 2e-3, 1.0), 32, 64)
            } else {
                let cfg = crate::nn::GptConfig::small(vocab);
                let block = cfg.block_size;
                (gpt_trainer(cfg, 1e-3, 100, 2000), 16, block)
            };
            let batch = corpus
                .windows(Part::Train, b, block, 0, 0)
                .map_err(|e| e.to_string())?;
            let t = t.input(DType::I64, &[block]).target(DType::I64, &[block]);
            (t, batch)
        }
        other => {
            return Err(format!(
                "unknown model {other:?} (one of {}, {})",
                MODELS.join(", "),
                SCALAR_MODELS.join(", ")
            ));
        }
    };
    Ok((trainer.name(model), batch))
}

/// A kernel profile as a table, slowest kernel first: each kernel's share of the step,
/// its mean time per call, for a matrix product the GEMM rate per thread (its
/// operations over the time its GEMM calls took, epilogue excluded, summed over the
/// threads that ran its tiles), and its line of the lowered program `program` (what it
/// is, over which shape, reading and writing which buffers).
pub fn profile_table(program: &str, p: &aotgrad_runtime::cpu::KernelProfile) -> String {
    let calls = p.calls.max(1) as f64;
    let total: f64 = p.kernels.iter().map(|d| d.as_secs_f64()).sum();
    let mut rows: Vec<(usize, f64)> = p
        .kernels
        .iter()
        .map(|d| d.as_secs_f64())
        .enumerate()
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = format!(
        "kernel |  share | ms/step | GEMM GF/s | ({} calls, {:.4} ms/step in kernels)\n",
        p.calls,
        total * 1e3 / calls
    );
    for (k, t) in rows {
        let tag = format!("  k{k}: ");
        let line = program
            .lines()
            .find_map(|l| l.strip_prefix(&tag))
            .unwrap_or("");
        let line: String = line.chars().take(100).collect();
        let rate = p
            .kernel_gemm_gflops(k)
            .map_or_else(|| " ".repeat(9), |g| format!("{g:9.1}"));
        out.push_str(&format!(
            "k{k:<5} | {:5.1}% | {:7.4} | {rate} | {line}\n",
            100.0 * t / total.max(f64::MIN_POSITIVE),
            t * 1e3 / calls
        ));
    }
    out
}

/// The lines under a profile: the step's GEMM rate against the FMA peak measured in
/// the same run (`gemm` and `peak` in GFLOP/s per core), then the products' floor
/// (`floor` ms: their `flops` per step at that peak on `threads` cores, see
/// [`products_floor_ms`]) against the median step.
pub fn gemm_summary(
    gemm: f64,
    peak: f64,
    flops: u64,
    threads: usize,
    floor: f64,
    median_ms: f64,
) -> String {
    format!(
        "GEMM: {gemm:.1} GFLOP/s per thread over all products = {:.0}% of one core's f32 FMA \
         peak measured now ({peak:.1} GFLOP/s)\n\
         Products: {:.1} MFLOP per step; at that peak on {threads} thread(s) they alone would \
         take {floor:.4} ms = {:.0}% of the median step\n",
        100.0 * gemm / peak.max(f64::MIN_POSITIVE),
        flops as f64 / 1e6,
        100.0 * floor / median_ms.max(f64::MIN_POSITIVE),
    )
}

/// Milliseconds that `flops` operations take at `peak` GFLOP/s on each of `threads`
/// cores.
pub fn products_floor_ms(flops: u64, peak: f64, threads: usize) -> f64 {
    flops as f64 / (peak.max(f64::MIN_POSITIVE) * 1e9 * threads.max(1) as f64) * 1e3
}

/// Peak resident set size of this process in MiB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The trainer of any bench model, with its batch (`None` for the data-free
/// [`SCALAR_MODELS`]).
pub fn setup_any(model: &str) -> Result<(Trainer, Option<Batch>), String> {
    if SCALAR_MODELS.contains(&model) {
        Ok((setup_scalar(model)?, None))
    } else {
        setup(model).map(|(t, b)| (t, Some(b)))
    }
}

/// Times the compiled training step of `model` on `backend`.
pub fn run(model: &str, backend: Backend, opts: BenchOptions) -> Result<BenchResult, String> {
    run_in_group(model, backend, opts, None)
}

/// [`run`] as one rank of a data-parallel group (`aotgrad bench --distributed` under
/// `mpirun`, as `torch_ddp_ref.py` measures DDP): every rank trains on its own copy of
/// the model's batch, the ranks meet before every timed step, and the result is the
/// slowest rank's median step, with samples/s counting every rank's batch.
pub fn run_in_group(
    model: &str,
    backend: Backend,
    opts: BenchOptions,
    group: Option<std::sync::Arc<dyn aotgrad_runtime::collective::Communicator>>,
) -> Result<BenchResult, String> {
    let t0 = Instant::now();
    let (mut trainer, batch) = setup_any(model)?;
    if let Some(g) = &group {
        trainer = trainer.data_parallel(g.clone());
        if let Some(b) = opts.bucket_bytes {
            trainer = trainer.bucket_bytes(b);
        }
    }
    let world = group.as_ref().map_or(1, |g| g.world());
    let barrier = || -> Result<(), String> {
        if let Some(g) = &group {
            let mut token = aotgrad_ir::Data::U8(vec![0]);
            g.all_reduce_sum(&mut token).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    let mut step = trainer
        .profile(opts.profile)
        .compile(&backend)
        .map_err(|e| e.to_string())?;
    let one = |step: &mut crate::train::TrainStep| match &batch {
        Some(b) => step.run(b).map_err(|e| e.to_string()),
        None => step.step().map_err(|e| e.to_string()),
    };
    one(&mut step)?;
    let first = t0.elapsed().as_secs_f64() * 1e3;
    for _ in 0..opts.warmup {
        one(&mut step)?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    loop {
        barrier()?;
        let t = Instant::now();
        one(&mut step)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let mut more = times.len() < opts.max_steps
            && (times.len() < opts.min_steps || start.elapsed().as_secs_f64() < opts.max_time_s);
        // In a group rank 0's clock decides for every rank: each must run as many
        // steps (a rank that stopped on its own clock would leave the others waiting
        // in a reduction, or pair their collectives wrongly).
        if let Some(g) = &group {
            let mine = if g.rank() == 0 {
                f64::from(u8::from(more))
            } else {
                0.0
            };
            let mut go = aotgrad_ir::Data::F64(vec![mine]);
            g.all_reduce_sum(&mut go).map_err(|e| e.to_string())?;
            more = go != aotgrad_ir::Data::F64(vec![0.0]);
        }
        if !more {
            break;
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mut median = sorted[sorted.len() / 2];
    if let Some(g) = &group {
        // The slowest rank's median, as torch_ddp_ref.py reports.
        let all = g
            .all_gather(&median.to_le_bytes())
            .map_err(|e| e.to_string())?;
        median = all
            .iter()
            .filter_map(|b| Some(f64::from_le_bytes(b.as_slice().try_into().ok()?)))
            .fold(median, f64::max);
    }
    let b = batch.as_ref().map_or(1, |b| b.x.shape()[0]);
    // Before `parameters()`, which reads the weights back out of the CPU arena into
    // a host copy that the training itself never holds.
    let peak_rss_mb = peak_rss_mb();
    let profile = step.kernel_profile(crate::executor::ProgramKind::Step);
    let gemm_gflops = profile.as_ref().and_then(|(_, p)| p.gemm_gflops());
    // Measured now, after the steps, so that both rates come from the same phase of
    // a machine whose speed drifts.
    let fma_peak_gflops = gemm_gflops
        .map(|_| aotgrad_runtime::cpu::fma_peak_gflops(std::time::Duration::from_millis(200)));
    let (name, threads) = match backend {
        Backend::Interpreter => ("interp", 1),
        Backend::Cpu { threads } => ("cpu", threads),
        Backend::Gpu => ("gpu", 1),
    };
    let floor = profile
        .as_ref()
        .zip(fma_peak_gflops)
        .map(|((_, p), peak)| products_floor_ms(p.step_flops(), peak, threads));
    Ok(BenchResult {
        model: model.to_string(),
        backend: name.to_string(),
        batch: b,
        threads,
        params: step.parameters().iter().map(|(_, t)| t.len()).sum(),
        median_ms: median,
        min_ms: sorted[0],
        max_ms: sorted[sorted.len() - 1],
        steps: times.len(),
        samples_per_s: (world * b) as f64 / (median / 1e3),
        compile_ms: (first - median).max(0.0),
        peak_rss_mb,
        products_floor_ms: floor,
        profile: profile.map(|(program, p)| {
            let mut table = profile_table(&program, &p);
            if let (Some(g), Some(peak), Some(floor)) = (gemm_gflops, fma_peak_gflops, floor) {
                let flops = p.step_flops();
                table.push_str(&gemm_summary(g, peak, flops, threads, floor, median));
            }
            table
        }),
        gemm_gflops,
        fma_peak_gflops,
    })
}

#[cfg(test)]
mod tests {
    use super::products_floor_ms;

    #[test]
    fn the_products_floor_is_their_operations_at_the_peak_on_every_thread() {
        // 2 GFLOP at 100 GFLOP/s: 20 ms on one core, 10 on two.
        assert!((products_floor_ms(2_000_000_000, 100.0, 1) - 20.0).abs() < 1e-9);
        assert!((products_floor_ms(2_000_000_000, 100.0, 2) - 10.0).abs() < 1e-9);
    }
}
