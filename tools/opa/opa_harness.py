#!/usr/bin/env python3
"""The real OPA engine (OPA v1.20.2, Go, through opa-golib-python-bindings) for gateway-opa's tests.

Subcommands (all load every *.rego file and every data.json under --policies, as `opa run` does):

  test   --policies DIR                  `opa test` equivalent: evaluates every test_* rule of
                                         every *_test.rego file; prints one JSON object per test,
                                         {"name": "data.pkg.test_x", "failure": null | "why"}.
  eval   --policies DIR --path P         evaluates data.<P> for a batch: stdin holds one case per
         [--data FILE ...]               line, `<k>\t<input JSON as the client wrote it>`, where k
                                         picks the data configuration (0 = the policies' own
                                         data.json, k >= 1 = --data file k merged over it); prints
                                         one line per case: {"result": ...}, {"undefined": true}
                                         or {"error": "..."}.
  serve  --policies DIR --port N         a Data API server on 127.0.0.1:N (see DataApiHandler).
  bench  --policies DIR --path P         per-decision timing of one input (stdin), with the cost
         --iterations N                  of a trivial policy through the same bindings measured
                                         and subtracted; prints a JSON object.
  upper-lower                            OPA's upper() and lower() of every Unicode scalar value
                                         (stdin: JSON array of code points), as a JSON array of
                                         [upper, lower] pairs.

The bindings evaluate with strict builtin errors ON, where OPA's server and `opa test` default to
OFF (a failing builtin makes its expression undefined). Callers treat an evaluation error as a
deny; the reference policy guards its builtins so that it never depends on the difference.

Inputs are handed to OPA as the client wrote them (the raw JSON text, not re-encoded by Python),
so OPA sees the same numbers the client sent.
"""

import argparse
import ctypes
import http.server
import json
import os
import re
import sys
import time

from opa_bindings.engine import OpaEngine, OpaError, OpaUndefinedError

OPA_VERSION = "v1.20.2"


def read_policies(root):
    """(modules [(path, text)], data documents [(path, value nested at its directory)])."""
    modules, data = [], []
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                files.append(os.path.join(dirpath, name))
    for path in sorted(files):
        name = os.path.basename(path)
        if name.endswith(".rego"):
            with open(path, encoding="utf-8") as f:
                modules.append((path, f.read()))
        elif name == "data.json":
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
            rel = os.path.relpath(os.path.dirname(path), root)
            if rel != ".":
                for part in reversed(rel.split(os.sep)):
                    value = {part: value}
            data.append((path, value))
    return modules, data


def engine_for(root, include_tests):
    modules, data = read_policies(root)
    engine = OpaEngine()
    for path, text in modules:
        if include_tests or not path.endswith("_test.rego"):
            engine.add_policy(path, text)
    for _, value in data:
        engine.add_data(value)
    return engine, modules


def raw_eval(engine, path, raw_input):
    """Evaluates data.<path> with the input given as JSON text, unparsed by Python."""
    handle = engine._handle
    ptr = engine._lib.OpaEvalDocument(
        handle, path.encode("utf-8"), raw_input.encode("utf-8"), 0, 0
    )
    if not ptr:
        raise OpaError("internal", "native call returned NULL")
    try:
        raw = ctypes.string_at(ptr)
    finally:
        engine._lib.OpaFreeString(ptr)
    envelope = json.loads(raw)
    if envelope.get("error"):
        err = envelope["error"]
        raise OpaError(err.get("code", "unknown"), err.get("message", ""))
    rs = envelope.get("result")
    if not rs or not rs[0].get("expressions"):
        raise OpaUndefinedError(f"data.{path}")
    return rs[0]["expressions"][0]["value"]


TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]*)")
PACKAGE = re.compile(r"^\s*package\s+([A-Za-z0-9_.]+)")


