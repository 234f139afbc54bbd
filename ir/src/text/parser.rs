//! Text to graph. Every node is type-checked as it is added, and the declared type
//! must equal the inferred one, so a parsed graph is a verified graph.

use std::collections::HashMap;
use std::fmt;

use super::lexer::{Tok, Token, lex};
use crate::op::attrs::{AttrReader, AttrValue, parse_dim, parse_scalar};
use crate::{ConstValue, DType, Data, Graph, GraphError, NodeId, Op, Shape, TensorType};

/// A parse or type error at `line:col` (1-based).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// Parses one graph in the text format.
pub fn parse(src: &str) -> Result<Graph, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        ids: HashMap::new(),
    };
    p.graph()
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// Textual `%n` to arena id.
    ids: HashMap<u32, NodeId>,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos]
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn err_at(t: &Token, message: String) -> ParseError {
        ParseError {
            line: t.line,
            col: t.col,
            message,
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        let t = self.peek();
        Self::err_at(t, format!("expected {what}, found {}", t.tok.describe()))
    }

    fn punct(&mut self, c: char) -> Result<(), ParseError> {
        if self.peek().tok == Tok::Punct(c) {
            self.next();
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let hit = self.peek().tok == Tok::Punct(c);
        if hit {
            self.next();
        }
        hit
    }

    fn atom(&mut self, what: &str) -> Result<(String, Token), ParseError> {
        match &self.peek().tok {
            Tok::Atom(a) => {
                let a = a.clone();
                Ok((a, self.next()))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        match &self.peek().tok {
            Tok::Atom(a) if a == kw => {
                self.next();
                Ok(())
            }
            _ => Err(self.expected(&format!("`{kw}`"))),
        }
    }

    fn string(&mut self, what: &str) -> Result<(String, Token), ParseError> {
        match &self.peek().tok {
            Tok::Str(s) => {
                let s = s.clone();
                Ok((s, self.next()))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn value_ref(&mut self) -> Result<NodeId, ParseError> {
        match self.peek().tok {
            Tok::Value(v) => {
                let t = self.next();
                self.ids
                    .get(&v)
                    .copied()
                    .ok_or_else(|| Self::err_at(&t, format!("`%{v}` is used before it is defined")))
            }
            _ => Err(self.expected("a value like `%3`")),
        }
    }

    fn graph(&mut self) -> Result<Graph, ParseError> {
        self.keyword("graph")?;
        let (name, _) = self.atom("a graph name")?;
        let mut g = Graph::new(name);
        self.punct('{')?;
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Punct('}') => {
                    self.next();
                    break;
                }
                Tok::Value(_) => self.node(&mut g)?,
                Tok::Atom(a) if a == "output" => {
                    self.next();
                    let (name, nt) = self.string("an output name in quotes")?;
                    self.punct('=')?;
                    let id = self.value_ref()?;
                    g.set_output(&name, id)
                        .map_err(|e| Self::err_at(&nt, e.to_string()))?;
                }
                Tok::Atom(a) if a == "update" => {
                    self.next();
                    let (name, nt) = self.string("a param or state name in quotes")?;
                    let target = g.find(&name).ok_or_else(|| {
                        Self::err_at(&nt, format!("no param or state named {name:?}"))
                    })?;
                    self.punct('=')?;
                    let vt = self.peek().clone();
                    let id = self.value_ref()?;
                    g.set_update(target, id)
                        .map_err(|e| Self::err_at(&vt, e.to_string()))?;
                }
                _ => {
                    return Err(self.expected("a node `%n: type = ...`, `output`, `update` or `}`"));
                }
            }
        }
        if self.peek().tok != Tok::Eof {
            return Err(self.expected("end of input"));
        }
        Ok(g)
    }

    fn ty(&mut self) -> Result<TensorType, ParseError> {
        let (d, t) = self.atom("a type like `f32[N,3]`")?;
        let dtype =
            DType::from_name(&d).ok_or_else(|| Self::err_at(&t, format!("unknown dtype `{d}`")))?;
        self.punct('[')?;
        let mut dims = Vec::new();
        if !self.eat_punct(']') {
            loop {
                let (a, at) = self.atom("a dimension")?;
                dims.push(
                    parse_dim(&a)
                        .ok_or_else(|| Self::err_at(&at, format!("`{a}` is not a dimension")))?,
                );
                if self.eat_punct(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(TensorType::new(dtype, Shape(dims)))
    }

    fn node(&mut self, g: &mut Graph) -> Result<(), ParseError> {
        let vt = self.next();
        let Tok::Value(v) = vt.tok else {
            unreachable!("node() is called on a value token")
        };
        if self.ids.contains_key(&v) {
            return Err(Self::err_at(&vt, format!("`%{v}` is defined twice")));
        }
        // `%3:` lexes as `%3` followed by the atom `:`.
        match &self.peek().tok {
            Tok::Atom(a) if a == ":" => {
                self.next();
            }
            _ => return Err(self.expected("`:` after the value")),
        }
        let ty_tok = self.peek().clone();
        let declared = self.ty()?;
        self.punct('=')?;
        let (opname, op_tok) = self.atom("an op name")?;
        let (op, inputs) = match opname.as_str() {
            "input" | "param" | "state" => {
                let (name, _) = self.string("a name in quotes")?;
                let ty = declared.clone();
                let op = match opname.as_str() {
                    "input" => Op::Input { name, ty },
                    "param" => Op::Param { name, ty },
                    _ => Op::State { name, ty },
                };
                (op, vec![])
            }
            "const" => (self.constant(&declared)?, vec![]),
            _ => {
                let mut inputs = Vec::new();
                if matches!(self.peek().tok, Tok::Value(_)) {
                    inputs.push(self.value_ref()?);
                    while self.eat_punct(',') {
                        inputs.push(self.value_ref()?);
                    }
                }
                let (attrs, spans) = self.attrs()?;
                let mut reader = AttrReader::new(attrs);
                let op = Op::from_text(&opname, &mut reader).map_err(|e| {
                    let at = e.key.as_ref().and_then(|k| spans.get(k)).unwrap_or(&op_tok);
                    Self::err_at(at, e.message)
                })?;
                if let Some(k) = reader.leftover() {
                    return Err(Self::err_at(
                        &spans[k],
                        format!("unknown attribute `{k}` for `{opname}`"),
                    ));
                }
                (op, inputs)
            }
        };
        let id = g.add(op, &inputs).map_err(|e| match e {
            GraphError::Op(e) => Self::err_at(&op_tok, format!("`{opname}`: {e}")),
            e => Self::err_at(&op_tok, e.to_string()),
        })?;
        if *g.ty(id) != declared {
            return Err(Self::err_at(
                &ty_tok,
                format!(
                    "declared type {declared} does not match the type of `{opname}`: {}",
                    g.ty(id)
                ),
            ));
        }
        self.ids.insert(v, id);
        Ok(())
    }

    fn constant(&mut self, ty: &TensorType) -> Result<Op, ParseError> {
        let scalar = |p: &Self, a: &str, t: &Token| {
            let _ = p;
            parse_scalar(ty.dtype, a)
                .ok_or_else(|| Self::err_at(t, format!("`{a}` is not a {} value", ty.dtype)))
        };
        let value = if self.eat_punct('[') {
            let mut vals = Vec::new();
            if !self.eat_punct(']') {
                loop {
                    let (a, t) = self.atom("a number")?;
                    vals.push(scalar(self, &a, &t)?);
                    if self.eat_punct(']') {
                        break;
                    }
                    self.punct(',')?;
                }
            }
            ConstValue::Dense(Data::from_scalars(ty.dtype, vals))
        } else {
            let (a, t) = self.atom("a constant value")?;
            ConstValue::Splat(scalar(self, &a, &t)?)
        };
        Ok(Op::Const {
            value,
            ty: ty.clone(),
        })
    }

    #[allow(clippy::type_complexity)]
    fn attrs(&mut self) -> Result<(Vec<(String, AttrValue)>, HashMap<String, Token>), ParseError> {
        let mut out = Vec::new();
        let mut spans = HashMap::new();
        if !self.eat_punct('{') {
            return Ok((out, spans));
        }
        loop {
            let (k, kt) = self.atom("an attribute name")?;
            if spans.contains_key(&k) {
                return Err(Self::err_at(&kt, format!("attribute `{k}` is given twice")));
            }
            self.punct('=')?;
            let v = self.attr_value(0)?;
            spans.insert(k.clone(), kt);
            out.push((k, v));
            if self.eat_punct('}') {
                break;
            }
            self.punct(',')?;
        }
        Ok((out, spans))
    }

    /// An attribute value nested `depth` lists deep. The deepest any op reads is 2
    /// (`pads=[[lo, hi], ...]`); deeper lists are refused before they can exhaust the
    /// stack (50 000 `[` once overflowed it).
    fn attr_value(&mut self, depth: usize) -> Result<AttrValue, ParseError> {
        const MAX_DEPTH: usize = 8;
        if depth >= MAX_DEPTH && self.peek().tok == Tok::Punct('[') {
            return Err(Self::err_at(
                self.peek(),
                format!("attribute lists nest at most {MAX_DEPTH} deep"),
            ));
        }
        if self.eat_punct('[') {
            let mut items = Vec::new();
            if !self.eat_punct(']') {
                loop {
                    items.push(self.attr_value(depth + 1)?);
                    if self.eat_punct(']') {
                        break;
                    }
                    self.punct(',')?;
                }
            }
            Ok(AttrValue::List(items))
        } else {
            Ok(AttrValue::Atom(self.atom("an attribute value")?.0))
        }
    }
}
