//! Shapes made of concrete and named symbolic dimensions.
//!
//! A symbolic dim (`N`) stands for a size chosen when a compiled program is bound to real
//! inputs (the batch size, the short last batch). Shape rules reason about symbols
//! exactly: two dims are equal only if they are the same number or the same symbol, and
//! an element count is a monomial `c * N^a * M^b ...`, which is what reshape compares.
//!
//! A *merged* dim (`5*N`, `N*T`) is such a monomial used as one dim: what
//! `flatten(0, 1)` of `[N, 5, 3]` or `view(-1, 3)` make. It is kept in one canonical
//! form (the coefficient, then the symbols in name order, each repeated by its power),
//! so two merged dims are equal exactly when their monomials are, and it binds by
//! evaluating the product once its symbols are bound. Inputs declare plain symbols;
//! merged dims only arise inside a graph.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One dimension: a known size, a named symbol, or a product of symbols (a merged dim).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Known(usize),
    Sym(Arc<str>),
    /// A monomial with at least one symbol that is not a plain symbol (`5*N`, `N*T`):
    /// only [`Numel::as_dim`] makes one, so the form is canonical.
    Merged(Arc<Numel>),
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(Arc::from(name))
    }

    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) | Dim::Merged(_) => None,
        }
    }

    /// The size once symbols are bound (`None` if a symbol is unbound or the product
    /// overflows).
    pub fn bind(&self, env: &BTreeMap<Arc<str>, usize>) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(s) => env.get(s).copied(),
            Dim::Merged(m) => m.bind(env),
        }
    }

    /// The symbols this dim depends on.
    pub fn symbols(&self) -> Vec<Arc<str>> {
        match self {
            Dim::Known(_) => Vec::new(),
            Dim::Sym(s) => vec![s.clone()],
            Dim::Merged(m) => m.syms.keys().cloned().collect(),
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
            Dim::Merged(m) => write!(f, "{m}"),
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
        self.0.iter().map(|d| d.bind(env)).collect()
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
            Dim::Merged(m) => {
                self.coeff = self.coeff.saturating_mul(m.coeff);
                for (s, e) in &m.syms {
                    *self.syms.entry(s.clone()).or_insert(0) += e;
                }
            }
        }
        self
    }

    /// The count once its symbols are bound (`None` if one is unbound or it overflows).
    pub fn bind(&self, env: &BTreeMap<Arc<str>, usize>) -> Option<usize> {
        self.syms.iter().try_fold(self.coeff, |acc, (s, e)| {
            let v = *env.get(s)?;
            (0..*e).try_fold(acc, |a, _| a.checked_mul(v))
        })
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

    /// The count as one dim: a number, a plain symbol, or a merged dim (`5*N`). A count
    /// with a zero coefficient is `0` whatever its symbols.
    pub fn as_dim(&self) -> Dim {
        if self.coeff == 0 || self.syms.is_empty() {
            return Dim::Known(self.coeff);
        }
        if self.coeff == 1 && self.syms.len() == 1 {
            let (s, e) = self.syms.iter().next().expect("one symbol");
            if *e == 1 {
                return Dim::Sym(s.clone());
            }
        }
        Dim::Merged(Arc::new(self.clone()))
    }

    /// Parses the text form of a merged dim (`5*N`, `N*T`, `2*N*N`): factors that are
    /// numbers or symbol names joined by `*`.
    pub fn parse(s: &str) -> Option<Numel> {
        let mut n = Numel::one();
        for factor in s.split('*') {
            let d = if let Ok(v) = factor.parse::<usize>() {
                Dim::Known(v)
            } else {
                let mut chars = factor.chars();
                let first = chars.next()?;
                if !((first.is_ascii_alphabetic() || first == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    return None;
                }
                Dim::sym(factor)
            };
            n = n.mul_dim(&d);
        }
        Some(n)
    }
}

/// `5*N`, `N*T`, `2*N*N`: the coefficient (left out when 1, unless there is nothing
/// else), then each symbol as many times as its power. The parser reads it back.
impl fmt::Display for Numel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if self.coeff != 1 || self.syms.is_empty() {
            write!(f, "{}", self.coeff)?;
            first = false;
        }
        for (s, e) in &self.syms {
            for _ in 0..*e {
                if !first {
                    f.write_str("*")?;
                }
                f.write_str(s)?;
                first = false;
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
        assert_eq!(a.div(&b).unwrap().as_dim(), Dim::Known(784));
        assert_eq!(a.div(&shape![784].numel()).unwrap().as_dim(), Dim::sym("N"));
        assert!(a.div(&shape![5].numel()).is_none());
        assert!(a.div(&shape!["M"].numel()).is_none());
        assert_eq!(a.to_string(), "784*N");
    }

    #[test]
    fn merged_dims_are_canonical_and_bind() {
        let nt = shape!["T", "N"].numel().as_dim();
        assert_eq!(nt, shape!["N", "T"].numel().as_dim(), "order-free");
        assert_eq!(nt.to_string(), "N*T");
        let five_n = shape!["N", 5].numel().as_dim();
        assert_eq!(five_n.to_string(), "5*N");
        assert_eq!(Numel::parse("5*N").unwrap().as_dim(), five_n);
        assert_eq!(Numel::parse("N*5").unwrap().as_dim(), five_n);
        assert_eq!(Numel::parse("2*N*N").unwrap().as_dim().to_string(), "2*N*N");
        assert!(Numel::parse("5**N").is_none());
        // A merged dim merges again as its factors: [5*N, 3] has 15*N elements.
        let s = Shape(vec![five_n.clone(), Dim::Known(3)]);
        assert_eq!(s.numel(), shape!["N", 15].numel());
        let env: BTreeMap<Arc<str>, usize> = [(Arc::from("N"), 7)].into_iter().collect();
        assert_eq!(s.bind(&env), Some(vec![35, 3]));
        let huge: BTreeMap<Arc<str>, usize> = [(Arc::from("N"), usize::MAX)].into_iter().collect();
        assert_eq!(five_n.bind(&huge), None, "overflow is unbound, not wrapped");
        assert_eq!(shape!["N", 0].numel().as_dim(), Dim::Known(0));
    }

    #[test]
    fn negative_axes() {
        assert_eq!(normalize_axis(-1, 3), Some(2));
        assert_eq!(normalize_axis(3, 3), None);
        assert_eq!(normalize_axis(-4, 3), None);
        assert_eq!(normalize_axis(0, 0), None);
    }
}
