// Peer (c): the `eventsource` npm package (WHATWG EventSource for Node) following a job stream.
//
// Usage: node eventsource_node.mjs MODULE_DIR URL HEADERS_JSON
//   MODULE_DIR   a folder whose node_modules holds `eventsource` (the benchmark's scratch dir)
//   URL          the full stream URL, query string included
//   HEADERS_JSON extra request headers (Authorization ...), added through a custom fetch
// Prints one JSON line per delivered event {"id", "event", "data"}, one per error
// {"error", "code", "readyState"}, and {"closed": reason} when it stops. It uses the package's
// own reconnect behaviour: a fixed reconnection time (3 s unless the server sends `retry:`),
// no reconnect after a non-200 status, no idle timeout.
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const [moduleDir, url, headersJson] = process.argv.slice(2);
const require = createRequire(join(resolve(moduleDir), "package.json"));
const { EventSource } = require("eventsource");
const extra = JSON.parse(headersJson || "{}");
const TYPES = ["bench.tick", "training.started", "training.log", "checkpoint.saved",
  "training.completed", "training.failed", "training.cancelled"];
const TERMINAL = new Set(["training.completed", "training.failed", "training.cancelled"]);

function out(record, then) {
  process.stdout.write(JSON.stringify(record) + "\n", then);
}

function finish(source, reason) {
  source.close();
  out({ closed: reason }, () => process.exit(0));
}

const source = new EventSource(url, {
  fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...extra } }),
});
for (const type of TYPES) {
  source.addEventListener(type, (event) => {
    out({ id: event.lastEventId, event: type, data: event.data });
    if (TERMINAL.has(type)) finish(source, "terminal event");
  });
}
source.addEventListener("end", () => finish(source, "end frame"));
source.onerror = (event) => {
  out({ error: String(event.message ?? ""), code: event.code ?? null,
    readyState: source.readyState });
  if (source.readyState === EventSource.CLOSED) finish(source, `gave up: ${event.message}`);
};
