//! The calculator's work done natively, the baseline a warm call is compared with: JSON text
//! in, evaluate, JSON text out.

#[path = "../../examples/tools/calculator/src/eval.rs"]
mod eval;

pub fn native_call(input: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Input {
        expression: String,
    }
    let input: Input = serde_json::from_str(input).unwrap();
    let value = eval::evaluate(&input.expression).unwrap();
    serde_json::to_string(&serde_json::json!({ "value": value })).unwrap()
}
