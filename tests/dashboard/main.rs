//! The live dashboard: its server's security (only its own routes, bounded requests,
//! loopback or a token, stalled and departed clients), the examples' `--dashboard`, the
//! finished-run viewer `aotgrad dashboard DIR...`, the page in a real browser, and the
//! TensorBoard images and histograms read back by TensorBoard's own reader.

mod browser;
mod examples;
mod finished_runs;
mod net;
mod server;
mod tensorboard;
