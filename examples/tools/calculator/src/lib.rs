//! A stateless tool (declared, so the host never replays it): evaluates an arithmetic expression.
//!
//! `{"expression": "2 * (3 + 4) ^ 2"}` -> `{"value": 98.0}`

mod eval;

use serde::{Deserialize, Serialize};
use toolhost_guest::{JsonSchema, Tool, ToolError, export_stateless_tool};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Numbers, `+ - * / % ^`, parentheses and unary minus, e.g. `2 * (3 + 4)`.
    expression: String,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    value: f64,
}

#[derive(Default)]
struct Calculator;

impl Tool for Calculator {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "calculator";
    const DESCRIPTION: &'static str =
        "Evaluates an arithmetic expression with + - * / % ^ and parentheses and returns the number.";

    fn call(&mut self, input: Input) -> Result<Output, ToolError> {
        eval::evaluate(&input.expression)
            .map(|value| Output { value })
            .map_err(|e| ToolError::invalid_input(e.to_string()))
    }
}

export_stateless_tool!(Calculator);

#[cfg(test)]
mod tests {
    use crate::eval::evaluate;

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(evaluate("2 * (3 + 4) ^ 2").unwrap(), 98.0);
        assert_eq!(evaluate("2 ^ 3 ^ 2").unwrap(), 512.0);
        assert_eq!(evaluate("10 - 4 - 3").unwrap(), 3.0);
        assert_eq!(evaluate("-2 ^ 2").unwrap(), 4.0);
        assert_eq!(evaluate("7 % 4 + 1.5e1").unwrap(), 18.0);
    }

    #[test]
    fn errors_name_the_offset() {
        assert_eq!(evaluate("1 / 0").unwrap_err().message, "division by zero");
        assert_eq!(evaluate("1 +").unwrap_err().at, 3);
        assert_eq!(evaluate("(1").unwrap_err().message, "expected `)`");
        assert!(evaluate(&"(".repeat(1000)).unwrap_err().message.contains("deeply"));
    }
}
