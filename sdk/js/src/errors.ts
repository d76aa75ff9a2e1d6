/**
 * Tool errors: throw one from `call` and the host gets the matching `tool-error` case.
 *
 * Any other exception escaping `call` traps the instance, like a panic in a Rust tool: the host
 * discards the step's state writes and rebuilds the instance from its last snapshot.
 */

/** The `tool-error` case an error maps to. */
export type ToolErrorKind = "invalid-input" | "denied" | "failed";

/** Base of the errors a tool reports. Throw one of its subclasses. */
export abstract class ToolError extends Error {
  abstract readonly kind: ToolErrorKind;
}

/** The input was well-formed JSON but unusable (schema, range, semantics). */
export class InvalidInput extends ToolError {
  readonly kind = "invalid-input";
  override name = "InvalidInput";
}

/** A capability the tool needed was denied by the host. */
export class Denied extends ToolError {
  readonly kind = "denied";
  override name = "Denied";
}

/** The tool ran and could not complete the request. */
export class Failed extends ToolError {
  readonly kind = "failed";
  override name = "Failed";
}

/** A state operation failed (quota, malformed key, store unavailable). */
export class StateError extends Failed {
  override name = "StateError";
}

/** The state namespace is not granted, or only for reading. */
export class StateDenied extends Denied {
  override name = "StateDenied";
}

/** A model call failed (budget, rate limit, timeout, provider, bad request). */
export class ModelError extends Failed {
  override name = "ModelError";
}

/** The model alias is not granted to this tool. */
export class ModelDenied extends Denied {
  override name = "ModelDenied";
}

/** The host's policy does not allow this HTTP destination. */
export class HttpDenied extends Denied {
  override name = "HttpDenied";
}

/** An allowed HTTP request failed (connection, TLS, timeout, protocol, bad URL). */
export class HttpError extends Failed {
  override name = "HttpError";
}
