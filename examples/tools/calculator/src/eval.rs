//! Recursive-descent evaluation of arithmetic expressions. Free of host and SDK types so the
//! benchmark can run the same logic natively as its baseline.

use std::fmt;

/// Why an expression did not evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    /// Byte offset in the expression.
    pub at: usize,
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.message, self.at)
    }
}

/// Deeper nesting than this is refused rather than risking the guest's stack.
const MAX_DEPTH: usize = 256;

pub fn evaluate(expression: &str) -> Result<f64, EvalError> {
    let mut parser = Parser { src: expression.as_bytes(), pos: 0, depth: 0 };
    let value = parser.sum()?;
    parser.skip_spaces();
    if parser.pos != parser.src.len() {
        return Err(parser.error("unexpected character"));
    }
    if !value.is_finite() {
        return Err(EvalError { at: 0, message: "result is not a finite number".into() });
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> EvalError {
        EvalError { at: self.pos, message: message.to_string() }
    }

    fn skip_spaces(&mut self) {
        while self.src.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_spaces();
        self.src.get(self.pos).copied()
    }

    /// sum := product (('+' | '-') product)*
    fn sum(&mut self) -> Result<f64, EvalError> {
        let mut value = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let rhs = self.product()?;
            value = if op == b'+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    /// product := power (('*' | '/' | '%') power)*
    fn product(&mut self) -> Result<f64, EvalError> {
        let mut value = self.power()?;
        while let Some(op @ (b'*' | b'/' | b'%')) = self.peek() {
            let at = self.pos;
            self.pos += 1;
            let rhs = self.power()?;
            if op != b'*' && rhs == 0.0 {
                return Err(EvalError { at, message: "division by zero".into() });
            }
            value = match op {
                b'*' => value * rhs,
                b'/' => value / rhs,
                _ => value % rhs,
            };
        }
        Ok(value)
    }

    /// power := unary ('^' power)?   (right-associative)
    fn power(&mut self) -> Result<f64, EvalError> {
        let base = self.unary()?;
        if self.peek() == Some(b'^') {
            self.pos += 1;
            let exponent = self.nested(Self::power)?;
            return Ok(base.powf(exponent));
        }
        Ok(base)
    }

    /// unary := '-' unary | atom
    fn unary(&mut self) -> Result<f64, EvalError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
            return Ok(-self.nested(Self::unary)?);
        }
        self.atom()
    }

    /// atom := number | '(' sum ')'
    fn atom(&mut self) -> Result<f64, EvalError> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let value = self.nested(Self::sum)?;
                if self.peek() != Some(b')') {
                    return Err(self.error("expected `)`"));
                }
                self.pos += 1;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(_) => Err(self.error("expected a number or `(`")),
            None => Err(self.error("unexpected end of expression")),
        }
    }

    fn number(&mut self) -> Result<f64, EvalError> {
        let start = self.pos;
        while self.src.get(self.pos).is_some_and(|c| c.is_ascii_digit() || *c == b'.') {
            self.pos += 1;
        }
        if matches!(self.src.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.src.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            while self.src.get(self.pos).is_some_and(u8::is_ascii_digit) {
                self.pos += 1;
            }
        }
        let text = std::str::from_utf8(&self.src[start..self.pos]).expect("ASCII digits");
        text.parse().map_err(|_| EvalError { at: start, message: format!("malformed number `{text}`") })
    }

    fn nested(&mut self, rule: fn(&mut Self) -> Result<f64, EvalError>) -> Result<f64, EvalError> {
        if self.depth == MAX_DEPTH {
            return Err(self.error("expression nests too deeply"));
        }
        self.depth += 1;
        let value = rule(self);
        self.depth -= 1;
        value
    }
}
