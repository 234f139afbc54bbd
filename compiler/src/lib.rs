//! aotgrad-compiler
