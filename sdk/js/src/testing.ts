/**
 * An in-memory stand-in for the host, for a tool's unit tests under plain Node. The build maps
 * the host's imports (`toolhost:tool/*`) to this module when it loads a tool outside a
 * component, so the SDK and the tool run unchanged:
 *
 *     import { testing } from "@toolhost/tool/testing";
 *     testing.reset({ denied: ["secrets"] });
 *     const out = await testing.call(myTool, { text: "a b" }); // { ok: {...} } or { err: {...} }
 */

import { componentExports, worldOf } from "./export.js";
import type { ToolDefinition } from "./tool.js";

type StateErrorTag = "denied" | "quota-exceeded" | "invalid-key" | "unavailable";
type Level = "trace" | "debug" | "info" | "warn" | "error";

/** What `testing.reset` configures. */
export interface TestHostOptions {
  /** Namespaces whose every use is refused (`denied`). */
  denied?: string[];
  /** Namespaces granted read-only. */
  readOnly?: string[];
  /** Answers model calls; without one every model call is `denied`. */
  chat?: (alias: string, request: unknown) => unknown;
}

class HostError extends Error {
  constructor(readonly payload: { tag: string; val: unknown }) {
    super(`${payload.tag}: ${JSON.stringify(payload.val)}`);
  }
}

class TestHost {
  readonly state = new Map<string, Map<string, Uint8Array>>();
  readonly logs: { level: Level; message: string }[] = [];
  private options: TestHostOptions = {};
  private readonly instances = new Map<unknown, ReturnType<typeof componentExports>>();

  /** Clears state and logs and applies `options`. */
  reset(options: TestHostOptions = {}): void {
    this.state.clear();
    this.logs.length = 0;
    this.instances.clear();
    this.options = options;
  }

  namespace(name: string, write: boolean): Map<string, Uint8Array> {
    const fail = (tag: StateErrorTag, val: string) => new HostError({ tag, val });
    if (this.options.denied?.includes(name)) throw fail("denied", `namespace \`${name}\` is not granted`);
    if (write && this.options.readOnly?.includes(name)) throw fail("denied", `namespace \`${name}\` is read-only`);
    if (!/^[a-z0-9_-]{1,64}$/.test(name)) throw fail("invalid-key", `malformed namespace \`${name}\``);
    let table = this.state.get(name);
    if (table === undefined) this.state.set(name, (table = new Map()));
    return table;
  }

  chat(alias: string, request: unknown): unknown {
    if (this.options.chat === undefined) throw new HostError({ tag: "denied", val: `model \`${alias}\`` });
    return this.options.chat(alias, request);
  }

  /** Runs `definition` on `input` through the same glue as the component. One instance per
   * definition lives (with its in-memory state) until `forget` or `reset`. */
  async call(definition: ToolDefinition<any, any, any>, input: unknown): Promise<CallOutcome> {
    let exports = this.instances.get(definition);
    if (exports === undefined) {
      exports = componentExports(definition as ToolDefinition, worldOf(definition as ToolDefinition));
      this.instances.set(definition, exports);
    }
    const result = await exports.tool.call(JSON.stringify(input));
    return result.tag === "ok" ? { ok: JSON.parse(result.val) } : { err: result.val as CallOutcome["err"] & {} };
  }

  /** The snapshot a stateful tool's instance would hand the host now. */
  snapshot(definition: ToolDefinition<any, any, any>): string | undefined {
    const bytes = this.instances.get(definition)?.stateful?.snapshot();
    return bytes === undefined ? undefined : new TextDecoder().decode(bytes);
  }

  /** Drops the instance of `definition` (as a restart would); the next call starts fresh. */
  forget(definition: ToolDefinition<any, any, any>): void {
    this.instances.delete(definition);
  }

}

/** A tool call's outcome: its output, or its `tool-error` case. */
export interface CallOutcome {
  ok?: any;
  err?: { tag: "invalid-input" | "denied" | "failed"; val: string };
}

export const testing = new TestHost();

// The host's imports, as the component sees them.
export function get(namespace: string, key: string): Uint8Array | undefined {
  return testing.namespace(namespace, false).get(key);
}
export function set(namespace: string, key: string, value: Uint8Array): void {
  testing.namespace(namespace, true).set(key, Uint8Array.from(value));
}
function del(namespace: string, key: string): boolean {
  return testing.namespace(namespace, true).delete(key);
}
export { del as delete };
export function listKeys(namespace: string, prefix: string): string[] {
  return [...testing.namespace(namespace, false).keys()].filter((k) => k.startsWith(prefix)).sort();
}
export function chat(alias: string, request: unknown): unknown {
  return testing.chat(alias, request);
}
export function log(level: Level, message: string): void {
  testing.logs.push({ level, message });
  const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env;
  if (env?.TOOLHOST_TEST_LOG) console.error(`${level}: ${message}`);
}
