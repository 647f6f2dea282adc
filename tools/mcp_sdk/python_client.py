#!/usr/bin/env python3
"""Drives agent-gateway's MCP endpoint with the official Python MCP SDK (PyPI `mcp`) and prints
what it saw as one JSON document, for gateway-server's SDK tests.

    python_client.py URL TOKEN SCRIPT_JSON

SCRIPT_JSON is a list of steps: {"list": true} lists the tools; {"call": NAME, "arguments":
{...}, "progress": true} calls one (recording progress notifications when asked);
"cancel_on_progress": PREFIX abandons the call (an anyio cancel scope, which has the SDK send
`notifications/cancelled`) at the first progress message starting with PREFIX; {"sleep_ms": N}
waits with the session open. Each step's result is printed in order: tool names, or the call's
isError, structuredContent, text and progress messages, or {"cancelled": true, "progress": [...]}
for an abandoned call. A protocol error is recorded as {"error": message}, not raised.
"""
import json
import sys

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def run_steps(session: ClientSession, steps: list) -> list:
    """Runs `steps` (the language above) on an initialized session; their results, in order."""
    out = []
    for step in steps:
        try:
            if step.get("list"):
                tools = await session.list_tools()
                out.append({"tools": [t.name for t in tools.tools]})
                continue
            if step.get("sleep_ms"):
                await anyio.sleep(step["sleep_ms"] / 1000)
                out.append({"slept": step["sleep_ms"]})
                continue
            seen = []
            stop_at = step.get("cancel_on_progress")
            scope = anyio.CancelScope()

            async def on_progress(progress, total, message):
                seen.append(message or "")
                if stop_at is not None and (message or "").startswith(stop_at):
                    scope.cancel()

            result = None
            with scope:
                result = await session.call_tool(
                    step["call"],
                    step.get("arguments", {}),
                    progress_callback=on_progress
                    if step.get("progress") or stop_at is not None
                    else None,
                )
            if result is None:
                out.append({"cancelled": True, "progress": seen})
                continue
            out.append(
                {
                    "is_error": bool(result.is_error),
                    "structured": result.structured_content,
                    "text": "\n".join(
                        c.text for c in result.content if getattr(c, "type", "") == "text"
                    ),
                    "progress": seen,
                }
            )
        except Exception as e:  # the SDK raises McpError and friends
            out.append({"error": f"{type(e).__name__}: {e}"})
    return out


async def run(url: str, token: str, steps: list) -> list:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await run_steps(session, steps)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    url, token, script = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(anyio.run(run, url, token, script)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
