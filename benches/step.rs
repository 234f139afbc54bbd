//! `cargo bench`: the compiled training step of every reference model on the CPU
//! backend with 1 and 2 threads, as JSON lines (the same numbers as `aotgrad bench`).
//! Arguments filter the models: `cargo bench -- mlp_ce_adam64`.

use aotgrad::bench::{self, BenchOptions, MODELS};
use aotgrad::train::Backend;

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for model in MODELS {
        if !filter.is_empty() && !filter.iter().any(|f| model.contains(f.as_str())) {
            continue;
        }
        for threads in [1, 2] {
            match bench::run(model, Backend::Cpu { threads }, BenchOptions::default()) {
                Ok(r) => println!("{}", r.to_json()),
                Err(e) => eprintln!("{model}: {e}"),
            }
        }
    }
}
