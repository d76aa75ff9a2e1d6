// The few web globals the SDK uses; both StarlingMonkey (inside the component) and Node have them.
declare class TextEncoder {
  encode(input?: string): Uint8Array;
}
declare class TextDecoder {
  constructor(label?: string, options?: { fatal?: boolean });
  decode(input?: Uint8Array): string;
}
declare const console: { log(...data: unknown[]): void; error(...data: unknown[]): void };
declare class URL {
  constructor(url: string);
  readonly protocol: string;
  readonly host: string;
  readonly pathname: string;
  readonly search: string;
}
