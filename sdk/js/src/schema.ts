/**
 * A schema builder: each schema is a TypeScript type (`Infer<typeof S>`), a draft 2020-12 JSON
 * Schema (`toJsonSchema`) and a decoder whose errors name the field (`decode`).
 *
 *     const Input = t.object({
 *       text: t.string().describe("The text to count."),
 *       unit: t.enum(["words", "lines"]).default("words"),
 *     });
 *     type Input = Infer<typeof Input>; // { text: string; unit: "words" | "lines" }
 */

import { InvalidInput } from "./errors.js";

/** Parsed JSON. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A JSON Schema object, as `toJsonSchema` writes it. */
export type JsonSchema = { [keyword: string]: Json };

export const DRAFT = "https://json-schema.org/draft/2020-12/schema";

/** The TypeScript type a schema decodes to. */
export type Infer<S> = S extends Schema<infer T> ? T : never;

/** A type and its JSON Schema. Build one with `t`. */
export abstract class Schema<T> {
  /** Phantom: carries `T` for `Infer`. Never set. */
  declare readonly _type: T;
  protected doc: string | undefined;

  /** The JSON Schema keywords of this type, without `$schema`. */
  protected abstract keywords(): JsonSchema;

  /** `value` as a `T`, or an `InvalidInput` naming the offending field (`at \`a.b[2]\``). */
  abstract decode(value: unknown, path?: string): T;

  /** This schema with a description (for the model filling it in). */
  describe(doc: string): this {
    const copy = Object.create(Object.getPrototypeOf(this)) as this;
    Object.assign(copy, this, { doc });
    return copy;
  }

  /** The JSON Schema of this type (nested; see `toJsonSchema` for a document). */
  jsonSchema(): JsonSchema {
    const keywords = this.keywords();
    return this.doc === undefined ? keywords : { description: this.doc, ...keywords };
  }

  /** A field that may be absent (`T | undefined`). Only meaningful inside `t.object`. */
  optional(): OptionalSchema<T> {
    return new OptionalSchema(this);
  }

  /** A field that may be absent and then reads as `value`. Only meaningful inside `t.object`. */
  default(value: T): DefaultSchema<T> {
    return new DefaultSchema(this, value);
  }

  /** `T | null`. */
  nullable(): Schema<T | null> {
    return new UnionSchema<T | null>([this, new NullSchema()]);
  }
}

/** A top-level JSON Schema document for `schema`, with `$schema`. */
export function toJsonSchema(schema: Schema<unknown>): JsonSchema {
  return { $schema: DRAFT, ...schema.jsonSchema() };
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "boolean":
      return "a boolean";
    case "number":
      return Number.isInteger(value) ? "an integer" : "a number";
    case "string":
      return "a string";
    case "object":
      return "an object";
    default:
      return typeof value;
  }
}

/** The error for `path`, in the Python and Rust SDKs' wording. */
export function invalidAt(path: string, message: string): InvalidInput {
  return new InvalidInput(path ? `at \`${path}\`: ${message}` : message);
}

