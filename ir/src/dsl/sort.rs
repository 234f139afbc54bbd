//! Order statistics: `topk`, `sort`, `kthvalue`. One primitive ([`Op::TopK`], the
//! positions in a total order) and a `gather` for the values, so the values'
//! gradient is the gather's.

use std::panic::Location;

use super::Var;
use crate::{BuildErrorKind, Op, OpError};

type Loc = &'static Location<'static>;

impl<'g> Var<'g> {
    fn top_k(self, loc: Loc, name: &str, k: usize, axis: i64, largest: bool) -> (Var<'g>, Var<'g>) {
        let Some(a) = self.axis(loc, name, axis) else {
            return (self.b.poison(), self.b.poison());
        };
        let idx = self.prim(
            loc,
            name,
            Op::TopK {
                axis: a,
                k,
                largest,
            },
            &[],
        );
        if idx.is_poisoned() {
            return (idx, idx);
        }
        (self.prim(loc, name, Op::Gather { axis: a }, &[idx]), idx)
    }

    /// The length of `axis`, which must be known (sort and kthvalue need it).
    fn known_len(self, loc: Loc, name: &'static str, axis: i64) -> Option<(usize, usize)> {
        let a = self.axis(loc, name, axis)?;
        match self.shape().0[a].known() {
            Some(n) => Some((a, n)),
            None => {
                self.fail(
                    loc,
                    name,
                    OpError::SymbolicDim {
                        op: name,
                        dim: a,
                        ty: self.ty(),
                    },
                );
                None
            }
        }
    }

    /// `torch.topk(x, k, axis, largest)`: the `k` largest (or smallest) values along
    /// `axis`, in order, and their i64 positions. Ties keep position order; NaN is
    /// above every number.
    #[track_caller]
    pub fn topk(self, k: usize, axis: i64, largest: bool) -> (Var<'g>, Var<'g>) {
        self.top_k(Location::caller(), "topk", k, axis, largest)
    }

    /// `torch.sort(x, axis, descending, stable=True)`: values and positions.
    #[track_caller]
    pub fn sort(self, axis: i64, descending: bool) -> (Var<'g>, Var<'g>) {
        let loc = Location::caller();
        let Some((a, n)) = self.known_len(loc, "sort", axis) else {
            return (self.b.poison(), self.b.poison());
        };
        self.top_k(loc, "sort", n, a as i64, descending)
    }

    /// `torch.kthvalue(x, k, axis, keepdim)`: the `k`-th smallest value along `axis`
    /// (`k` from 1, as PyTorch) and its position.
    #[track_caller]
    pub fn kthvalue(self, k: usize, axis: i64, keepdim: bool) -> (Var<'g>, Var<'g>) {
        let loc = Location::caller();
        let Some((a, n)) = self.known_len(loc, "kthvalue", axis) else {
            return (self.b.poison(), self.b.poison());
        };
        if k == 0 || k > n {
            let p = self.fail(
                loc,
                "kthvalue",
                BuildErrorKind::Usage(format!(
                    "k = {k} is outside 1..={n} for axis {a} of {}",
                    self.ty()
                )),
            );
            return (p, p);
        }
        let (v, i) = self.top_k(loc, "kthvalue", k, a as i64, false);
        let pick = |t: Var<'g>| {
            let t = t.slice(a as i64, Some(k as i64 - 1), None, 1);
            if keepdim {
                t
            } else {
                t.squeeze_axes(loc, &[a])
            }
        };
        (pick(v), pick(i))
    }
}
