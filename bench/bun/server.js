'use strict';
// A minimal Bun peer of switchyard, for side-by-side benchmarks with `switchyard-bench`: the same
// API as the Node peer (../node/api.js serves the producer routes for both), on Bun.serve, whose
// HTTP server and WebSockets are uWebSockets underneath.
//
//   GET  /ws?user_id=NAME  WebSocket, no auth; greets with connection_established.
//   POST on the four producer routes and their /batch forms: any non-empty bearer token; each
//        event is encoded once and sent as one text frame to every open connection of its user;
//        answered in the route's shape.
// A Map of user -> Set of sockets, as in the Node peer, rather than Bun's topics: the answers
// count attempted and successful sends per connection, which `server.publish` does not report.
// No offline queue, no routing flags. PORT=0 takes a free port; the first line printed says which.

const api = require('../node/api.js');

const HOST = '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8091);
const TOKEN = 'bun-peer-token';

/** userId -> Set of open ServerWebSockets. */
const users = new Map();
let nextConnection = 0;

/** Sends one encoded event to every open connection of `userId`. */
function send(userId, frame) {
  const delivery = { attempted: 0, sent: 0, errors: [] };
  const connections = users.get(userId);
  if (!connections) return delivery;
  for (const ws of connections) {
    delivery.attempted += 1;
    // > 0: written; -1: queued behind backpressure (still delivered); 0: dropped.
    if (ws.send(frame) !== 0) {
      delivery.sent += 1;
    } else {
      delivery.errors.push(`${ws.data.connectionId}: frame dropped`);
    }
  }
  return delivery;
}

/** The path and query of a request URL (`http://host:port/path?query`), without a URL parse. */
function pathOf(url) {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  const query = url.indexOf('?', start);
  return query < 0 ? url.slice(start) : url.slice(start, query);
}

const json = { 'content-type': 'application/json' };

const server = Bun.serve({
  hostname: HOST,
  port: PORT,
  async fetch(req, server) {
    const path = pathOf(req.url);
    if (path === '/ws') {
      const userId = new URL(req.url).searchParams.get('user_id');
      if (!api.validUserId(userId)) return new Response('Unauthorized\n', { status: 401 });
      nextConnection += 1;
      const data = { userId, connectionId: `conn-${nextConnection}` };
      if (server.upgrade(req, { data })) return undefined;
      return new Response('Upgrade Required\n', { status: 426 });
    }
    const raw = req.method === 'POST' ? await req.text() : '';
    const { status, text } = api.produce(req.method, path, req.headers.get('authorization'), raw, send);
    return new Response(text, { status, headers: json });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      const { userId, connectionId } = ws.data;
      let set = users.get(userId);
      if (!set) {
        set = new Set();
        users.set(userId, set);
      }
      set.add(ws);
      ws.send(api.greeting(connectionId, userId));
    },
    message() {},
    close(ws) {
      const set = users.get(ws.data.userId);
      if (!set) return;
      set.delete(ws);
      if (set.size === 0) users.delete(ws.data.userId);
    },
  },
});

function shutdown(signal) {
  console.log(`${signal}: closing`);
  server.stop(true);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

console.log(`listening on ${HOST}:${server.port}`);
console.log(`producer token: ${TOKEN}   (any non-empty bearer token is accepted)`);
