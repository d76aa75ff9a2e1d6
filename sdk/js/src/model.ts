/**
 * Language-model calls through the host, which holds the keys, enforces the grant and budgets,
 * and journals each response so a resumed session never repeats a call.
 *
 *     const reply = model.complete("default", "Summarize: ...");
 *     const { value } = model.structured("default", Summary, [model.user("Summarize: ...")]);
 */

import * as wit from "toolhost:tool/model@0.1.0";

import { ModelDenied, ModelError } from "./errors.js";
import { type Json, type Schema, toJsonSchema } from "./schema.js";
import { payloadOf } from "./state.js";

export type Role = wit.Role;

export interface Message {
  role: Role;
  content: string;
  /** On `tool` messages: the call this answers. */
  toolCallId?: string;
}

export const system = (content: string): Message => ({ role: "system", content });
export const user = (content: string): Message => ({ role: "user", content });
export const assistant = (content: string): Message => ({ role: "assistant", content });

export interface ToolCall {
  id: string;
  name: string;
  /** The parsed JSON arguments. */
  arguments: Json;
}

export interface Response {
  text: string;
  toolCalls: ToolCall[];
  finishReason: wit.FinishReason;
  inputTokens: number;
  outputTokens: number;
  /** The provider's model id that answered. */
  model: string;
}

export interface ChatOptions {
  maxTokens?: number;
  temperature?: number;
  stop?: string[];
  /** If set, the reply text is JSON conforming to this JSON Schema. */
  responseSchema?: Json;
}

/** Sends a chat request to the model behind `alias`. Throws `ModelDenied` or `ModelError`. */
export function chat(alias: string, messages: Message[], options: ChatOptions = {}): Response {
  const request: wit.ChatRequest = {
    messages: messages.map((m) => ({ role: m.role, content: m.content, toolCalls: [], toolCallId: m.toolCallId })),
    tools: [],
    toolChoice: undefined,
    maxTokens: options.maxTokens,
    temperature: options.temperature,
    stop: options.stop ?? [],
    responseSchema: options.responseSchema === undefined ? undefined : JSON.stringify(options.responseSchema),
  };
  let response: wit.ChatResponse;
  try {
    response = wit.chat(alias, request);
  } catch (e) {
    const err = payloadOf<wit.ModelError>(e);
    throw err === undefined ? e : modelError(err);
  }
  return {
    text: response.text,
    toolCalls: response.toolCalls.map((c) => ({ id: c.id, name: c.name, arguments: parseArguments(c.arguments) })),
    finishReason: response.finishReason,
    inputTokens: response.usage.inputTokens,
    outputTokens: response.usage.outputTokens,
    model: response.model,
  };
}

function parseArguments(text: string): Json {
  try {
    return JSON.parse(text || "null") as Json;
  } catch (e) {
    throw new ModelError(`a tool call's arguments are not JSON: ${(e as Error).message}`);
  }
}

/** One user prompt in, the reply text out. */
export function complete(alias: string, prompt: string, options: ChatOptions = {}): string {
  return chat(alias, [user(prompt)], options).text;
}

/** Asks for JSON matching `schema` and decodes the reply with it. */
export function structured<T>(
  alias: string,
  schema: Schema<T>,
  messages: Message[],
  options: Omit<ChatOptions, "responseSchema"> = {},
): { value: T; response: Response } {
  const response = chat(alias, messages, { ...options, responseSchema: toJsonSchema(schema) });
  let parsed: unknown;
  try {
    parsed = JSON.parse(response.text);
  } catch (e) {
    throw new ModelError(`the model's reply is not JSON: ${(e as Error).message}`);
  }
  try {
    return { value: schema.decode(parsed), response };
  } catch (e) {
    throw new ModelError(`the model's reply does not decode: ${(e as Error).message}`);
  }
}

function modelError(err: wit.ModelError): Error {
  switch (err.tag) {
    case "denied":
      return new ModelDenied(`model call denied: ${err.val}`);
    case "provider-error": {
      const status = err.val.status === undefined ? "" : ` (HTTP ${err.val.status})`;
      return new ModelError(`model provider error${status}: ${err.val.message}`);
    }
    case "budget-exceeded":
      return new ModelError(`model budget exceeded: ${err.val}`);
    case "rate-limited":
      return new ModelError(`model rate limited: ${err.val}`);
    case "timeout":
      return new ModelError(`model call timed out: ${err.val}`);
    default:
      return new ModelError(`invalid model request: ${err.val}`);
  }
}
