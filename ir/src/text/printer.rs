//! Graph to text.

use std::fmt::Write;

use crate::op::attrs::const_text;
use crate::{Graph, Op};

/// Quotes a name with `\"` and `\\` escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The canonical text of a graph. Byte-stable: it depends only on the graph.
pub fn print(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {} {{", g.name);
    for (id, node) in g.nodes() {
        let _ = write!(s, "  {id}: {} = {}", node.ty, node.op.name());
        match &node.op {
            Op::Input { name, .. } | Op::Param { name, .. } | Op::State { name, .. } => {
                let _ = write!(s, " {}", quote(name));
            }
            Op::Const { value, .. } => {
                let _ = write!(s, " {}", const_text(value));
            }
            _ => {
                for (i, x) in node.inputs.iter().enumerate() {
                    s.push_str(if i == 0 { " " } else { ", " });
                    let _ = write!(s, "{x}");
                }
            }
        }
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            s.push_str(" {");
            for (i, (k, v)) in attrs.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{k}={v}");
            }
            s.push('}');
        }
        s.push('\n');
    }
    for (name, id) in g.outputs() {
        let _ = writeln!(s, "  output {} = {id}", quote(name));
    }
    for (t, v) in g.updates() {
        let name = g.node(*t).op.leaf_name().unwrap_or("?");
        let _ = writeln!(s, "  update {} = {v}", quote(name));
    }
    s.push_str("}\n");
    s
}