def cmd_test(args):
    engine, modules = engine_for(args.policies, include_tests=True)
    for path, text in modules:
        if not path.endswith("_test.rego"):
            continue
        package = next((m.group(1) for m in map(PACKAGE.match, text.splitlines()) if m), None)
        if package is None:
            continue
        seen = []
        for line in text.splitlines():
            m = TEST_RULE.match(line)
            if m and m.group(1) not in seen:
                seen.append(m.group(1))
        for name in seen:
            rule = f"{package}.{name}"
            try:
                value = engine.eval_document(rule)
                failure = None if value is True else f"evaluated to {json.dumps(value)} instead of true"
            except OpaUndefinedError:
                failure = "undefined (an expression failed)"
            except OpaError as e:
                failure = f"error: {e}"
            print(json.dumps({"name": f"data.{rule}", "failure": failure}), flush=True)
    return 0


def cmd_eval(args):
    engines = [engine_for(args.policies, include_tests=False)[0]]
    for path in args.data or []:
        # A data configuration replaces the policies' data.json entirely.
        modules, _ = read_policies(args.policies)
        engine = OpaEngine()
        for mpath, text in modules:
            if not mpath.endswith("_test.rego"):
                engine.add_policy(mpath, text)
        with open(path, encoding="utf-8") as f:
            engine.add_data(json.load(f))
        engines.append(engine)
    out = sys.stdout
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        key, _, raw = line.partition("\t")
        try:
            engine = engines[int(key)]
            value = raw_eval(engine, args.path, raw)
            answer = {"result": value}
        except OpaUndefinedError:
            answer = {"undefined": True}
        except (OpaError, ValueError, IndexError) as e:
            answer = {"error": str(e)}
        out.write(json.dumps(answer, ensure_ascii=False))
        out.write("\n")
    out.flush()
    return 0


class DataApiHandler(http.server.BaseHTTPRequestHandler):
    """OPA's Data API, v1 (https://www.openpolicyagent.org/docs/rest-api#data-api):

    POST /v1/data/{path} with {"input": ...}  -> 200 {"result": ...}, or 200 {} when undefined
    GET  /v1/data/{path}                        -> the same without input
    malformed body                              -> 400 {"code": "invalid_parameter", "message": ...}
    no "input" key                              -> 200 {"result": ..., "warning": {"code":
                                                        "api_usage_warning", ...}}
    evaluation error                            -> 500 {"code": "internal_error", "message":
                                                        "error(s) occurred while evaluating
                                                        query", "errors": [{"code", "message",
                                                        "location"}]}
    The engine runs with strict builtin errors (see the module docs), so a failing builtin is
    a 500 here where a default OPA server makes the expression undefined.
    other paths                                 -> 404 {"code": "resource_not_found", ...}
    GET /health                                 -> 200 {}
    """

    engine = None
    server_version = "opa-harness/" + OPA_VERSION
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, status, body):
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _path(self):
        path = self.path.split("?", 1)[0]
        if path == "/v1/data" or path == "/v1/data/":
            return ""
        if path.startswith("/v1/data/"):
            return path[len("/v1/data/"):].strip("/").replace("/", ".")
        return None

    def _evaluate(self, doc, raw_input, warning=False):
        try:
            value = raw_eval(self.engine, doc, raw_input) if raw_input is not None else \
                self.engine.eval_document(doc)
        except OpaUndefinedError:
            return self._send(200, {})
        except OpaError as e:
            return self._send(500, {
                "code": "internal_error",
                "message": "error(s) occurred while evaluating query",
                "errors": [eval_error(e)],
            })
        body = {"result": value}
        if warning:
            body["warning"] = {"code": "api_usage_warning",
                               "message": "'input' key missing from the request"}
        self._send(200, body)

    def do_GET(self):
        if self.path.split("?", 1)[0] == "/health":
            return self._send(200, {})
        doc = self._path()
        if doc is None:
            return self._send(404, {"code": "resource_not_found", "message": "not found"})
        self._evaluate(doc, None)

    def do_POST(self):
        doc = self._path()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if doc is None:
            return self._send(404, {"code": "resource_not_found", "message": "not found"})
        raw_input = None
        if body.strip():
            try:
                text = body.decode("utf-8")
                parsed = json.loads(text)
            except (UnicodeDecodeError, ValueError) as e:
                return self._send(400, {
                    "code": "invalid_parameter",
                    "message": f"body contains malformed input document: {e}",
                })
            if not isinstance(parsed, dict):
                return self._send(400, {
                    "code": "invalid_parameter",
                    "message": "body contains malformed input document: expected object",
                })
            if "input" in parsed:
                raw_input = extract_input_text(text)
        self._evaluate(doc, raw_input, warning=raw_input is None)


