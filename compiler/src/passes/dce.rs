//! Dead-code elimination: nodes no output and no update uses are dropped (leaves stay:
//! callers feed them by name, used or not).

use aotgrad_ir::Graph;

pub fn dce(g: &Graph) -> Graph {
    g.prune_unused_from(0)
}
