/**
 * Glue between a tool definition and the component's exports (`toolhost:tool/tool` and, for a
 * tool that declares `state`, `toolhost:tool/stateful`). The build's generated entry module
 * calls `componentExports`; componentize-js runs it at build time (Wizer), so a tool that does
 * not fit its world fails the build, and the schemas are serialized once, into the snapshot.
 */

import { InvalidInput, ToolError } from "./errors.js";
import { toJsonSchema } from "./schema.js";
import { type Capabilities, type CallContext, check, type ToolDefinition } from "./tool.js";

export const PLAIN = "plain-tool";
export const STATEFUL = "stateful-tool";
export type World = typeof PLAIN | typeof STATEFUL;

/** The world a definition is built for. */
export function worldOf(definition: ToolDefinition): World {
  return definition.state === undefined ? PLAIN : STATEFUL;
}

type WitAccess = "read" | "read-write";

function capabilities(caps: Capabilities) {
  const access = (table: Record<string, WitAccess> | undefined) => Object.entries(table ?? {});
  return {
    state: access(caps.state).map(([namespace, a]) => ({ namespace, access: a })),
    models: [...(caps.models ?? [])],
    filesystem: access(caps.filesystem).map(([guestPath, a]) => ({ guestPath, access: a })),
    network: [...(caps.network ?? [])],
    env: [...(caps.env ?? [])],
  };
}

type CallResult = { tag: "ok"; val: string } | { tag: "err"; val: { tag: string; val: string } };

function failure(e: unknown): CallResult {
  if (e instanceof ToolError) return { tag: "err", val: { tag: e.kind, val: e.message } };
  throw e; // not a tool error: trap, like a panic
}

function success(output: unknown): CallResult {
  const text = JSON.stringify(output);
  if (text === undefined) throw new TypeError("the tool's output has no JSON form");
  return { tag: "ok", val: text };
}

/** The export objects of `definition` for `world`. */
export function componentExports(definition: ToolDefinition, world: World) {
  check(definition);
  if (worldOf(definition) !== world) {
    throw new TypeError(`the tool fits the \`${worldOf(definition)}\` world, but is built for \`${world}\``);
  }
  const descriptor = {
    name: definition.name,
    description: definition.description,
    version: definition.version,
    inputSchema: JSON.stringify(toJsonSchema(definition.input)),
    outputSchema: definition.output === undefined ? undefined : JSON.stringify(toJsonSchema(definition.output)),
    capabilities: capabilities(definition.capabilities),
  };
  const context: CallContext<unknown> = { state: definition.state?.initial() };

  const tool = {
    describe: () => descriptor,
    call(input: string): CallResult | Promise<CallResult> {
      let output: unknown;
      try {
        let raw: unknown;
        try {
          raw = JSON.parse(input);
        } catch (e) {
          throw new InvalidInput(`input is not JSON: ${(e as Error).message}`);
        }
        output = definition.call(definition.input.decode(raw), context);
      } catch (e) {
        return failure(e);
      }
      if (output instanceof Promise) return output.then(success, failure);
      return success(output);
    },
  };
  if (world === PLAIN) return { tool, stateful: undefined };

  const state = definition.state!;
  const stateful = {
    snapshot: (): Uint8Array => new TextEncoder().encode(JSON.stringify(context.state)),
    restore(snapshot: Uint8Array): { tag: "ok"; val: undefined } | { tag: "err"; val: string } {
      try {
        context.state = state.schema.decode(JSON.parse(new TextDecoder().decode(snapshot)));
        return { tag: "ok", val: undefined };
      } catch (e) {
        return { tag: "err", val: `snapshot does not decode: ${(e as Error).message}` };
      }
    },
  };
  return { tool, stateful };
}

/** What the build learns by loading a tool's module under Node: its world and name. */
export function inspect(definition: unknown): { world: World; name: string } {
  if (typeof definition !== "object" || definition === null) {
    throw new TypeError("the tool's main module must `export default defineTool({...})`");
  }
  const tool = definition as ToolDefinition;
  check(tool);
  return { world: worldOf(tool), name: tool.name };
}
