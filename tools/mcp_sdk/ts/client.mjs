#!/usr/bin/env node
// Drives agent-gateway's MCP endpoint with the official TypeScript MCP SDK
// (@modelcontextprotocol/sdk, pinned in package.json beside this file) and prints what it saw as
// one JSON document, for gateway-server's SDK tests (crates/gateway-server/tests/mcp_sdk_ts.rs).
//
//     node client.mjs URL TOKEN SCRIPT_JSON
//
// The SDK is loaded as sdk.mjs says (GATEWAY_TEST_MCP_TS_SDK, set by
// scripts/services/mcp_sdk_ts.sh).
//
// SCRIPT_JSON is a list of steps, the same language as ../python_client.py where it fits:
//   {"list": true}                      lists the tools (which also has the SDK compile each
//                                       tool's outputSchema, so later calls are validated)
//   {"call": NAME, "arguments": {...},  calls one; "progress": true records progress
//    "progress": true,                  notifications (the SDK then sends a progressToken and
//    "abort_on_progress": "PREFIX",     resets its timeout on each); "abort_on_progress" aborts
//    "abort_after_ms": N,               the call (AbortSignal) at the first notification whose
//    "timeout_ms": N}                   message starts with PREFIX, "abort_after_ms" N ms after
//                                       sending it; "timeout_ms" is the SDK's request timeout
//   {"check_output": NAME,              runs the SDK's validator for NAME's outputSchema (after
//    "structured": VALUE}               a list) on VALUE: {"validator", "valid", "message"}
//   {"sleep_ms": N}                     waits N ms (the connection stays open)
//   {"terminate": true}                 ends the session (HTTP DELETE)
//
// The output is {"connect": {...}, "steps": [...], "errors": [...]}: `connect` has the
// session id, negotiated protocol version and server name, or {"error": ...} when the
// handshake failed (then no step runs); each step's result is {"tools": [...]} or the call's
// {"is_error", "structured", "text", "progress", "validated"} (`validated`: the SDK holds an
// outputSchema validator for the tool, so it checked structuredContent before returning), or
// {"error": {"name", "code", "message"}} for what the SDK threw. `errors` are what the
// transport and client reported through onerror (e.g. a failed GET stream or DELETE).
import { describe, sdk } from './sdk.mjs';

async function run(url, token, steps) {
  const { Client } = await sdk('client/index.js');
  const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
  const errors = [];
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: 'agent-gateway-ts-test', version: '0.0.0' });
  client.onerror = (e) => errors.push(describe(e));
  const out = { connect: {}, steps: [], errors };
  try {
    await client.connect(transport);
  } catch (e) {
    out.connect = { error: describe(e) };
    await client.close().catch(() => {});
    return out;
  }
  out.connect = {
    session_id: transport.sessionId ?? null,
    protocol_version: transport.protocolVersion ?? null,
    server: client.getServerVersion()?.name ?? null,
  };
  for (const step of steps) {
    try {
      if (step.list) {
        const tools = await client.listTools();
        out.steps.push({ tools: tools.tools.map((t) => t.name) });
        continue;
      }
      if (step.check_output) {
        // What the SDK's own validator (compiled from the listed outputSchema) says of a value.
        const validator = client.getToolOutputValidator(step.check_output);
        const verdict = validator ? validator(step.structured) : null;
        out.steps.push({
          validator: Boolean(validator),
          valid: verdict?.valid ?? null,
          message: verdict?.errorMessage ?? null,
        });
        continue;
      }
      if (step.sleep_ms) {
        await new Promise((resolve) => setTimeout(resolve, step.sleep_ms));
        out.steps.push({ slept: step.sleep_ms });
        continue;
      }
      if (step.terminate) {
        await transport.terminateSession();
        out.steps.push({ terminated: transport.sessionId === undefined });
        continue;
      }
      const progress = [];
      const abort = new AbortController();
      const options = { signal: abort.signal };
      if (step.timeout_ms) options.timeout = step.timeout_ms;
      if (step.progress || step.abort_on_progress) {
        options.resetTimeoutOnProgress = true;
        options.onprogress = (p) => {
          const message = p.message ?? '';
          progress.push(message);
          if (step.abort_on_progress && message.startsWith(step.abort_on_progress)) {
            abort.abort(new Error('aborted by the test client'));
          }
        };
      }
      let timer;
      if (step.abort_after_ms) {
        timer = setTimeout(() => abort.abort(new Error('aborted by the test client')), step.abort_after_ms);
      }
      try {
        const result = await client.callTool(
          { name: step.call, arguments: step.arguments ?? {} },
          undefined,
          options,
        );
        out.steps.push({
          is_error: Boolean(result.isError),
          structured: result.structuredContent ?? null,
          text: (result.content ?? [])
            .filter((c) => c.type === 'text')
            .map((c) => c.text)
            .join('\n'),
          progress,
          validated: Boolean(client.getToolOutputValidator?.(step.call)),
        });
      } catch (e) {
        out.steps.push({ error: describe(e), progress, aborted: abort.signal.aborted });
      } finally {
        clearTimeout(timer);
      }
    } catch (e) {
      out.steps.push({ error: describe(e) });
    }
  }
  // Give a cancellation notification sent by an aborted call time to leave before closing.
  await new Promise((resolve) => setTimeout(resolve, 50));
  await client.close().catch((e) => errors.push(describe(e)));
  return out;
}

async function main() {
  if (process.argv.length !== 5) {
    process.stderr.write('usage: client.mjs URL TOKEN SCRIPT_JSON\n');
    return 2;
  }
  const [url, token, script] = process.argv.slice(2);
  const out = await run(url, token, JSON.parse(script));
  process.stdout.write(`${JSON.stringify(out)}\n`);
  return 0;
}

process.exitCode = await main();
