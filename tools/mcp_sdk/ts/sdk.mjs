// What the TypeScript SDK drivers (client.mjs, oauth_client.mjs) share: loading the SDK, and
// describing what it threw.
//
// The SDK is loaded from GATEWAY_TEST_MCP_TS_SDK (a directory holding node_modules, installed by
// scripts/services/mcp_sdk_ts.sh with `npm ci`), or from a node_modules beside this file. An ES
// module resolves packages from its own location only (NODE_PATH does not apply), so the SDK's
// entry points are imported by absolute file URL.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** The SDK's ES module `entry` (e.g. `client/index.js`). */
export async function sdk(entry) {
  const root = process.env.GATEWAY_TEST_MCP_TS_SDK || here;
  const file = join(root, 'node_modules', '@modelcontextprotocol', 'sdk', 'dist', 'esm', entry);
  if (!existsSync(file)) {
    throw new Error(`${file} is missing: install the SDK (scripts/services/mcp_sdk_ts.sh)`);
  }
  return import(pathToFileURL(file).href);
}

/** An error as JSON: its class, code and message. */
export function describe(e) {
  return {
    name: e?.constructor?.name ?? typeof e,
    code: e?.code ?? null,
    message: String(e?.message ?? e),
  };
}
