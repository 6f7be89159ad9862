'use strict';
// A minimal Node.js peer of switchyard, for side-by-side benchmarks with `switchyard-bench`.
//
// It serves what the load generator uses, as a --dev gateway does:
//   GET  /ws?user_id=NAME  WebSocket, no auth; greets with connection_established.
//   POST /v1/broadcast     Bearer token (any non-empty one), {"user_id", "event"}; the event is
//                          encoded once and sent as one text frame to every open connection of
//                          that user; answered with a BroadcastResult.
//   POST /v1/broadcast/batch  A JSON array of those bodies, served in order; answered with
//                          {"results": [{"status", "result"}, ...]}.
// No offline queue, no routing flags, no backpressure handling: a simple peer.

const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');

const HOST = '127.0.0.1';
const PORT = Number(process.env.PORT || 8090);
const TOKEN = 'node-peer-token';

/** userId -> Set of open WebSockets. */
const users = new Map();
let nextConnection = 0;

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendError(res, status, code, message) {
  sendJson(res, status, { error: { code, message } });
}

function bearerToken(header) {
  if (typeof header !== 'string') return '';
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match ? match[1] : '';
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Sends one event to every open connection of its user; returns the BroadcastResult. */
function fanOut(body) {
  const { user_id: userId, event } = body;
  const connections = users.get(userId);
  let attempted = 0;
  let sent = 0;
  const errors = [];
  if (connections) {
    const frame = JSON.stringify(event); // encoded once, the same string for every recipient
    for (const ws of connections) {
      attempted += 1;
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(frame);
        sent += 1;
      } else {
        errors.push(`${ws.connectionId}: connection not open`);
      }
    }
  }
  return {
    user_id: userId,
    connections_attempted: attempted,
    successful_sends: sent,
    event_type: typeof event.type === 'string' ? event.type : '',
    queued: false,
    errors,
  };
}

function validBody(body) {
  return isObject(body) && typeof body.user_id === 'string' && body.user_id !== '' && isObject(body.event);
}

/** POST /v1/broadcast ({"user_id", "event"}) or, with batch, /v1/broadcast/batch (an array of them). */
function broadcast(req, res, raw, batch) {
  if (!bearerToken(req.headers.authorization)) {
    sendError(res, 401, 'unauthorized', 'missing bearer token');
    return;
  }
  let body;
  try {
    body = JSON.parse(raw);
  } catch (error) {
    sendError(res, 400, 'invalid_json', `body is not valid JSON: ${error.message}`);
    return;
  }
  if (!batch) {
    if (!validBody(body)) {
      sendError(res, 400, 'invalid_request', 'body must be {"user_id": string, "event": object}');
      return;
    }
    sendJson(res, 200, fanOut(body));
    return;
  }
  if (!Array.isArray(body)) {
    sendError(res, 400, 'invalid_request', 'a batch is a JSON array of {"user_id", "event"}');
    return;
  }
  const results = body.map((item) =>
    validBody(item)
      ? { status: 200, result: fanOut(item) }
      : { status: 400, error: { code: 'invalid_request', message: 'item must be {"user_id": string, "event": object}' } },
  );
  sendJson(res, 200, { results });
}

const server = http.createServer({ noDelay: true, keepAliveTimeout: 65_000 }, (req, res) => {
  const path = req.url.split('?', 1)[0];
  const batch = path === '/v1/broadcast/batch';
  if (req.method !== 'POST' || (path !== '/v1/broadcast' && !batch)) {
    req.resume();
    sendError(res, 404, 'not_found', 'no such endpoint');
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => broadcast(req, res, Buffer.concat(chunks).toString('utf8'), batch));
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
  if (!userId) {
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
    ws.send(
      JSON.stringify({
        type: 'connection_established',
        data: { connection_id: ws.connectionId, user_id: userId },
      }),
    );
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
  console.log(`listening on ${HOST}:${PORT}`);
  console.log(`producer token: ${TOKEN}   (any non-empty bearer token is accepted)`);
});
