//! aotgrad-runtime
