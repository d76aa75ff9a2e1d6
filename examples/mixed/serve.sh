#!/usr/bin/env bash
# Serves a Rust, a Python and a TypeScript tool in one MCP server (stdio): the calculator,
# the CSV table tool and the calendar. Each language's toolchain installs on first use.
#   examples/mixed/serve.sh                  # for an MCP client's config: command + no args
# Sessions persist in .toolhost/sessions.db, so a client's session spans all three tools.
set -euo pipefail
cd "$(dirname "$0")/../.."
toolhost=${TOOLHOST:-target/debug/toolhost}
[ -x "$toolhost" ] || cargo build --quiet >&2
out=target/mixed
mkdir -p "$out"
"$toolhost" build examples/tools/calculator --out "$out/calculator.wasm" >/dev/null
"$toolhost" build examples/tools/table-py --venv .venv-sdk --out "$out/table.wasm" >/dev/null
"$toolhost" build examples/tools/calendar-ts --js-toolchain .node-sdk --out "$out/calendar.wasm" >/dev/null
exec "$toolhost" serve --stdio --policy examples/mixed/policy.toml \
  --tools "$out/calculator.wasm,$out/table.wasm,$out/calendar.wasm"
