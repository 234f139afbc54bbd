//! The text format: one SSA node per line, exact print/parse round trip.
//!
//! ```text
//! # comments start with `#` or `//`
//! graph linreg {
//!   %0: f32[N,1] = input "x"
//!   %1: f32[1,1] = param "linear.weight"
//!   %2: f32[N,1] = matmul %0, %1 {trans_b=true}
//!   output "y" = %2
//!   update "linear.weight" = %1
//! }
//! ```
//!
//! Nodes are numbered by arena index, so printing is deterministic and stable.

mod lexer;
mod parser;
mod printer;

pub use parser::{ParseError, parse};
pub use printer::print;