function mismatch(path: string, expected: string, value: unknown): InvalidInput {
  return invalidAt(path, `expected ${expected}, got ${describeValue(value)}`);
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function render(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

export interface StringOptions {
  minLength?: number;
  maxLength?: number;
  /** An ECMAScript regular expression the whole value must match somewhere (JSON Schema `pattern`). */
  pattern?: string;
}

const SURROGATE_PAIR = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g;

/** The length of `text` in code points, as JSON Schema counts it, without copying the string
 * (spreading a 100 KiB string into an array took ~100 ms in the component's interpreter). */
function codePoints(text: string): number {
  return text.length - (text.match(SURROGATE_PAIR)?.length ?? 0);
}

class StringSchema extends Schema<string> {
  constructor(private readonly options: StringOptions = {}) {
    super();
  }
  protected keywords(): JsonSchema {
    return { type: "string", ...(this.options as JsonSchema) };
  }
  decode(value: unknown, path = ""): string {
    if (typeof value !== "string") throw mismatch(path, "a string", value);
    const { minLength, maxLength, pattern } = this.options;
    if (minLength !== undefined || maxLength !== undefined) {
      const length = codePoints(value);
      if (minLength !== undefined && length < minLength) throw invalidAt(path, `shorter than ${minLength} characters`);
      if (maxLength !== undefined && length > maxLength) throw invalidAt(path, `longer than ${maxLength} characters`);
    }
    if (pattern !== undefined && !new RegExp(pattern, "u").test(value)) {
      throw invalidAt(path, `does not match the pattern ${render(pattern)}`);
    }
    return value;
  }
}

export interface NumberOptions {
  minimum?: number;
  maximum?: number;
}

class NumberSchema extends Schema<number> {
  constructor(
    private readonly integer: boolean,
    private readonly options: NumberOptions = {},
  ) {
    super();
  }
  protected keywords(): JsonSchema {
    return { type: this.integer ? "integer" : "number", ...(this.options as JsonSchema) };
  }
  decode(value: unknown, path = ""): number {
    if (typeof value !== "number" || !Number.isFinite(value)) {
      throw mismatch(path, this.integer ? "an integer" : "a number", value);
    }
    if (this.integer && !Number.isInteger(value)) throw mismatch(path, "an integer", value);
    const { minimum, maximum } = this.options;
    if (minimum !== undefined && value < minimum) throw invalidAt(path, `less than ${minimum}`);
    if (maximum !== undefined && value > maximum) throw invalidAt(path, `greater than ${maximum}`);
    return value;
  }
}

class BooleanSchema extends Schema<boolean> {
  protected keywords(): JsonSchema {
    return { type: "boolean" };
  }
  decode(value: unknown, path = ""): boolean {
    if (typeof value !== "boolean") throw mismatch(path, "a boolean", value);
    return value;
  }
}

class NullSchema extends Schema<null> {
  protected keywords(): JsonSchema {
    return { type: "null" };
  }
  decode(value: unknown, path = ""): null {
    if (value !== null) throw mismatch(path, "null", value);
    return null;
  }
}

class AnySchema extends Schema<Json> {
  protected keywords(): JsonSchema {
    return {};
  }
  decode(value: unknown): Json {
    return value as Json;
  }
}

type Scalar = string | number | boolean | null;

class EnumSchema<T extends Scalar> extends Schema<T> {
  constructor(readonly values: readonly T[]) {
    super();
  }
  protected keywords(): JsonSchema {
    return { enum: [...this.values] };
  }
  decode(value: unknown, path = ""): T {
    if (!this.values.includes(value as T)) {
      throw invalidAt(path, `expected one of ${render(this.values)}, got ${render(value)}`);
    }
    return value as T;
  }
}

export interface ArrayOptions {
  minItems?: number;
  maxItems?: number;
}

class ArraySchema<T> extends Schema<T[]> {
  constructor(
    private readonly items: Schema<T>,
    private readonly options: ArrayOptions = {},
  ) {
    super();
  }
  protected keywords(): JsonSchema {
    return { type: "array", items: this.items.jsonSchema(), ...(this.options as JsonSchema) };
  }
  decode(value: unknown, path = ""): T[] {
    if (!Array.isArray(value)) throw mismatch(path, "an array", value);
    const { minItems, maxItems } = this.options;
    if (minItems !== undefined && value.length < minItems) throw invalidAt(path, `fewer than ${minItems} items`);
    if (maxItems !== undefined && value.length > maxItems) throw invalidAt(path, `more than ${maxItems} items`);
    return value.map((item, i) => this.items.decode(item, `${path}[${i}]`));
  }
}

class RecordSchema<T> extends Schema<Record<string, T>> {
  constructor(private readonly values: Schema<T>) {
    super();
  }
  protected keywords(): JsonSchema {
    return { type: "object", additionalProperties: this.values.jsonSchema() };
  }
  decode(value: unknown, path = ""): Record<string, T> {
    if (!isObject(value)) throw mismatch(path, "an object", value);
    const out: Record<string, T> = {};
    for (const [key, item] of Object.entries(value)) out[key] = this.values.decode(item, join(path, key));
    return out;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** An object field that may be absent. */
export class OptionalSchema<T> extends Schema<T | undefined> {
  declare readonly _optional: true;
  constructor(readonly inner: Schema<T>) {
    super();
  }
  protected keywords(): JsonSchema {
    return this.inner.jsonSchema();
  }
  decode(value: unknown, path = ""): T | undefined {
    return value === undefined ? undefined : this.inner.decode(value, path);
  }
}

/** An object field that may be absent and then takes its default. */
export class DefaultSchema<T> extends Schema<T> {
  declare readonly _optional: true;
  constructor(
    readonly inner: Schema<T>,
    readonly fallback: T,
  ) {
    super();
  }
  protected keywords(): JsonSchema {
    return { ...this.inner.jsonSchema(), default: this.fallback as Json };
  }
  decode(value: unknown, path = ""): T {
    // A fresh copy each time: a tool may mutate what it decoded.
    return value === undefined ? (JSON.parse(JSON.stringify(this.fallback)) as T) : this.inner.decode(value, path);
  }
}

/** The fields of `t.object`. */
export type Shape = { [field: string]: Schema<unknown> };
type Flatten<T> = { [K in keyof T]: T[K] } & {};

/** The decoded object of a shape: `.optional()` fields may be absent, `.default()` ones are always set. */
export type Decoded<S extends Shape> = Flatten<
  { [K in keyof S as S[K] extends OptionalSchema<unknown> ? never : K]: Infer<S[K]> } & {
    [K in keyof S as S[K] extends OptionalSchema<unknown> ? K : never]?: Exclude<Infer<S[K]>, undefined>;
  }
>;

/** An object with exactly the fields of its shape (`additionalProperties: false`). */
export class ObjectSchema<S extends Shape> extends Schema<Decoded<S>> {
  constructor(readonly shape: S) {
    super();
  }
  protected keywords(): JsonSchema {
    const properties: JsonSchema = {};
    const required: string[] = [];
    for (const [name, field] of Object.entries(this.shape)) {
      properties[name] = field.jsonSchema();
      if (!isOptionalField(field)) required.push(name);
    }
    const schema: JsonSchema = { type: "object", properties };
    if (required.length > 0) schema.required = required;
    schema.additionalProperties = false;
    return schema;
  }
  decode(value: unknown, path = ""): Decoded<S> {
    if (!isObject(value)) throw mismatch(path, "an object", value);
    for (const key of Object.keys(value)) {
      if (!Object.hasOwn(this.shape, key)) throw invalidAt(join(path, key), "unknown field");
    }
    const out: Record<string, unknown> = {};
    for (const [name, field] of Object.entries(this.shape)) {
      const present = Object.hasOwn(value, name);
      if (!present && !isOptionalField(field)) throw invalidAt(join(path, name), "missing field");
      const decoded = field.decode(present ? value[name] : undefined, join(path, name));
      if (decoded !== undefined) out[name] = decoded;
    }
    return out as Decoded<S>;
  }
  /** The `enum` values of the field `name`, if it is a tag (`t.literal` / `t.enum`). */
  tagValues(name: string): readonly Scalar[] | undefined {
    const field = this.shape[name];
    return field instanceof EnumSchema ? field.values : undefined;
  }
}

function isOptionalField(field: Schema<unknown>): boolean {
  return field instanceof OptionalSchema || field instanceof DefaultSchema;
}

/** One of several schemas (`anyOf`). Objects tagged by a literal field are chosen by their tag. */
class UnionSchema<T> extends Schema<T> {
  constructor(private readonly arms: Schema<unknown>[]) {
    super();
  }
  protected keywords(): JsonSchema {
    return { anyOf: this.arms.map((arm) => arm.jsonSchema()) };
  }
  decode(value: unknown, path = ""): T {
    const tagged = this.arms.filter((arm) => tagMatches(arm, value));
    if (tagged.length === 1) return tagged[0].decode(value, path) as T;
    const errors: string[] = [];
    for (const arm of this.arms) {
      try {
        return arm.decode(value, path) as T;
      } catch (e) {
        if (!(e instanceof InvalidInput)) throw e;
        errors.push(e.message);
      }
    }
    throw invalidAt(path, `matches no alternative: ${errors.join("; ")}`);
  }
}

/** Whether `value` carries every tag (literal field) of the object schema `arm`. */
function tagMatches(arm: Schema<unknown>, value: unknown): boolean {
  if (!(arm instanceof ObjectSchema) || !isObject(value)) return false;
  const tags = Object.keys(arm.shape).filter((name) => arm.tagValues(name)?.length === 1);
  return tags.length > 0 && tags.every((name) => arm.tagValues(name)!.includes(value[name] as Scalar));
}

type Arms = [Schema<unknown>, ...Schema<unknown>[]];

/** The schema builders. */
export const t = {
  string: (options?: StringOptions): Schema<string> => new StringSchema(options),
  number: (options?: NumberOptions): Schema<number> => new NumberSchema(false, options),
  integer: (options?: NumberOptions): Schema<number> => new NumberSchema(true, options),
  boolean: (): Schema<boolean> => new BooleanSchema(),
  null: (): Schema<null> => new NullSchema(),
  /** Any JSON value (schema `{}`). */
  any: (): Schema<Json> => new AnySchema(),
  /** Exactly `value`: a tag such as `op: t.literal("add")`. */
  literal: <const V extends Scalar>(value: V): Schema<V> => new EnumSchema([value]),
  /** One of `values`. */
  enum: <const V extends Scalar>(values: readonly [V, ...V[]]): Schema<V> => new EnumSchema(values),
  array: <T>(items: Schema<T>, options?: ArrayOptions): Schema<T[]> => new ArraySchema(items, options),
  /** An object with string keys and values of one type. */
  record: <T>(values: Schema<T>): Schema<Record<string, T>> => new RecordSchema(values),
  object: <S extends Shape>(shape: S): ObjectSchema<S> => new ObjectSchema(shape),
  /** Any of `arms`; a union of objects tagged by a literal field is a sub-command input. */
  union: <A extends Arms>(...arms: A): Schema<Infer<A[number]>> => new UnionSchema(arms),
};
