/**
 * Outgoing HTTP(S) through the host (`wasi:http`), synchronous.
 *
 * The host sends a request only if its destination is on the tool's network allowlist (request
 * hosts with `capabilities: { network: ["api.example.com"] }`); anything else throws `HttpDenied`
 * (a `Denied`, audited by the host). An allowed request that fails throws `HttpError` (a
 * `Failed`). The host journals every exchange, so a resumed session gets the recorded responses
 * without sending the requests again.
 *
 *     const page = http.get("https://api.example.com/v1/items", { headers: { accept: "application/json" } });
 *     const items = page.json();
 *     http.post("https://api.example.com/v1/items", { json: { name: "x" } });
 */

import { handle } from "wasi:http/outgoing-handler@0.2.12";
import * as wasi from "wasi:http/types@0.2.12";

import { HttpDenied, HttpError } from "./errors.js";
import type { Json } from "./schema.js";
import { payloadOf } from "./state.js";

/** Headers as an object or as (name, value) pairs (for repeated names). */
export type Headers = Record<string, string> | [string, string][];

export interface RequestOptions {
  headers?: Headers;
  /** The body: bytes, or text sent as UTF-8. */
  body?: Uint8Array | string;
  /** A body serialized as JSON, sent with `content-type: application/json` unless set. */
  json?: unknown;
}

const encoder = new TextEncoder();
const CHUNK = 4096; // the most `blocking-write-and-flush` takes at once
const READ = 64n << 10n;

/** A response, read whole. */
export class Response {
  constructor(
    readonly status: number,
    /** Header names (lowercase) and raw values, in the order received. */
    readonly headers: [string, Uint8Array][],
    readonly body: Uint8Array,
  ) {}

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /** The first value of header `name` (any case) as text; `undefined` if absent. */
  header(name: string): string | undefined {
    const wanted = name.toLowerCase();
    const found = this.headers.find(([key]) => key.toLowerCase() === wanted);
    return found === undefined ? undefined : String.fromCharCode(...found[1]);
  }

  /** The body as UTF-8 text (undecodable bytes replaced). */
  text(): string {
    return new TextDecoder().decode(this.body);
  }

  /** The body parsed as JSON; `HttpError` if it is not JSON. */
  json(): Json {
    try {
      return JSON.parse(this.text()) as Json;
    } catch (e) {
      throw new HttpError(`the response body is not JSON: ${(e as Error).message}`);
    }
  }
}

/** GET `url`. */
export function get(url: string, options: Omit<RequestOptions, "body" | "json"> = {}): Response {
  return request("GET", url, options);
}

/** POST `options.body` or `options.json` to `url`. */
export function post(url: string, options: RequestOptions = {}): Response {
  return request("POST", url, options);
}

/** Sends `method` to `url` (`http://` or `https://`) and reads the whole response. */
export function request(method: string, url: string, options: RequestOptions = {}): Response {
  const headers = headerPairs(options.headers);
  let body = options.body;
  if (options.json !== undefined) {
    if (body !== undefined) throw invalid("pass `body` or `json`, not both");
    body = JSON.stringify(options.json);
    if (!headers.some(([name]) => name.toLowerCase() === "content-type")) {
      headers.push(["content-type", "application/json"]);
    }
  }
  const bytes = typeof body === "string" ? encoder.encode(body) : (body ?? new Uint8Array());
  return send(method, target(url), headers, bytes);
}

function headerPairs(headers: Headers | undefined): [string, string][] {
  if (headers === undefined) return [];
  return Array.isArray(headers) ? headers.map(([n, v]) => [n, v]) : Object.entries(headers);
}

function invalid(message: string): HttpError {
  return new HttpError(`invalid HTTP request: ${message}`);
}

interface Target {
  scheme: wasi.Scheme;
  authority: string;
  pathWithQuery: string;
}

function target(url: string): Target {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid(`not a URL: ${JSON.stringify(url)}`);
  }
  const scheme = parsed.protocol === "http:" ? "http" : parsed.protocol === "https:" ? "https" : undefined;
  if (scheme === undefined) throw invalid(`unsupported scheme \`${parsed.protocol}\` in ${url} (http or https)`);
  if (parsed.host === "") throw invalid(`no host in ${url}`);
  return {
    scheme: { tag: scheme === "http" ? "HTTP" : "HTTPS" },
    authority: parsed.host,
    pathWithQuery: (parsed.pathname || "/") + parsed.search,
  };
}

