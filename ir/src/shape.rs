//! Shapes made of concrete and named symbolic dimensions.
//!
//! A symbolic dim (`N`) stands for a size chosen when a compiled program is bound to real
//! inputs (the batch size, the short last batch). Shape rules reason about symbols
//! exactly: two dims are equal only if they are the same number or the same symbol, and
//! an element count is a monomial `c * N^a * M^b ...`, which is what reshape compares.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One dimension: a known size or a named symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Known(usize),
    Sym(Arc<str>),
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(Arc::from(name))
    }

    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    pub fn is_one(&self) -> bool {
        matches!(self, Dim::Known(1))
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::sym(s)
    }
}

impl From<String> for Dim {
    fn from(s: String) -> Dim {
        Dim::Sym(Arc::from(s))
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A tensor shape. Rank 0 is a scalar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

/// Builds a [`Shape`] from dims given as `usize` literals or `&str` symbol names:
/// `shape!["N", 784]`.
#[macro_export]
macro_rules! shape {
    ($($d:expr),* $(,)?) => {
        $crate::Shape(vec![$($crate::Dim::from($d)),*])
    };
}

impl Shape {
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn known(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// All dims as numbers, if none is symbolic.
    pub fn as_known(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::known).collect()
    }

    pub fn is_static(&self) -> bool {
        self.0.iter().all(|d| d.known().is_some())
    }

    /// Element count as a monomial over the symbols.
    pub fn numel(&self) -> Numel {
        let mut n = Numel::one();
        for d in &self.0 {
            n = n.mul_dim(d);
        }
        n
    }

    /// Normalises a possibly negative axis (PyTorch style) against this rank.
    pub fn axis(&self, axis: i64) -> Option<usize> {
        normalize_axis(axis, self.rank())
    }

    /// Replaces each symbol by its bound size.
    pub fn bind(&self, env: &BTreeMap<Arc<str>, usize>) -> Option<Vec<usize>> {
        self.0
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Some(*n),
                Dim::Sym(s) => env.get(s).copied(),
            })
            .collect()
    }

    /// NumPy/PyTorch broadcasting of two shapes, aligned at the trailing dims.
    /// A symbol broadcasts only with itself or with 1: `N` against 3 cannot be proven
    /// compatible, so it is rejected rather than guessed.
    pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
        let rank = a.rank().max(b.rank());
        let mut out = Vec::with_capacity(rank);
        for i in 0..rank {
            let da = dim_from_end(a, rank - 1 - i);
            let db = dim_from_end(b, rank - 1 - i);
            let d = match (da, db) {
                (None, Some(d)) | (Some(d), None) => d.clone(),
                (Some(x), Some(y)) if x == y => x.clone(),
                (Some(x), Some(y)) if x.is_one() => y.clone(),
                (Some(x), Some(y)) if y.is_one() => x.clone(),
                _ => return None,
            };
            out.push(d);
        }
        Some(Shape(out))
    }

    /// Whether `self` can be broadcast (expanded) to `target` without changing `target`.
    pub fn broadcasts_to(&self, target: &Shape) -> bool {
        Shape::broadcast(self, target).as_ref() == Some(target) && self.rank() <= target.rank()
    }
}

fn dim_from_end(s: &Shape, k: usize) -> Option<&Dim> {
    // k counts from the last dim; None when the shape is too short (implicit leading 1).
    s.rank().checked_sub(k + 1).map(|i| &s.0[i])
}

/// `axis` in `[-rank, rank)` to `[0, rank)`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// An element count `coeff * prod(sym^exp)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numel {
    pub coeff: usize,
    pub syms: BTreeMap<Arc<str>, u32>,
}

impl Numel {
    pub fn one() -> Numel {
        Numel {
            coeff: 1,
            syms: BTreeMap::new(),
        }
    }

    pub fn mul_dim(mut self, d: &Dim) -> Numel {
        match d {
            Dim::Known(n) => self.coeff = self.coeff.saturating_mul(*n),
            Dim::Sym(s) => *self.syms.entry(s.clone()).or_insert(0) += 1,
        }
        self
    }

    /// `self / other` when it divides exactly (used by reshape's `-1`).
    pub fn div(&self, other: &Numel) -> Option<Numel> {
        if other.coeff == 0 || !self.coeff.is_multiple_of(other.coeff) {
            return None;
        }
        let mut syms = self.syms.clone();
        for (s, e) in &other.syms {
            let have = syms.get_mut(s)?;
            if *have < *e {
                return None;
            }
            *have -= e;
            if *have == 0 {
                syms.remove(s);
            }
        }
        Some(Numel {
            coeff: self.coeff / other.coeff,
            syms,
        })
    }

    /// The count as a single dim, if it is a plain number or exactly one symbol.
    pub fn as_dim(&self) -> Option<Dim> {
        match (self.coeff, self.syms.len()) {
            (c, 0) => Some(Dim::Known(c)),
            (1, 1) => {
                let (s, e) = self.syms.iter().next()?;
                (*e == 1).then(|| Dim::Sym(s.clone()))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Numel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.coeff)?;
        for (s, e) in &self.syms {
            if *e == 1 {
                write!(f, "*{s}")?;
            } else {
                write!(f, "*{s}^{e}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_rules() {
        let b = |a: Shape, c: Shape| Shape::broadcast(&a, &c);
        assert_eq!(b(shape![3, 1], shape![4]), Some(shape![3, 4]));
        assert_eq!(b(shape![], shape![2, 3]), Some(shape![2, 3]));
        assert_eq!(b(shape!["N", 1], shape![1, 10]), Some(shape!["N", 10]));
        assert_eq!(b(shape!["N", 10], shape![10]), Some(shape!["N", 10]));
        assert_eq!(b(shape!["N"], shape!["N"]), Some(shape!["N"]));
        assert_eq!(b(shape![2, 3], shape![3, 2]), None);
        assert_eq!(b(shape!["N"], shape![3]), None, "N vs 3 cannot be proven");
        assert_eq!(b(shape!["N"], shape!["M"]), None);
        assert!(shape![1, 3].broadcasts_to(&shape![4, 3]));
        assert!(!shape![4, 3].broadcasts_to(&shape![1, 3]));
        assert!(!shape![2, 4, 3].broadcasts_to(&shape![4, 3]));
    }

    #[test]
    fn symbolic_numel_divides() {
        let a = shape!["N", 28, 28].numel();
        let b = shape!["N"].numel();
        assert_eq!(a.div(&b).unwrap().as_dim(), Some(Dim::Known(784)));
        assert_eq!(
            a.div(&shape![784].numel()).unwrap().as_dim(),
            Some(Dim::sym("N"))
        );
        assert!(a.div(&shape![5].numel()).is_none());
        assert!(a.div(&shape!["M"].numel()).is_none());
        assert_eq!(a.to_string(), "784*N");
    }

    #[test]
    fn negative_axes() {
        assert_eq!(normalize_axis(-1, 3), Some(2));
        assert_eq!(normalize_axis(3, 3), None);
        assert_eq!(normalize_axis(-4, 3), None);
        assert_eq!(normalize_axis(0, 0), None);
    }
}
