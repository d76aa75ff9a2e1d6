/**
 * Diagnostics to the host's log, tagged with the session and tool; never replayed. Under the
 * SDK's test host (plain Node) lines go to `testing.logs` and stderr.
 */

import { log as write, type Level } from "toolhost:tool/log@0.1.0";

function text(part: unknown): string {
  if (typeof part === "string") return part;
  try {
    return JSON.stringify(part) ?? String(part);
  } catch {
    return String(part); // cycles, BigInt
  }
}

function line(level: Level, parts: unknown[]): void {
  write(level, parts.map(text).join(" "));
}

export const trace = (...parts: unknown[]): void => line("trace", parts);
export const debug = (...parts: unknown[]): void => line("debug", parts);
export const info = (...parts: unknown[]): void => line("info", parts);
export const warn = (...parts: unknown[]): void => line("warn", parts);
export const error = (...parts: unknown[]): void => line("error", parts);
