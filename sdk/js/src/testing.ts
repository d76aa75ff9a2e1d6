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
  /** Answers HTTP requests (or returns a `wasi:http` error-code tag such as `connection-refused`);
   * without one every request is denied (`HTTP-request-denied`). */
  http?: (request: TestRequest) => TestResponse | string;
}

/** A request the tool sent, as `TestHostOptions.http` sees it. */
export interface TestRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: Uint8Array;
}

/** What `TestHostOptions.http` answers. */
export interface TestResponse {
  status: number;
  headers?: [string, string][];
  body?: Uint8Array | string;
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
    this.requests.length = 0;
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

  /** The requests the tool sent, in order (since the last `reset`). */
  readonly requests: TestRequest[] = [];

  send(request: TestRequest): { tag: "ok"; val: IncomingResponse } | { tag: "err"; val: { tag: string } } {
    this.requests.push(request);
    const answer = this.options.http?.(request) ?? "HTTP-request-denied";
    if (typeof answer === "string") return { tag: "err", val: { tag: answer } };
    const encoder = new TextEncoder();
    const body = typeof answer.body === "string" ? encoder.encode(answer.body) : (answer.body ?? new Uint8Array());
    const headers = (answer.headers ?? []).map(([n, v]): [string, Uint8Array] => [n.toLowerCase(), encoder.encode(v)]);
    return { tag: "ok", val: new IncomingResponse(answer.status, headers, body) };
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

// wasi:http, as the SDK's `http` module uses it: requests go to `TestHostOptions.http`.
const DISPOSE: symbol = (Symbol as { dispose?: symbol }).dispose ?? Symbol.for("dispose");

class Resource {
  [DISPOSE](): void {}
}

export class Fields extends Resource {
  constructor(readonly list: [string, Uint8Array][]) {
    super();
  }
  static fromList(entries: [string, Uint8Array][]): Fields {
    return new Fields(entries.map(([n, v]) => [n.toLowerCase(), Uint8Array.from(v)]));
  }
  entries(): [string, Uint8Array][] {
    return this.list;
  }
}

type Tagged = { tag: string; val?: string };

export class OutgoingRequest extends Resource {
  method: Tagged = { tag: "get" };
  url = { scheme: "http", authority: "", path: "/" };
  readonly chunks: Uint8Array[] = [];
  constructor(readonly headers: Fields) {
    super();
  }
  body(): OutgoingBody {
    return new OutgoingBody(this);
  }
  setMethod(method: Tagged): void {
    this.method = method;
  }
  setScheme(scheme: Tagged): void {
    this.url.scheme = (scheme.val ?? scheme.tag).toLowerCase();
  }
  setAuthority(authority: string): void {
    this.url.authority = authority;
  }
  setPathWithQuery(path: string): void {
    this.url.path = path;
  }
  toTest(): TestRequest {
    const decoder = new TextDecoder();
    const body = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
    this.chunks.reduce((at, c) => (body.set(c, at), at + c.length), 0);
    return {
      method: (this.method.val ?? this.method.tag).toUpperCase(),
      url: `${this.url.scheme}://${this.url.authority}${this.url.path}`,
      headers: this.headers.list.map(([n, v]) => [n, decoder.decode(v)]),
      body,
    };
  }
}

export class OutgoingBody extends Resource {
  constructor(readonly request: OutgoingRequest) {
    super();
  }
  write(): OutputStream {
    return new OutputStream(this.request);
  }
  static finish(): void {}
}

export class OutputStream extends Resource {
  constructor(readonly request: OutgoingRequest) {
    super();
  }
  blockingWriteAndFlush(contents: Uint8Array): void {
    this.request.chunks.push(Uint8Array.from(contents));
  }
}

class Pollable extends Resource {
  block(): void {}
}

export class IncomingResponse extends Resource {
  constructor(
    readonly code: number,
    readonly list: [string, Uint8Array][],
    readonly bytes: Uint8Array,
  ) {
    super();
  }
  status(): number {
    return this.code;
  }
  headers(): Fields {
    return new Fields(this.list);
  }
  consume(): IncomingBody {
    return new IncomingBody(this.bytes);
  }
}

class IncomingBody extends Resource {
  constructor(readonly bytes: Uint8Array) {
    super();
  }
  stream(): InputStream {
    return new InputStream(this.bytes);
  }
}

class InputStream extends Resource {
  private done = false;
  constructor(readonly bytes: Uint8Array) {
    super();
  }
  blockingRead(): Uint8Array {
    if (this.done) throw new HostError({ tag: "closed", val: undefined });
    this.done = true;
    return this.bytes;
  }
}

class FutureIncomingResponse extends Resource {
  constructor(readonly request: OutgoingRequest) {
    super();
  }
  subscribe(): Pollable {
    return new Pollable();
  }
  get() {
    return { tag: "ok" as const, val: testing.send(this.request.toTest()) };
  }
}

export function handle(request: OutgoingRequest): FutureIncomingResponse {
  return new FutureIncomingResponse(request);
}

export function httpErrorCode(): undefined {
  return undefined;
}
