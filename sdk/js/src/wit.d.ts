// The host's imports as componentize-js presents them (records with camelCase fields, enums as
// strings, `option` as `undefined`, `list<u8>` as `Uint8Array`). A `result`'s error is thrown
// as an `Error` whose `payload` is the error variant. Mirrors ../../../wit/tool.wit.

declare module "toolhost:tool/state@0.1.0" {
  export type StateError =
    | { tag: "denied"; val: string }
    | { tag: "quota-exceeded"; val: string }
    | { tag: "invalid-key"; val: string }
    | { tag: "unavailable"; val: string };
  export function get(namespace: string, key: string): Uint8Array | undefined;
  export function set(namespace: string, key: string, value: Uint8Array): void;
  function del(namespace: string, key: string): boolean;
  export { del as delete };
  export function listKeys(namespace: string, prefix: string): string[];
}

declare module "toolhost:tool/model@0.1.0" {
  export type Role = "system" | "user" | "assistant" | "tool";
  export interface ToolCall {
    id: string;
    name: string;
    arguments: string;
  }
  export interface Message {
    role: Role;
    content: string;
    toolCalls: ToolCall[];
    toolCallId?: string;
  }
  export interface ToolDefinition {
    name: string;
    description: string;
    parameters: string;
  }
  export type ToolChoice = { tag: "auto" } | { tag: "none" } | { tag: "required" } | { tag: "named"; val: string };
  export interface ChatRequest {
    messages: Message[];
    tools: ToolDefinition[];
    toolChoice?: ToolChoice;
    maxTokens?: number;
    temperature?: number;
    stop: string[];
    responseSchema?: string;
  }
  export type FinishReason = "stop" | "length" | "tool-calls" | "content-filter" | "other";
  export interface ChatResponse {
    text: string;
    toolCalls: ToolCall[];
    finishReason: FinishReason;
    usage: { inputTokens: number; outputTokens: number };
    model: string;
  }
  export type ModelError =
    | { tag: "denied"; val: string }
    | { tag: "budget-exceeded"; val: string }
    | { tag: "rate-limited"; val: string }
    | { tag: "timeout"; val: string }
    | { tag: "provider-error"; val: { status?: number; message: string } }
    | { tag: "invalid-request"; val: string };
  export function chat(model: string, request: ChatRequest): ChatResponse;
}

declare module "toolhost:tool/log@0.1.0" {
  export type Level = "trace" | "debug" | "info" | "warn" | "error";
  export function log(level: Level, message: string): void;
}
