//! A stateless tool: evaluates an arithmetic expression.
//!
//! `{"expression": "2 * (3 + 4) ^ 2"}` -> `{"value": 98.0}`

mod eval;

use serde::{Deserialize, Serialize};
use toolhost_guest::{JsonSchema, Tool, ToolError, export_tool};

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

export_tool!(Calculator);
