//! Bad input never crashes: the hardening regressions and bounded fuzzing (random
//! graphs, corrupted files).

mod fuzz;
mod hardening;
