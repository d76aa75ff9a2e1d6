// Tools through the component glue, on the SDK's test host: errors map to `tool-error` cases,
// state and snapshots work, bad definitions are refused.
import assert from "node:assert/strict";
import { test } from "node:test";

import { defineTool, Failed, Namespace, StateDenied, t } from "@toolhost/tool";
import { testing } from "@toolhost/tool/testing";
import { componentExports } from "@toolhost/tool/export";

const counter = defineTool({
  name: "counter",
  description: "Counts calls and stores the last word.",
  capabilities: { state: { words: "read-write" } },
  input: t.object({ word: t.string(), fail: t.boolean().default(false) }),
  state: { schema: t.object({ calls: t.integer() }), initial: () => ({ calls: 0 }) },
  call(input, session) {
    if (input.fail) throw new Failed("failing on request");
    session.state.calls += 1;
    new Namespace("words").set("last", input.word);
    return { calls: session.state.calls, last: new Namespace("words").getText("last") };
  },
});

test("a call decodes its input, keeps its state and writes through the state interface", async () => {
  testing.reset();
  assert.deepEqual(await testing.call(counter, { word: "a" }), { ok: { calls: 1, last: "a" } });
  assert.deepEqual(await testing.call(counter, { word: "b" }), { ok: { calls: 2, last: "b" } });
  assert.equal(testing.snapshot(counter), '{"calls":2}');
});

test("tool errors are `tool-error` cases; input errors name the field", async () => {
  testing.reset();
  assert.deepEqual(await testing.call(counter, { word: "a", fail: true }), {
    err: { tag: "failed", val: "failing on request" },
  });
  assert.deepEqual(await testing.call(counter, { word: 1 }), {
    err: { tag: "invalid-input", val: "at `word`: expected a string, got an integer" },
  });
  testing.reset({ denied: ["words"] });
  const denied = await testing.call(counter, { word: "a" });
  assert.equal(denied.err?.tag, "denied");
  assert.match(denied.err!.val, /state access denied: set `last` in `words`/);
});

test("a denied namespace throws StateDenied; an exception that is no ToolError escapes (a trap)", async () => {
  testing.reset({ denied: ["secrets"] });
  assert.throws(() => new Namespace("secrets").get("k"), StateDenied);
  const trapping = defineTool({
    name: "trapping",
    description: "Throws a plain error.",
    input: t.object({}),
    call() {
      throw new RangeError("bug");
    },
  });
  await assert.rejects(testing.call(trapping, {}), RangeError);
});

test("async calls are awaited", async () => {
  testing.reset();
  const slow = defineTool({
    name: "slow",
    description: "Answers later.",
    input: t.object({ n: t.number() }),
    call: async ({ n }) => ({ twice: await Promise.resolve(n * 2) }),
  });
  assert.deepEqual(await testing.call(slow, { n: 21 }), { ok: { twice: 42 } });
});

test("snapshots restore into a fresh instance, and a bad snapshot is refused", async () => {
  testing.reset();
  const first = componentExports(counter, "stateful-tool");
  await first.tool.call('{"word":"a"}');
  const snapshot = first.stateful!.snapshot();
  const second = componentExports(counter, "stateful-tool");
  assert.deepEqual(second.stateful!.restore(snapshot), { tag: "ok", val: undefined });
  assert.deepEqual(await second.tool.call('{"word":"b"}'), { tag: "ok", val: '{"calls":2,"last":"b"}' });
  const bad = second.stateful!.restore(new TextEncoder().encode('{"calls":"x"}'));
  assert.equal(bad.tag, "err");
  assert.match(String(bad.val), /at `calls`: expected an integer/);
});

test("describe reports the schemas and capabilities; the world follows the state declaration", () => {
  const { tool } = componentExports(counter, "stateful-tool");
  const descriptor = tool.describe();
  assert.equal(descriptor.name, "counter");
  assert.equal(descriptor.version, "0.1.0");
  assert.deepEqual(descriptor.capabilities.state, [{ namespace: "words", access: "read-write" }]);
  assert.equal(JSON.parse(descriptor.inputSchema).required[0], "word");
  assert.throws(() => componentExports(counter, "plain-tool"), /fits the `stateful-tool` world/);
});

test("a definition without a valid name, description or version is refused", () => {
  const base = { description: "d", input: t.object({}), call: () => ({}) };
  assert.throws(() => defineTool({ ...base, name: "Bad Name" }), /name must be 1-64 chars/);
  assert.throws(() => defineTool({ ...base, name: "ok", description: " " }), /needs a description/);
  assert.throws(() => defineTool({ ...base, name: "ok", version: "one" }), /not semver/);
  assert.throws(
    () => defineTool({ ...base, name: "ok", capabilities: { state: { "Bad/NS": "read" } } }),
    /namespace "Bad\/NS" is malformed/,
  );
});
