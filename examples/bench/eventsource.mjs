// The Node `eventsource` package (npm) speaking the bench protocol:
//   npm install eventsource && arkor-trio bench -- node eventsource.mjs {url}
// It resolves `eventsource` from the current directory's node_modules (or from the folder named
// by $EVENTSOURCE_DIR). The package's defaults: a fixed reconnection time (3 s unless the stream
// sends `retry:`), no reconnect after a non-200 answer, no idle timeout.
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const base = resolve(process.env.EVENTSOURCE_DIR ?? process.cwd());
const { EventSource } = createRequire(join(base, "package.json"))("eventsource");

const source = new EventSource(process.argv[2]);
const deliver = (event) => {
  const line = JSON.stringify({ id: event.lastEventId, event: event.type, data: event.data });
  process.stdout.write(line + "\n");
  if (event.data === '{"final": true}') {
    source.close();
    process.stdout.write("", () => process.exit(0));
  }
};
source.addEventListener("tick", deliver);
source.onmessage = deliver;
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) process.exit(1); // it gave up
};
