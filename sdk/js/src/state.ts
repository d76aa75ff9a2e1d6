/**
 * Persisted key-value state, scoped by the host to (session, tool, namespace).
 *
 * Within a step, writes are buffered and reads see the step's own writes; the host commits them
 * only if `call` returns without a trap. Declare each namespace in the tool's `capabilities`.
 *
 *     const notes = new Namespace("notes");
 *     notes.setJson("note/1", { title: "hi" });
 *     notes.getJson("note/1", Note); // decoded and checked against the schema `Note`
 */

import * as wit from "toolhost:tool/state@0.1.0";

import { StateDenied, StateError } from "./errors.js";
import type { Json, Schema } from "./schema.js";

/** The host's error variant from a failed import call, if `e` carries one. */
export function payloadOf<P extends { tag: string }>(e: unknown): P | undefined {
  const payload = (e as { payload?: unknown } | null)?.payload;
  return typeof payload === "object" && payload !== null && "tag" in payload ? (payload as P) : undefined;
}

function stateCall<T>(action: string, run: () => T): T {
  try {
    return run();
  } catch (e) {
    const err = payloadOf<wit.StateError>(e);
    if (err === undefined) throw e;
    const message = `${action}: ${err.val}`;
    switch (err.tag) {
      case "denied":
        throw new StateDenied(`state access denied: ${message}`);
      case "quota-exceeded":
        throw new StateError(`state quota exceeded: ${message}`);
      case "invalid-key":
        throw new StateError(`invalid state key: ${message}`);
      default:
        throw new StateError(`state unavailable: ${message}`);
    }
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A handle on one state namespace. Errors are `StateDenied` (a `Denied`) or `StateError`. */
export class Namespace {
  constructor(readonly name: string) {}

  /** The bytes under `key`; `undefined` if absent. */
  get(key: string): Uint8Array | undefined {
    return stateCall(`get \`${key}\` in \`${this.name}\``, () => wit.get(this.name, key));
  }

  /** Writes `value` (bytes, or a string as UTF-8) under `key`. */
  set(key: string, value: Uint8Array | string): void {
    const bytes = typeof value === "string" ? encoder.encode(value) : value;
    stateCall(`set \`${key}\` in \`${this.name}\``, () => wit.set(this.name, key, bytes));
  }

  /** Deletes `key`; whether it existed. */
  delete(key: string): boolean {
    return stateCall(`delete \`${key}\` in \`${this.name}\``, () => wit.delete(this.name, key));
  }

  /** The keys starting with `prefix`, in byte order. */
  listKeys(prefix = ""): string[] {
    return stateCall(`list keys in \`${this.name}\``, () => wit.listKeys(this.name, prefix));
  }

  /** The value under `key` as UTF-8 text; `undefined` if absent. */
  getText(key: string): string | undefined {
    const raw = this.get(key);
    if (raw === undefined) return undefined;
    try {
      return decoder.decode(raw);
    } catch {
      throw new StateError(`\`${key}\` in \`${this.name}\` is not UTF-8`);
    }
  }

  /** The value under `key` parsed as JSON, decoded by `schema` if given; `undefined` if absent. */
  getJson(key: string): Json | undefined;
  getJson<T>(key: string, schema: Schema<T>): T | undefined;
  getJson<T>(key: string, schema?: Schema<T>): T | Json | undefined {
    const text = this.getText(key);
    if (text === undefined) return undefined;
    let value: Json;
    try {
      value = JSON.parse(text) as Json;
    } catch (e) {
      throw new StateError(`\`${key}\` in \`${this.name}\` is not JSON: ${(e as Error).message}`);
    }
    if (schema === undefined) return value;
    try {
      return schema.decode(value);
    } catch (e) {
      throw new StateError(`\`${key}\` in \`${this.name}\` does not decode: ${(e as Error).message}`);
    }
  }

  /** Writes `value` as JSON under `key`. */
  setJson(key: string, value: unknown): void {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`setJson(\`${key}\`): the value has no JSON form`);
    this.set(key, text);
  }
}
