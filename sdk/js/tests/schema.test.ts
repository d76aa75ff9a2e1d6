// The schema builder: JSON Schemas, typed decoding with errors naming the field.
import assert from "node:assert/strict";
import { test } from "node:test";

import { type Infer, InvalidInput, t, toJsonSchema } from "@toolhost/tool";

const Point = t.object({
  x: t.integer().describe("Horizontal."),
  y: t.integer().default(0).describe("Vertical."),
  label: t.string({ maxLength: 8 }).optional(),
});

const Add = t.object({ op: t.literal("add"), points: t.array(Point) });
const Clear = t.object({ op: t.literal("clear") });
const Command = t.union(Add, Clear);

function rejects(run: () => unknown, message: RegExp) {
  assert.throws(run, (e: unknown) => e instanceof InvalidInput && message.test(e.message));
}

test("an object schema lists fields in order, marks the required ones and allows no extras", () => {
  const schema = toJsonSchema(Point);
  assert.equal(schema.$schema, "https://json-schema.org/draft/2020-12/schema");
  assert.deepEqual(Object.keys(schema.properties as object), ["x", "y", "label"]);
  assert.deepEqual(schema.properties, {
    x: { description: "Horizontal.", type: "integer" },
    y: { description: "Vertical.", type: "integer", default: 0 },
    label: { type: "string", maxLength: 8 },
  });
  assert.deepEqual(schema.required, ["x"]);
  assert.equal(schema.additionalProperties, false);
});

test("unions, literals, records and nullables have their JSON Schema forms", () => {
  const schema = toJsonSchema(Command);
  const arms = schema.anyOf as { properties: { op: unknown } }[];
  assert.deepEqual(arms.map((a) => a.properties.op), [{ enum: ["add"] }, { enum: ["clear"] }]);
  assert.deepEqual(t.record(t.number()).jsonSchema(), { type: "object", additionalProperties: { type: "number" } });
  assert.deepEqual(t.string().nullable().jsonSchema(), { anyOf: [{ type: "string" }, { type: "null" }] });
  assert.deepEqual(t.enum(["a", "b"]).jsonSchema(), { enum: ["a", "b"] });
});

test("decoding fills defaults, drops absent optionals and types the result", () => {
  const point: Infer<typeof Point> = Point.decode({ x: 3 });
  assert.deepEqual(point, { x: 3, y: 0 });
  const add = Command.decode({ op: "add", points: [{ x: 1, y: 2, label: "a" }] });
  assert.deepEqual(add, { op: "add", points: [{ x: 1, y: 2, label: "a" }] });
  assert.deepEqual(Command.decode({ op: "clear" }), { op: "clear" });
});

test("decoding errors name the offending field", () => {
  rejects(() => Point.decode({ y: 1 }), /^at `x`: missing field$/);
  rejects(() => Point.decode({ x: 1, z: 1 }), /^at `z`: unknown field$/);
  rejects(() => Point.decode({ x: 1.5 }), /^at `x`: expected an integer, got a number$/);
  rejects(() => Point.decode({ x: 1, label: "much too long" }), /^at `label`: longer than 8 characters$/);
  rejects(() => Point.decode([]), /^expected an object, got an array$/);
  // A tagged union reports the error inside the arm its tag chose.
  rejects(() => Command.decode({ op: "add", points: [{ x: "1" }] }), /^at `points\[0\]\.x`: expected an integer, got a string$/);
  rejects(() => Command.decode({ op: "nope" }), /matches no alternative/);
  rejects(() => t.integer({ minimum: 1 }).decode(0), /less than 1/);
  rejects(() => t.string({ pattern: "^[a-z]+$" }).decode("A"), /does not match/);
  rejects(() => t.enum(["a", "b"]).decode("c"), /expected one of \["a","b"\], got "c"/);
});

test("a default is copied for each decode, so a tool may mutate it", () => {
  const List = t.object({ items: t.array(t.string()).default([]) });
  const first = List.decode({});
  first.items.push("x");
  assert.deepEqual(List.decode({}).items, []);
});

test("string lengths count code points, as JSON Schema does", () => {
  const Short = t.string({ minLength: 2, maxLength: 3 });
  assert.equal(Short.decode("😀😀"), "😀😀"); // 2 code points, 4 UTF-16 units
  rejects(() => Short.decode("😀"), /shorter than 2 characters/);
  rejects(() => Short.decode("abcd"), /longer than 3 characters/);
  const big = "x".repeat(100 << 10);
  assert.equal(t.string().decode(big), big);
});