EVAL_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<row>[0-9]+): (?P<code>[a-z_]+): (?P<message>.*)$", re.S)


def eval_error(e):
    """One entry of the `errors` array of OPA's error document, from the engine's message
    (`file:row: code: message`)."""
    m = EVAL_ERROR.match(e.message)
    if not m:
        return {"code": e.code, "message": e.message}
    return {"code": m.group("code"), "message": m.group("message"),
            "location": {"file": m.group("file"), "row": int(m.group("row")), "col": 1}}


def extract_input_text(body):
    """The `input` member of a request body as the client wrote it. The gateway sends
    `{"input":<document>}`; any other layout is re-encoded (numbers then pass through Python)."""
    stripped = body.strip()
    prefix = '{"input":'
    if stripped.startswith(prefix) and stripped.endswith("}"):
        candidate = stripped[len(prefix):-1]
        try:
            json.loads(candidate)
            return candidate
        except ValueError:
            pass
    return json.dumps(json.loads(body)["input"])


def cmd_serve(args):
    engine, _ = engine_for(args.policies, include_tests=False)
    DataApiHandler.engine = engine
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), DataApiHandler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


def cmd_bench(args):
    raw = sys.stdin.read().strip()
    engine, _ = engine_for(args.policies, include_tests=False)
    trivial = OpaEngine()
    trivial.add_policy("trivial.rego", "package trivial\n\ndecision := {\"allow\": true}\n")

    def timings(eng, path):
        for _ in range(min(200, args.iterations)):
            raw_eval(eng, path, raw)
        samples = []
        for _ in range(args.iterations):
            t0 = time.perf_counter_ns()
            raw_eval(eng, path, raw)
            samples.append(time.perf_counter_ns() - t0)
        samples.sort()
        return samples

    def pct(samples, p):
        return samples[min(len(samples) - 1, int(len(samples) * p))]

    full = timings(engine, args.path)
    base = timings(trivial, "trivial.decision")
    result = {
        "opa_version": OPA_VERSION,
        "iterations": args.iterations,
        "policy_p50_ns": pct(full, 0.5),
        "policy_p99_ns": pct(full, 0.99),
        "trivial_p50_ns": pct(base, 0.5),
        "net_p50_ns": pct(full, 0.5) - pct(base, 0.5),
        "decision": raw_eval(engine, args.path, raw),
    }
    print(json.dumps(result))
    return 0


def cmd_upper_lower(args):
    points = json.load(sys.stdin)
    engine = OpaEngine()
    engine.add_policy("c.rego", "package c\n\nr := [[upper(s), lower(s)] | some s in input]\n")
    strings = [chr(p) for p in points]
    print(json.dumps(engine.eval_document("c.r", strings), ensure_ascii=False))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("test")
    p.add_argument("--policies", required=True)
    p = sub.add_parser("eval")
    p.add_argument("--policies", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--data", action="append")
    p = sub.add_parser("serve")
    p.add_argument("--policies", required=True)
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("bench")
    p.add_argument("--policies", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--iterations", type=int, default=20000)
    sub.add_parser("upper-lower")
    args = parser.parse_args()
    handlers = {"test": cmd_test, "eval": cmd_eval, "serve": cmd_serve, "bench": cmd_bench,
                "upper-lower": cmd_upper_lower}
    sys.exit(handlers[args.cmd](args) or 0)


if __name__ == "__main__":
    main()
