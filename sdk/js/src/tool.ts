/** `defineTool`: a tool's descriptor, schemas and `call`, checked when the tool is built. */

import { type Schema, toJsonSchema } from "./schema.js";

export type Access = "read" | "read-write";

/** What a tool asks the host to grant. The host's policy decides; a refusal is a `Denied`. */
export interface Capabilities {
  /** State namespaces (1-64 chars of [a-z0-9_-]) and the access wanted. */
  state?: Record<string, Access>;
  /** Model aliases the tool calls. */
  models?: string[];
  /** Directories (absolute guest paths) the tool wants to see. */
  filesystem?: Record<string, Access>;
  /** Hosts for outgoing HTTP(S). */
  network?: string[];
  /** Environment variables the tool reads. */
  env?: string[];
}

/** In-memory state kept across calls, which the host snapshots (as JSON) between steps. */
export interface StateSpec<S> {
  /** Checks a snapshot on restore. */
  schema: Schema<S>;
  /** The state of a fresh session. */
  initial: () => S;
}

/** What `call` gets besides its input. */
export interface CallContext<S> {
  /** The session's in-memory state (a stateful tool's); mutate it or assign a new one. */
  state: S;
}

export interface ToolSpec<I, O, S> {
  /** 1-64 chars of [a-z0-9_-]: agents and MCP clients call the tool by it. */
  name: string;
  /** One or two sentences for a model deciding whether to call the tool. */
  description: string;
  /** The tool's own version (semver); default 0.1.0. */
  version?: string;
  capabilities?: Capabilities;
  /** The input: the host validates every input against its JSON Schema before `call` runs. */
  input: Schema<I>;
  /** The output, reported in `describe` (not checked). */
  output?: Schema<O>;
  /** Declares in-memory state: the tool is then built for the `stateful-tool` world. */
  state?: StateSpec<S>;
  /** Runs one call. Throw a `ToolError` for an expected failure; anything else traps. */
  call(input: I, context: CallContext<S>): O | Promise<O>;
}

/** A checked tool definition: the default export of a tool's main module. */
export interface ToolDefinition<I = unknown, O = unknown, S = unknown> extends ToolSpec<I, O, S> {
  readonly version: string;
  readonly capabilities: Capabilities;
}

const NAME = /^[a-z0-9_-]{1,64}$/;
const VERSION = /^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$/;

/**
 * Defines a tool. The types of `input` and `state` flow into `call`:
 *
 *     export default defineTool({
 *       name: "shout", description: "Upper-cases text.",
 *       input: t.object({ text: t.string() }),
 *       call: ({ text }) => ({ text: text.toUpperCase() }),
 *     });
 */
export function defineTool<I, O, S = undefined>(spec: ToolSpec<I, O, S>): ToolDefinition<I, O, S> {
  const definition = { ...spec, version: spec.version ?? "0.1.0", capabilities: spec.capabilities ?? {} };
  check(definition);
  return definition;
}

/** Throws `TypeError` if `definition` is not a complete tool (run at build time, and by `defineTool`). */
export function check(definition: ToolDefinition): void {
  const { name, description, version, capabilities } = definition;
  if (typeof name !== "string" || !NAME.test(name)) {
    throw new TypeError(`the tool's name must be 1-64 chars of [a-z0-9_-], not ${JSON.stringify(name)}`);
  }
  if (typeof description !== "string" || description.trim() === "") {
    throw new TypeError(`the tool \`${name}\` needs a description`);
  }
  if (!VERSION.test(version)) throw new TypeError(`the tool \`${name}\`'s version is not semver: ${version}`);
  if (typeof definition.call !== "function") throw new TypeError(`the tool \`${name}\` needs a call function`);
  if (definition.input === undefined) throw new TypeError(`the tool \`${name}\` needs an input schema`);
  for (const namespace of Object.keys(capabilities.state ?? {})) {
    if (!NAME.test(namespace)) throw new TypeError(`state namespace ${JSON.stringify(namespace)} is malformed`);
  }
  toJsonSchema(definition.input);
  if (definition.output !== undefined) toJsonSchema(definition.output);
  if (definition.state !== undefined) definition.state.schema.decode(definition.state.initial());
}
