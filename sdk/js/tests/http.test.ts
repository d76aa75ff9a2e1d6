// The `http` module on the SDK's test host: requests reach `TestHostOptions.http` with their
// method, URL, headers and body; answers come back whole; a refusal is `HttpDenied`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { defineTool, http, HttpDenied, HttpError, t } from "@toolhost/tool";
import { testing } from "@toolhost/tool/testing";

const fetcher = defineTool({
  name: "fetcher",
  description: "Fetches a URL.",
  capabilities: { network: ["api.example.com"] },
  input: t.object({ url: t.string(), post: t.any().optional() }),
  call({ url, post }) {
    const response = post === undefined ? http.get(url) : http.post(url, { json: post });
    return { status: response.status, type: response.header("Content-Type") ?? null, body: response.json() };
  },
});

test("a request reaches the host whole and its response comes back", async () => {
  testing.reset({
    http: (request) => ({
      status: 201,
      headers: [["Content-Type", "application/json"]],
      body: JSON.stringify({ method: request.method, url: request.url, got: new TextDecoder().decode(request.body) }),
    }),
  });
  const out = await testing.call(fetcher, { url: "https://api.example.com/v1/items?x=1", post: { n: 2 } });
  assert.deepEqual(out, {
    ok: {
      status: 201,
      type: "application/json",
      body: { method: "POST", url: "https://api.example.com/v1/items?x=1", got: '{"n":2}' },
    },
  });
  assert.deepEqual(testing.requests[0]!.headers, [["content-type", "application/json"]]);
});

test("a refused destination is HttpDenied, a failure HttpError, a bad URL is refused before sending", async () => {
  testing.reset();
  assert.deepEqual(await testing.call(fetcher, { url: "https://elsewhere.example.org/" }), {
    err: { tag: "denied", val: "HTTP request denied: the destination is not on the tool's allowlist" },
  });
  testing.reset({ http: () => "connection-refused" });
  assert.deepEqual(await testing.call(fetcher, { url: "https://api.example.com/" }), {
    err: { tag: "failed", val: "HTTP request failed: connection-refused" },
  });
  const bad = await testing.call(fetcher, { url: "ftp://api.example.com/" });
  assert.equal(bad.err?.tag, "failed");
  assert.match(bad.err!.val, /unsupported scheme `ftp:`/);
  assert.equal(testing.requests.length, 1);
  assert.ok(new HttpDenied("x") instanceof Error && new HttpError("x").kind === "failed");
});
