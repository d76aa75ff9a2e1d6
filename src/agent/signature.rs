//! A tool's input schema as a small model reads it best: a sketch of each accepted shape,
//! e.g. `{"op": "add", "title": string, "body": string, "tags"?: [string]}`, followed by the
//! fields' descriptions.
//!
//! Constrained decoding makes a reply match the schema, but the model never sees the schema:
//! it only learns which keys it is in when the grammar forces them. Shown the sketch (and the
//! descriptions, with their examples) first, a 135M model fills in `prices.txt` where it
//! otherwise invents `path_to_file.txt`.

use serde_json::Value;

/// Nested objects deeper than this are shown as `object`.
const MAX_DEPTH: usize = 3;
/// Alternatives shown for a `oneOf`/`anyOf`; the rest are counted.
const MAX_ALTERNATIVES: usize = 12;

/// The lines describing `schema`, each indented by `indent`: one line per accepted shape
/// (with the shape's own description), then one per described field.
pub(crate) fn describe_input(schema: &Value, indent: &str) -> Vec<String> {
    let root = schema;
    // The shapes accepted at the top level: the branches of a `oneOf`/`anyOf`, or the schema.
    let alternatives: Vec<&Value> = branches(schema).map_or_else(|| vec![schema], |b| b.iter().collect());
    let shown: Vec<&Value> = alternatives.iter().take(MAX_ALTERNATIVES).map(|shape| resolve(root, shape)).collect();
    let mut lines = Vec::new();
    for shape in &shown {
        let mut line = format!("{indent}{}", sketch(root, shape, 0));
        if let Some(about) = shape.get("description").and_then(Value::as_str) {
            line.push_str(&format!("  ({})", one_line(about)));
        }
        lines.push(line);
    }
    if alternatives.len() > shown.len() {
        lines.push(format!("{indent}... and {} more shapes", alternatives.len() - shown.len()));
    }
    let mut described: Vec<(&str, String)> = Vec::new();
    for shape in &shown {
        for (name, field) in properties(shape) {
            if let Some(about) = resolve(root, field).get("description").and_then(Value::as_str)
                && !described.iter().any(|(known, _)| *known == name.as_str())
            {
                described.push((name.as_str(), one_line(about)));
            }
        }
    }
    lines.extend(described.into_iter().map(|(name, about)| format!("{indent}  {name}: {about}")));
    lines
}

/// The branches of a `oneOf` or `anyOf`, if the schema is one.
fn branches(schema: &Value) -> Option<&Vec<Value>> {
    ["oneOf", "anyOf"].iter().find_map(|key| schema.get(*key).and_then(Value::as_array))
}

fn properties(schema: &Value) -> impl Iterator<Item = (&String, &Value)> {
    schema.get("properties").and_then(Value::as_object).into_iter().flatten()
}

/// Follows a local `$ref` (`#/$defs/X` or `#/definitions/X`); anything else stays as it is.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let Some(reference) = schema.get("$ref").and_then(Value::as_str) else { return schema };
    reference.strip_prefix('#').and_then(|pointer| root.pointer(pointer)).unwrap_or(schema)
}

/// One shape as compact pseudo-JSON: literals for constants, type names for the rest.
fn sketch(root: &Value, schema: &Value, depth: usize) -> String {
    let schema = resolve(root, schema);
    if let Some(constant) = schema.get("const") {
        return constant.to_string();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(Value::to_string).collect::<Vec<_>>().join(" | ");
    }
    if let Some(branches) = branches(schema) {
        return branches.iter().map(|b| sketch(root, b, depth + 1)).collect::<Vec<_>>().join(" | ");
    }
    match schema.get("type") {
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .map(|t| typed(root, schema, t, depth))
            .collect::<Vec<_>>()
            .join(" | "),
        Some(Value::String(t)) => typed(root, schema, t, depth),
        _ if schema.get("properties").is_some() => object(root, schema, depth),
        _ => "any".into(),
    }
}

fn typed(root: &Value, schema: &Value, name: &str, depth: usize) -> String {
    match name {
        "object" => object(root, schema, depth),
        "array" => match schema.get("items") {
            Some(items) => format!("[{}]", sketch(root, items, depth + 1)),
            None => "[any]".into(),
        },
        other => other.into(),
    }
}

fn object(root: &Value, schema: &Value, depth: usize) -> String {
    let fields: Vec<_> = properties(schema).collect();
    if fields.is_empty() || depth >= MAX_DEPTH {
        return "object".into();
    }
    let required = schema.get("required").and_then(Value::as_array).map(|r| r.as_slice()).unwrap_or_default();
    let shown: Vec<String> = fields
        .into_iter()
        .map(|(name, field)| {
            let optional = if required.iter().any(|r| r == name) { "" } else { "?" };
            format!("{}{optional}: {}", Value::String(name.clone()), sketch(root, field, depth + 1))
        })
        .collect();
    format!("{{{}}}", shown.join(", "))
}

/// Descriptions may span lines; the prompt keeps one line per field.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::describe_input;

    #[test]
    fn an_object_shows_its_fields_in_order_with_their_descriptions() {
        let schema = json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "A file under /docs,\n e.g. `prices.txt`."},
                "limit": {"type": ["integer", "null"]},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["path"]
        });
        assert_eq!(
            describe_input(&schema, "  "),
            [
                r#"  {"path": string, "limit"?: integer | null, "tags"?: [string]}"#,
                "    path: A file under /docs, e.g. `prices.txt`.",
            ]
        );
    }

    #[test]
    fn a_tagged_enum_shows_one_line_per_shape() {
        let schema = json!({
            "oneOf": [
                {"type": "object", "description": "Adds a note.", "required": ["op", "title"],
                 "properties": {"op": {"const": "add", "type": "string"}, "title": {"type": "string"}}},
                {"type": "object", "required": ["op", "id"],
                 "properties": {"op": {"const": "get"}, "id": {"type": "integer", "description": "The note's id."}}},
                {"type": "object", "properties": {"op": {"enum": ["list", "count"]}}, "required": ["op"]}
            ]
        });
        assert_eq!(
            describe_input(&schema, ""),
            [
                r#"{"op": "add", "title": string}  (Adds a note.)"#,
                r#"{"op": "get", "id": integer}"#,
                r#"{"op": "list" | "count"}"#,
                "  id: The note's id.",
            ]
        );
    }

    #[test]
    fn references_resolve_and_deep_nesting_is_cut() {
        let schema = json!({
            "type": "object",
            "properties": {"point": {"$ref": "#/$defs/Point"}, "missing": {"$ref": "#/$defs/Nope"}},
            "required": ["point", "missing"],
            "$defs": {
                "Point": {"type": "object", "description": "Where.", "required": ["x"],
                          "properties": {"x": {"type": "object", "properties": {"y": {"type": "object",
                          "properties": {"z": {"type": "number"}}}}}}}
            }
        });
        assert_eq!(
            describe_input(&schema, ""),
            [r#"{"point": {"x": {"y"?: object}}, "missing": any}"#, "  point: Where.",]
        );
    }

    #[test]
    fn a_schema_without_properties_is_still_described() {
        assert_eq!(describe_input(&json!({}), ""), ["any"]);
        assert_eq!(describe_input(&json!({"type": "object"}), ""), ["object"]);
        let many: Vec<_> = (0..20).map(|i| json!({"const": i})).collect();
        let lines = describe_input(&json!({"anyOf": many}), "");
        assert_eq!(lines.len(), 13);
        assert_eq!(lines[12], "... and 8 more shapes");
    }
}
