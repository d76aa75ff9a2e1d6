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

// The parts of wasi:http the SDK's `http` module uses (the SDK's worlds in ../../wit/sdk.wit).
// Resources are classes; `[Symbol.dispose]` (or `Symbol.for("dispose")`) drops one.

declare module "wasi:io/streams@0.2.12" {
  export class InputStream {
    blockingRead(len: bigint): Uint8Array;
  }
  export class OutputStream {
    blockingWriteAndFlush(contents: Uint8Array): void;
  }
  export type StreamError = { tag: "last-operation-failed"; val: object } | { tag: "closed" };
}

declare module "wasi:http/types@0.2.12" {
  import type { InputStream, OutputStream } from "wasi:io/streams@0.2.12";
  export type { InputStream, OutputStream, StreamError } from "wasi:io/streams@0.2.12";
  export type Method =
    | { tag: "get" | "head" | "post" | "put" | "delete" | "connect" | "options" | "trace" | "patch" }
    | { tag: "other"; val: string };
  export type Scheme = { tag: "HTTP" | "HTTPS" } | { tag: "other"; val: string };
  /** The `error-code` variant; `tag` is the WIT case name, e.g. `HTTP-request-denied`. */
  export type ErrorCode = { tag: string; val?: unknown };
  export type HeaderError = { tag: "invalid-syntax" | "forbidden" | "immutable" };
  export class Pollable {
    block(): void;
  }
  export class Fields {
    static fromList(entries: [string, Uint8Array][]): Fields;
    entries(): [string, Uint8Array][];
  }
  export class OutgoingRequest {
    constructor(headers: Fields);
    body(): OutgoingBody;
    setMethod(method: Method): void;
    setScheme(scheme: Scheme | undefined): void;
    setAuthority(authority: string | undefined): void;
    setPathWithQuery(path: string | undefined): void;
  }
  export class OutgoingBody {
    write(): OutputStream;
    static finish(body: OutgoingBody, trailers: Fields | undefined): void;
  }
  export class IncomingResponse {
    status(): number;
    headers(): Fields;
    consume(): IncomingBody;
  }
  export class IncomingBody {
    stream(): InputStream;
  }
  export type ResponseOutcome = { tag: "ok"; val: IncomingResponse } | { tag: "err"; val: ErrorCode };
  export class FutureIncomingResponse {
    subscribe(): Pollable;
    get(): { tag: "ok"; val: ResponseOutcome } | { tag: "err"; val: undefined } | undefined;
  }
  export function httpErrorCode(err: object): ErrorCode | undefined;
}

declare module "wasi:http/outgoing-handler@0.2.12" {
  import type { FutureIncomingResponse, OutgoingRequest } from "wasi:http/types@0.2.12";
  export function handle(request: OutgoingRequest, options: undefined): FutureIncomingResponse;
}
