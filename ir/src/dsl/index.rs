//! Indexing by tensors: gather, scatter-add, index_select, one-hot.

use std::panic::Location;

use super::Var;
use crate::{DType, Dim, Op, OpError, Shape};

impl<'g> Var<'g> {
    /// `torch.gather(self, axis, index)`: `out[i][j] = self[index[i][j]][j]` for axis 0.
    #[track_caller]
    pub fn gather(self, axis: i64, index: Var<'g>) -> Var<'g> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "gather", axis) else {
            return self.b.poison();
        };
        self.prim(loc, "gather", Op::Gather { axis: a }, &[index])
    }

    /// `self.scatter_add(axis, index, src)`: adds `src` into a copy of `self` at `index`.
    #[track_caller]
    pub fn scatter_add(self, axis: i64, index: Var<'g>, src: Var<'g>) -> Var<'g> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "scatter_add", axis) else {
            return self.b.poison();
        };
        self.prim(
            loc,
            "scatter_add",
            Op::ScatterAdd { axis: a },
            &[index, src.cast(self.dtype())],
        )
    }

    /// `torch.index_select(self, axis, index)` with a 1-D index: a gather whose index is
    /// broadcast over the other axes.
    #[track_caller]
    pub fn index_select(self, axis: i64, index: Var<'g>) -> Var<'g> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "index_select", axis) else {
            return self.b.poison();
        };
        if index.rank() != 1 {
            return self.fail(
                loc,
                "index_select",
                OpError::BadDType {
                    expected: "a 1-D index",
                    got: index.ty(),
                },
            );
        }
        let mut shape = self.shape();
        let mut view = vec![Dim::Known(1); shape.rank()];
        view[a] = index.shape().0[0].clone();
        shape.0[a] = view[a].clone();
        let idx = index
            .reshape_to(loc, Shape(view))
            .broadcast_as(loc, "index_select", &shape);
        self.prim(loc, "index_select", Op::Gather { axis: a }, &[idx])
    }

    /// `F.one_hot(self, num_classes)`: i64 with a new last axis.
    #[track_caller]
    pub fn one_hot(self, num_classes: usize) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        if !self.dtype().is_int() {
            return self.fail(
                loc,
                "one_hot",
                OpError::BadDType {
                    expected: "an integer class-index",
                    got: self.ty(),
                },
            );
        }
        let mut shape = self.shape();
        shape.0.push(Dim::Known(num_classes));
        let classes = self.b.add(
            loc,
            "one_hot",
            Op::Iota {
                shape: shape.clone(),
                axis: shape.rank() - 1,
                dtype: self.dtype(),
            },
            &[],
        );
        self.unsqueeze(-1).equal(classes).cast(DType::I64)
    }
}
