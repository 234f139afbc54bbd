pub use aotgrad_ir as ir;
