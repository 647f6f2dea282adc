#!/usr/bin/env node
// Drives agent-gateway's MCP endpoint with the official TypeScript MCP SDK as an OAuth client:
// no token to start with, so the SDK's `auth()` (run by StreamableHTTPClientTransport on the
// server's 401) must discover the authorization server from the challenge's
// `resource_metadata` (RFC 9728), register (RFC 7591), start the authorization code flow with
// PKCE and the `resource` parameter (RFC 8707); after `finishAuth(code)` it exchanges the code
// and the client connects with the access token. Prints what it saw as one JSON document, for
// gateway-server's tests (crates/gateway-server/tests/mcp_oauth.rs), like
// ../python_oauth_client.py does for the Python SDK.
//
//     node oauth_client.mjs URL SCRIPT_JSON
//
// SCRIPT_JSON: steps as client.mjs takes them, here {"list": true} and {"call": NAME,
// "arguments": {...}}. The output is {"steps": [...], "http": [[method, url, status], ...],
// "authorize": {query parameters of the authorization request}, "token_claims": {the access
// token's payload, unverified}, "first_error": the error the first connection failed with}.
//
// The consent page is the authorization server's: redirectToAuthorization follows the
// authorization URL itself (the test server approves at once) and keeps the redirect's code.
import { describe, sdk } from './sdk.mjs';

const REDIRECT_URI = 'http://localhost:3030/callback';

function claimsOf(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

// Every HTTP exchange of the SDK (and of the "browser" below), in order.
const http = [];
const realFetch = globalThis.fetch;
async function recordingFetch(input, init) {
  const response = await realFetch(input, init);
  const url = typeof input === 'string' ? input : (input.url ?? String(input));
  http.push([(init?.method ?? input?.method ?? 'GET').toUpperCase(), url, response.status]);
  return response;
}
globalThis.fetch = recordingFetch;

// What a real client keeps between runs; here in memory.
class MemoryProvider {
  constructor() {
    this.authorize = {};
    this.code = undefined;
    this.saved = {};
  }
  get redirectUrl() {
    return REDIRECT_URI;
  }
  get clientMetadata() {
    return {
      client_name: 'agent-gateway test agent (TypeScript)',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    };
  }
  clientInformation() {
    return this.saved.client;
  }
  saveClientInformation(info) {
    this.saved.client = info;
  }
  tokens() {
    return this.saved.tokens;
  }
  saveTokens(tokens) {
    this.saved.tokens = tokens;
  }
  saveCodeVerifier(verifier) {
    this.saved.verifier = verifier;
  }
  codeVerifier() {
    return this.saved.verifier;
  }
  async redirectToAuthorization(url) {
    this.authorize = Object.fromEntries(url.searchParams);
    const answer = await recordingFetch(url.href, { redirect: 'manual' });
    const location = answer.headers.get('location') ?? '';
    if (answer.status !== 302 || !location.startsWith(REDIRECT_URI)) {
      throw new Error(`authorization failed: ${answer.status} ${await answer.text()}`);
    }
    this.code = new URL(location).searchParams.get('code') ?? undefined;
  }
}

async function run(url, steps) {
  const { Client } = await sdk('client/index.js');
  const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
  const { UnauthorizedError } = await sdk('client/auth.js');
  const provider = new MemoryProvider();
  const out = { steps: [], http, authorize: {}, token_claims: null, first_error: null };
  const connect = async () => {
    const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
    const client = new Client({ name: 'agent-gateway-ts-oauth-test', version: '0.0.0' });
    await client.connect(transport);
    return { client, transport };
  };
  let session;
  try {
    session = await connect();
  } catch (e) {
    // The SDK's documented flow: the first connection ends in UnauthorizedError once the
    // user is sent to the authorization server; the app then hands the code to finishAuth.
    out.first_error = describe(e);
    if (!(e instanceof UnauthorizedError) || provider.code === undefined) {
      throw e;
    }
    const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
    await transport.finishAuth(provider.code);
    session = await connect();
  }
  out.authorize = provider.authorize;
  const token = provider.saved.tokens?.access_token;
  out.token_claims = token ? claimsOf(token) : null;
  for (const step of steps) {
    try {
      if (step.list) {
        const tools = await session.client.listTools();
        out.steps.push({ tools: tools.tools.map((t) => t.name) });
        continue;
      }
      const result = await session.client.callTool({
        name: step.call,
        arguments: step.arguments ?? {},
      });
      out.steps.push({
        is_error: Boolean(result.isError),
        structured: result.structuredContent ?? null,
        text: (result.content ?? [])
          .filter((c) => c.type === 'text')
          .map((c) => c.text)
          .join('\n'),
      });
    } catch (e) {
      out.steps.push({ error: describe(e) });
    }
  }
  await session.client.close().catch(() => {});
  return out;
}

async function main() {
  if (process.argv.length !== 4) {
    process.stderr.write('usage: oauth_client.mjs URL SCRIPT_JSON\n');
    return 2;
  }
  const [url, script] = process.argv.slice(2);
  const out = await run(url, JSON.parse(script));
  process.stdout.write(`${JSON.stringify(out)}\n`);
  return 0;
}

process.exitCode = await main();
