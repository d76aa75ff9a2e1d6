/**
 * The toolhost SDK for TypeScript and JavaScript tools. See README, "Writing a tool in TypeScript".
 *
 *     import { defineTool, t } from "@toolhost/tool";
 *
 *     export default defineTool({
 *       name: "shout",
 *       description: "Upper-cases text.",
 *       input: t.object({ text: t.string() }),
 *       call: ({ text }) => ({ text: text.toUpperCase() }),
 *     });
 */

export * as http from "./http.js";
export * as log from "./log.js";
export * as model from "./model.js";
export {
  Denied,
  Failed,
  HttpDenied,
  HttpError,
  InvalidInput,
  ModelDenied,
  ModelError,
  StateDenied,
  StateError,
  ToolError,
  type ToolErrorKind,
} from "./errors.js";
export { type Decoded, type Infer, type Json, type JsonSchema, Schema, t, toJsonSchema } from "./schema.js";
export { Namespace } from "./state.js";
export {
  type Access,
  type CallContext,
  type Capabilities,
  defineTool,
  type StateSpec,
  type ToolDefinition,
  type ToolSpec,
} from "./tool.js";
