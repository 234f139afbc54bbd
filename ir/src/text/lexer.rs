//! Tokens with line:column positions.

use super::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// `%12`
    Value(u32),
    /// A run of `[A-Za-z0-9_.:+-]`: names, numbers, dtypes, `0:3:1`, `-inf`.
    Atom(String),
    Str(String),
    Punct(char),
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Value(v) => format!("`%{v}`"),
            Tok::Atom(a) => format!("`{a}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Eof => "end of input".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

fn is_atom_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-' | '*')
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, message: String| ParseError { line, col, message };
    while i < chars.len() {
        let c = chars[i];
        let (tl, tc) = (line, col);
        let advance = |i: &mut usize, n: usize, line: &mut usize, col: &mut usize| {
            for _ in 0..n {
                if chars[*i] == '\n' {
                    *line += 1;
                    *col = 1;
                } else {
                    *col += 1;
                }
                *i += 1;
            }
        };
        if c.is_whitespace() {
            advance(&mut i, 1, &mut line, &mut col);
        } else if c == '#' || (c == '/' && chars.get(i + 1) == Some(&'/')) {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, 1, &mut line, &mut col);
            }
        } else if c == '%' {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let digits: String = chars[start..j].iter().collect();
            let v = digits
                .parse::<u32>()
                .map_err(|_| err(tl, tc, "expected a value number after `%`".into()))?;
            let n = j - i;
            advance(&mut i, n, &mut line, &mut col);
            out.push(Token {
                tok: Tok::Value(v),
                line: tl,
                col: tc,
            });
        } else if c == '"' {
            let mut s = String::new();
            advance(&mut i, 1, &mut line, &mut col);
            loop {
                match chars.get(i) {
                    None | Some('\n') => return Err(err(tl, tc, "unterminated string".into())),
                    Some('"') => {
                        advance(&mut i, 1, &mut line, &mut col);
                        break;
                    }
                    Some('\\') => {
                        let e = match chars.get(i + 1) {
                            Some('"') => '"',
                            Some('\\') => '\\',
                            Some('n') => '\n',
                            _ => return Err(err(line, col, "unknown escape in string".into())),
                        };
                        s.push(e);
                        advance(&mut i, 2, &mut line, &mut col);
                    }
                    Some(&ch) => {
                        s.push(ch);
                        advance(&mut i, 1, &mut line, &mut col);
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                line: tl,
                col: tc,
            });
        } else if is_atom_char(c) {
            let mut j = i;
            while j < chars.len() && is_atom_char(chars[j]) {
                j += 1;
            }
            let a: String = chars[i..j].iter().collect();
            let n = j - i;
            advance(&mut i, n, &mut line, &mut col);
            out.push(Token {
                tok: Tok::Atom(a),
                line: tl,
                col: tc,
            });
        } else if "{}[]=,".contains(c) {
            advance(&mut i, 1, &mut line, &mut col);
            out.push(Token {
                tok: Tok::Punct(c),
                line: tl,
                col: tc,
            });
        } else {
            return Err(err(tl, tc, format!("unexpected character {c:?}")));
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}
