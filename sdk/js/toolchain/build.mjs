// Builds a TypeScript/JavaScript toolhost tool into a component. `toolhost build` (src/js_build.rs)
// copies this file into the installed toolchain (beside its node_modules) and runs it with Node:
//
//   node build.mjs --sdk DIR --wit DIR --main FILE --stage DIR --out FILE
//   node build.mjs --sdk DIR --stage DIR --test FILE.test.ts...   (unit tests on the SDK's test host)
//
// 0. A TypeScript tool is type-checked (strict) against the SDK with the toolchain's `tsc`.
// 1. esbuild bundles the tool with the SDK for Node, with the host's imports mapped to the SDK's
//    test host, and loads it: a tool that is not a complete `defineTool` fails here, and its
//    world (plain or stateful) is read off it.
// 2. esbuild bundles it again for the component, the host's imports left as imports.
// 3. componentize-js embeds the bundle in SpiderMonkey and evaluates its top level (Wizer),
//    so the descriptor and schemas are built once, at build time.
// Prints `{"world": ..., "name": ...}` on stdout; errors go to stderr with exit code 1.

import { componentize } from "@bytecodealliance/componentize-js";
import * as esbuild from "esbuild";
import { spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values: args, positionals } = parseArgs({
  options: {
    ...Object.fromEntries(["sdk", "wit", "main", "stage", "out"].map((name) => [name, { type: "string" }])),
    test: { type: "boolean" },
  },
  allowPositionals: true,
});
for (const name of ["sdk", "wit", "main", "stage", "out"]) if (args[name]) args[name] = resolve(args[name]);

const HOST_IMPORT = /^(toolhost:tool|wasi:http)\//;
const SDK_MODULES = {
  "@toolhost/tool": "index.ts",
  "@toolhost/tool/testing": "testing.ts",
  "@toolhost/tool/export": "export.ts",
};

/** Resolves the SDK to the staged copy; host imports to the test host (Node) or left external. */
function sdkPlugin(forNode) {
  return {
    name: "toolhost-sdk",
    setup(build) {
      build.onResolve({ filter: /^@toolhost\/tool(\/.*)?$/ }, ({ path }) => {
        const file = SDK_MODULES[path];
        if (file === undefined) return { errors: [{ text: `the SDK has no module ${path}` }] };
        return { path: join(args.sdk, file) };
      });
      build.onResolve({ filter: HOST_IMPORT }, ({ path }) =>
        forNode ? { path: join(args.sdk, "testing.ts") } : { path, external: true },
      );
    },
  };
}

async function bundle(entry, outfile, forNode, platform = "neutral") {
  await esbuild.build({
    stdin: { contents: entry, resolveDir: args.stage, sourcefile: "toolhost-entry.js", loader: "js" },
    bundle: true,
    format: "esm",
    platform,
    target: "es2022",
    mainFields: ["module", "main"],
    outfile,
    plugins: [sdkPlugin(forNode)],
    logLevel: "silent",
  });
}

/** Bundles each test file for Node with the SDK and its test host, and runs them with `node --test`. */
async function runTests(files) {
  const bundles = [];
  for (const file of files) {
    const out = join(args.stage, basename(file).replace(/\.[cm]?[jt]sx?$/, ".mjs"));
    await bundle(`import ${JSON.stringify(resolve(file))};\n`, out, true, "node");
    bundles.push(out);
  }
  const run = spawnSync(process.execPath, ["--test", ...bundles], { stdio: "inherit" });
  process.exit(run.status ?? 1);
}

/** Type-checks a `.ts` main module and what it imports (strict; no Node types: it runs in the component). */
async function typeCheck() {
  if (!/\.[cm]?tsx?$/.test(args.main)) return;
  const sdk = (file) => join(args.sdk, file);
  const config = {
    compilerOptions: {
      target: "es2022",
      module: "esnext",
      moduleResolution: "bundler",
      lib: ["es2022"],
      types: [],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      isolatedModules: true,
      paths: { "@toolhost/tool": [sdk("index.ts")], "@toolhost/tool/*": [sdk("*.ts")] },
    },
    files: [args.main, sdk("globals.d.ts"), sdk("wit.d.ts")],
  };
  const path = join(args.stage, "tsconfig.json");
  await writeFile(path, JSON.stringify(config));
  const tsc = join(dirname(fileURLToPath(import.meta.url)), "node_modules/typescript/bin/tsc");
  const run = spawnSync(process.execPath, [tsc, "-p", path, "--pretty", "false"], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`type errors in the tool:\n${(run.stdout + run.stderr).trim()}`);
}

async function buildComponent() {
  await typeCheck();
  const main = JSON.stringify(args.main);
  const check = join(args.stage, "check.mjs");
  await bundle(
    `import definition from ${main};\nimport { inspect } from "@toolhost/tool/export";\nexport const info = inspect(definition);\n`,
    check,
    true,
  );
  const { info } = await import(pathToFileURL(check));

  const source = join(args.stage, "component.js");
  const stateful = info.world === "stateful-tool" ? "export const stateful = exports.stateful;\n" : "";
  await bundle(
    `import definition from ${main};\nimport { componentExports } from "@toolhost/tool/export";\n` +
      `const exports = componentExports(definition, ${JSON.stringify(info.world)});\n` +
      `export const tool = exports.tool;\n${stateful}`,
    source,
    false,
  );
  const { component } = await componentize({
    sourcePath: source,
    witPath: args.wit,
    worldName: info.world,
    // The SDK's worlds import wasi:http (for its `http` module, and so `fetch` too); a tool
    // exports no incoming handler. Stdio, clocks and random are virtualized by the host.
    disableFeatures: ["fetch-event"],
  });
  await writeFile(args.out, component);
  console.log(JSON.stringify(info));
}

try {
  await (args.test ? runTests(positionals) : buildComponent());
} catch (e) {
  const errors = e?.errors?.map((m) => `${m.location ? `${m.location.file}:${m.location.line}: ` : ""}${m.text}`);
  const message = e instanceof Error && e.message.startsWith("type errors") ? e.message : (e?.stack ?? String(e));
  console.error(errors?.length ? errors.join("\n") : message);
  process.exit(1);
}