const METHODS = ["get", "head", "post", "put", "delete", "patch", "options"] as const;

function method(name: string): wasi.Method {
  const lower = name.toLowerCase() as (typeof METHODS)[number];
  return METHODS.includes(lower) ? { tag: lower } : { tag: "other", val: name.toUpperCase() };
}

function failure(code: wasi.ErrorCode): Error {
  if (code.tag === "HTTP-request-denied") {
    return new HttpDenied("HTTP request denied: the destination is not on the tool's allowlist");
  }
  const detail = "val" in code && code.val !== undefined ? `(${JSON.stringify(code.val)})` : "";
  return new HttpError(`HTTP request failed: ${code.tag}${detail}`);
}

const DISPOSE: symbol = (Symbol as { dispose?: symbol }).dispose ?? Symbol.for("dispose");

/** Drops a host resource now (a child must go before its parent, or the host traps). */
function drop(resource: object): void {
  (resource as Record<symbol, () => void>)[DISPOSE]();
}

/** Runs `run`, turning a host error variant into what `map` makes of it. */
function hostCall<T, P extends { tag: string }>(run: () => T, map: (payload: P) => Error): T {
  try {
    return run();
  } catch (e) {
    const payload = payloadOf<P>(e);
    throw payload === undefined ? e : map(payload);
  }
}

function send(name: string, to: Target, headers: [string, string][], body: Uint8Array): Response {
  const fields = hostCall(
    () => wasi.Fields.fromList(headers.map(([n, v]) => [n, encoder.encode(v)])),
    (e: wasi.HeaderError) => invalid(`headers: ${e.tag}`),
  );
  const request = new wasi.OutgoingRequest(fields);
  const set = (what: string, run: () => void) => hostCall(run, () => invalid(what));
  set("method", () => request.setMethod(method(name)));
  set("scheme", () => request.setScheme(to.scheme));
  set("authority", () => request.setAuthority(to.authority));
  set("path", () => request.setPathWithQuery(to.pathWithQuery));
  const outgoing = request.body();
  const future = hostCall(() => handle(request, undefined), failure);
  try {
    const stream = outgoing.write();
    try {
      for (let start = 0; start < body.length; start += CHUNK) {
        hostCall(
          () => stream.blockingWriteAndFlush(body.subarray(start, start + CHUNK)),
          (e: wasi.StreamError) => new HttpError(`HTTP request failed sending the body: ${e.tag}`),
        );
      }
    } finally {
      drop(stream);
    }
    hostCall(() => wasi.OutgoingBody.finish(outgoing, undefined), failure);
    const ready = future.subscribe();
    ready.block();
    drop(ready);
    const outcome = future.get();
    if (outcome === undefined || outcome.tag === "err") {
      throw new HttpError("HTTP request failed: no response after the request completed");
    }
    if (outcome.val.tag === "err") throw failure(outcome.val.val);
    return readResponse(outcome.val.val);
  } finally {
    drop(future);
  }
}

function readResponse(response: wasi.IncomingResponse): Response {
  try {
    const fields = response.headers();
    const headers = fields.entries();
    drop(fields);
    const incoming = response.consume();
    const chunks: Uint8Array[] = [];
    try {
      const stream = incoming.stream();
      try {
        for (;;) {
          const chunk = readChunk(stream);
          if (chunk === undefined) break;
          chunks.push(chunk);
        }
      } finally {
        drop(stream);
      }
    } finally {
      drop(incoming);
    }
    return new Response(response.status(), headers, concat(chunks));
  } finally {
    drop(response);
  }
}

/** The next chunk of the body; `undefined` at its end. */
function readChunk(stream: wasi.InputStream): Uint8Array | undefined {
  try {
    return stream.blockingRead(READ);
  } catch (e) {
    const err = payloadOf<wasi.StreamError>(e);
    if (err === undefined) throw e;
    if (err.tag === "closed") return undefined;
    const code = wasi.httpErrorCode(err.val);
    throw code === undefined ? new HttpError("HTTP request failed reading the body") : failure(code);
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
