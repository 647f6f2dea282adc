#!/usr/bin/env python3
"""Parses a metrics exposition on stdin with the Prometheus project's own Python parsers and
prints what they read as JSON, for gateway-server's /metrics tests.

    parse.py openmetrics   # prometheus_client.openmetrics.parser (strict: # EOF, names, types)
    parse.py text          # prometheus_client.parser (the Prometheus text format 0.0.4)

Output: [{"name", "type", "unit", "samples": [{"name", "labels", "value"}]}], one entry per
family, in exposition order; values as floats (the OpenMetrics parser reads counters as
ints, the text parser as floats). A parse error exits 1 with the parser's message on stderr.
"""
import json
import sys

from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as openmetrics_parser


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in ("openmetrics", "text"):
        print(__doc__, file=sys.stderr)
        return 2
    parser = openmetrics_parser if sys.argv[1] == "openmetrics" else text_parser
    try:
        families = list(parser.text_string_to_metric_families(sys.stdin.read()))
    except Exception as e:  # the parsers raise ValueError and friends; all are a failed parse
        print(f"parse error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    out = [
        {
            "name": f.name,
            "type": f.type,
            "unit": f.unit,
            "samples": [
                {"name": s.name, "labels": dict(s.labels), "value": float(s.value)} for s in f.samples
            ],
        }
        for f in families
    ]
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
