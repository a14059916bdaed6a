// Drives the gateway with the TypeScript SDK's v2 client (@modelcontextprotocol/client) in one era and
// prints what it saw as one JSON object; e2e/test_ts_client.py starts Envoy and checks the figures.
//
//   node ts_client.mjs URL MODE     MODE: legacy (the 2025 initialize handshake, the client's default),
//                                         2026-07-28 (server/discover, pinned: no fallback), or
//                                         auto (server/discover, falling back to initialize)
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, mode] = process.argv.slice(2);
if (!url || !["legacy", "2026-07-28", "auto"].includes(mode)) {
  console.error("usage: node ts_client.mjs URL legacy|2026-07-28|auto");
  process.exit(2);
}

const options = {
  capabilities: { elicitation: {}, sampling: {}, roots: {} },
  // The client's default is `legacy`; a pin has no fallback, so a legacy answer fails the connect.
  ...(mode === "2026-07-28" ? { versionNegotiation: { mode: { pin: "2026-07-28" } } } : {}),
  ...(mode === "auto" ? { versionNegotiation: { mode: "auto" } } : {}),
};
const client = new Client({ name: "ts-client-e2e", version: "1.0.0" }, options);
const asked = [];
client.setRequestHandler("elicitation/create", async (request) => {
  asked.push(["elicitation", request.params.message]);
  return { action: "accept", content: { name: "Ada" } };
});
client.setRequestHandler("sampling/createMessage", async (request) => {
  asked.push(["sampling", request.params.messages[0].content.text]);
  return { role: "assistant", content: { type: "text", text: "Paris, said the model" }, model: "e2e" };
});
const logs = [];
client.setNotificationHandler("notifications/message", (n) => logs.push(n.params));

// What went on the wire: each POST's JSON-RPC method(s), whether it carried a session id, and the params'
// `_meta` keys and `inputResponses` keys the client put in it.
const wire = [];
const recordingFetch = async (input, init) => {
  if (init?.method === "POST" && typeof init.body === "string") {
    const headers = new Headers(init.headers);
    for (const m of [].concat(JSON.parse(init.body))) {
      wire.push({
        method: m.method ?? "(response)",
        session: headers.has("mcp-session-id"),
        meta: Object.keys(m.params?._meta ?? {}).sort(),
        inputResponses: Object.keys(m.params?.inputResponses ?? {}),
        requestState: typeof m.params?.requestState === "string",
      });
    }
  }
  return fetch(input, init);
};

const out = { mode, wire };
const text = (result) => (result.content ?? []).map((c) => c.text ?? `<${c.type}>`).join("|");
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch }));
  out.protocolVersion = client.getNegotiatedProtocolVersion();
  const era = out.protocolVersion === "2026-07-28" ? "2026-07-28" : "legacy";
  out.serverName = client.getServerVersion()?.name;

  // Without a cursor the client walks every page itself; two pages by hand show there are several.
  out.tools = (await client.listTools()).tools.map((t) => t.name);
  const first = await client.request({ method: "tools/list", params: {} });
  out.firstPage = first.tools.map((t) => t.name);
  const second = await client.listTools({ cursor: first.nextCursor });
  out.secondPage = second.tools.map((t) => t.name);

  const weather = await client.callTool({ name: "forecast", arguments: { city: "Paris" } });
  out.weather = { isError: Boolean(weather.isError), text: text(weather) };

  const broken = await client.callTool({ name: "broken", arguments: {} });
  out.broken = { isError: Boolean(broken.isError), text: text(broken) };

  try {
    await client.callTool({ name: "no_such_tool", arguments: {} });
    out.unknown = { threw: false };
  } catch (e) {
    out.unknown = { threw: true, code: e.code, message: String(e.message) };
  }

  const prompt = await client.getPrompt({ name: "review", arguments: { language: "rust" } });
  out.prompt = prompt.messages.map((m) => m.content.text);
  const resource = await client.readResource({ uri: "guide://style" });
  out.resource = resource.contents.map((c) => c.text);

  const asking = await client.callTool({ name: "greet_asked", arguments: {} });
  out.asking = { isError: Boolean(asking.isError), text: text(asking) };
  const sampling = await client.callTool({ name: "sampled", arguments: {} });
  out.sampling = { isError: Boolean(sampling.isError), text: text(sampling) };
  out.asked = asked;

  // Logging: the handshake era keeps logging/setLevel in the session; in 2026-07-28 the level is the
  // request's `_meta` io.modelcontextprotocol/logLevel, which this client never sends by itself.
  const progress = [];
  const params = { name: "forecast", arguments: { city: "Oslo" } };
  if (era === "legacy") await client.setLoggingLevel("info");
  else {
    // logging/setLevel is gone in 2026-07-28: the client refuses it itself, without sending it.
    try {
      await client.setLoggingLevel("info");
      out.setLevel = { threw: false };
    } catch (e) {
      out.setLevel = { threw: true, code: e.code };
    }
    params._meta = { "io.modelcontextprotocol/logLevel": "info" };
  }
  const noisy = await client.callTool(params, { onprogress: (p) => progress.push(p) });
  out.noisy = { isError: Boolean(noisy.isError), text: text(noisy) };
  out.progress = progress;
  out.logs = logs;
  await client.close();
} catch (e) {
  out.error = `${e.name}: ${e.message}`;
  out.stack = String(e.stack);
}
console.log(JSON.stringify(out));
