use aotgrad::data::text::{CharCorpus, Part};
use aotgrad::nn::{CharLstm, Gpt, GptConfig};
use aotgrad::prelude::*;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let which = std::env::args().nth(1).unwrap_or("lstm".into());
    let backend: Backend = std::env::args().nth(2).unwrap_or("cpu".into()).parse()?;
    let corpus = CharCorpus::bundled()?;
    let v = corpus.vocab_size();
    let (trainer, b, t) = if which == "lstm" {
        (
            Trainer::new(
                CharLstm::new(v),
                Loss::token_cross_entropy(),
                Optimizer::adam(2e-3),
            )
            .clip_grad_norm(1.0),
            32,
            64,
        )
    } else {
        (
            Trainer::new(
                Gpt(GptConfig::small(v)),
                Loss::token_cross_entropy(),
                Optimizer::adamw(1e-3, 0.1),
            )
            .clip_grad_norm(1.0),
            16,
            128,
        )
    };
    let trainer = trainer.profile(std::env::var("PROFILE").is_ok());
    let t0 = Instant::now();
    let mut step = trainer
        .input(DType::I64, &[t])
        .target(DType::I64, &[t])
        .compile(&backend)?;
    println!(
        "compile {:.1} ms, {} nodes, opt {} nodes",
        t0.elapsed().as_secs_f64() * 1e3,
        step.step_graph().len(),
        step.optimized_step_graph().len()
    );
    let n: u64 = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    for i in 0..n {
        let batch = corpus.windows(Part::Train, b, t, 0, i)?;
        let t1 = Instant::now();
        let loss = step.run(&batch)?;
        println!(
            "step {i} loss {loss:.5} {:.1} ms",
            t1.elapsed().as_secs_f64() * 1e3
        );
    }
    if let Some((prog, p)) = step.kernel_profile(aotgrad::executor::ProgramKind::Step) {
        let t = aotgrad::bench::profile_table(&prog, &p);
        std::fs::write("/tmp/probe/profile.txt", &t)?;
        for l in t.lines().take(40) {
            println!("{l}");
        }
        std::fs::write("/tmp/probe/program.txt", prog)?;
        std::fs::write(
            "/tmp/probe/opt.txt",
            aotgrad::text::print(step.optimized_step_graph()),
        )?;
    }
    Ok(())
}
