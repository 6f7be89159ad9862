'use strict';
// A minimal Node.js peer of switchyard, for side-by-side benchmarks with `switchyard-bench`.
//
// It serves what the load generator uses, as a --dev gateway does:
//   GET  /ws?user_id=NAME  WebSocket, no auth; greets with connection_established.
//   POST on the four producer routes and their /batch forms (api.js): any non-empty bearer
//        token; each event is encoded once and sent as one text frame to every open connection
//        of its user; answered in the route's shape.
// No offline queue, no routing flags, no backpressure handling: a simple peer. PORT=0 takes a
// free port; the first line printed says which.

const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');
const api = require('./api.js');

const HOST = '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8090);
const TOKEN = 'node-peer-token';

/** userId -> Set of open WebSockets. */
const users = new Map();
let nextConnection = 0;

/** Sends one encoded event to every open connection of `userId`. */
function send(userId, frame) {
  const delivery = { attempted: 0, sent: 0, errors: [] };
  const connections = users.get(userId);
  if (!connections) return delivery;
  for (const ws of connections) {
    delivery.attempted += 1;
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(frame);
      delivery.sent += 1;
    } else {
      delivery.errors.push(`${ws.connectionId}: connection not open`);
    }
  }
  return delivery;
}

const server = http.createServer({ noDelay: true, keepAliveTimeout: 65_000 }, (req, res) => {
  const path = req.url.split('?', 1)[0];
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    const { status, text } = api.produce(req.method, path, req.headers.authorization, raw, send);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

function rejectUpgrade(socket, status, reason) {
  const body = `${reason}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  const url = new URL(req.url, `http://${HOST}`);
  if (url.pathname !== '/ws') {
    rejectUpgrade(socket, 404, 'Not Found');
    return;
  }
  const userId = url.searchParams.get('user_id');
  if (!api.validUserId(userId)) {
    rejectUpgrade(socket, 401, 'Unauthorized');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    nextConnection += 1;
    ws.connectionId = `conn-${nextConnection}`;
    let set = users.get(userId);
    if (!set) {
      set = new Set();
      users.set(userId, set);
    }
    set.add(ws);
    ws.on('error', () => {}); // 'close' follows; nothing else to do
    ws.on('close', () => {
      set.delete(ws);
      if (set.size === 0 && users.get(userId) === set) users.delete(userId);
    });
    ws.send(api.greeting(ws.connectionId, userId));
  });
});

function shutdown(signal) {
  console.log(`${signal}: closing`);
  server.close();
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.closeAllConnections();
  // Give the close frames a moment to leave, then go.
  setTimeout(() => process.exit(0), 100).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.listen(PORT, HOST, () => {
  console.log(`listening on ${HOST}:${server.address().port}`);
  console.log(`producer token: ${TOKEN}   (any non-empty bearer token is accepted)`);
});
