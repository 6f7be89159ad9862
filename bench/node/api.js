'use strict';
// The producer half of switchyard's public API as the benchmark peers serve it: the four producer
// routes with their request shapes and answers (README, "Endpoints"), their /batch forms (a JSON
// array), and the error bodies. No I/O here: the Node peer (server.js beside this file) and the
// Bun peer (../bun/server.js) each bring their own HTTP server and WebSockets, and hand this
// module a `send(userId, frame)` that delivers one frame to every open connection of a user.

/** A producer route: its answer for one delivered event, and where its body keeps the user id. */
const ROUTES = new Map([
  ['/v1/broadcast', { context: false, answer: broadcastResult }],
  ['/v1/legacy/router/broadcast', { context: false, answer: sentCount }],
  ['/v1/legacy/scoped/broadcast', { context: true, answer: sentCount }],
  ['/v1/legacy/user-event', { context: true, answer: sentCount }],
]);

/** The gateway's rule for user ids: 1–128 of letters, digits and `. _ : @ - |`. */
const USER_ID = /^[A-Za-z0-9._:@|-]{1,128}$/;

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function validUserId(userId) {
  return typeof userId === 'string' && USER_ID.test(userId);
}

function bearerToken(header) {
  if (typeof header !== 'string') return '';
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match ? match[1] : '';
}

function broadcastResult(userId, event, delivery) {
  return {
    user_id: userId,
    connections_attempted: delivery.attempted,
    successful_sends: delivery.sent,
    event_type: typeof event.type === 'string' ? event.type : '',
    queued: false,
    errors: delivery.errors,
  };
}

function sentCount(_userId, _event, delivery) {
  return { sent: delivery.sent };
}

/**
 * The user id of one request body in `route`'s shape, or an error message: `{"user_id", "event"}`
 * on broadcast and the legacy router, `{"user_context": {"user_id", "thread_id", "run_id"}, "event"}`
 * on the scoped and user-event routes.
 */
function userOf(route, body) {
  if (!isObject(body) || !isObject(body.event)) return { error: 'the body needs an "event" object' };
  let userId = body.user_id;
  if (route.context) {
    const context = body.user_context;
    if (!isObject(context) || typeof context.thread_id !== 'string' || typeof context.run_id !== 'string') {
      return { error: 'the body needs a "user_context" with user_id, thread_id and run_id' };
    }
    userId = context.user_id;
  }
  if (!validUserId(userId)) return { error: 'user_id: 1-128 of letters, digits and . _ : @ - |' };
  return { userId };
}

/** Serves one body: `{status, result}` or `{status, error}`. */
function serveOne(route, body, send) {
  const { userId, error } = userOf(route, body);
  if (error) return { status: 422, error: { code: 'invalid_request', message: error } };
  // Encoded once: the same string goes to every connection of the user.
  const delivery = send(userId, JSON.stringify(body.event));
  return { status: 200, result: route.answer(userId, body.event, delivery) };
}

function answer(status, body) {
  return { status, text: JSON.stringify(body) };
}

function failure(status, code, message) {
  return answer(status, { error: { code, message } });
}

/**
 * Answers one producer request, `{status, text}` with `text` the JSON body: a route's single
 * event, or with `/batch` appended a JSON array of them served in order (one bad item does not
 * stop the rest), as switchyard answers them. `path` is the URL's path, `raw` the body as text.
 */
function produce(method, path, authorization, raw, send) {
  const batch = path.endsWith('/batch');
  const route = ROUTES.get(batch ? path.slice(0, -'/batch'.length) : path);
  if (!route) return failure(404, 'not_found', 'no such endpoint');
  if (method !== 'POST') return failure(405, 'method_not_allowed', 'producer routes take POST');
  if (!bearerToken(authorization)) return failure(401, 'unauthorized', 'missing bearer token');
  let body;
  try {
    body = JSON.parse(raw);
  } catch (error) {
    return failure(400, 'malformed_json', `the body is not JSON: ${error.message}`);
  }
  if (!batch) {
    const one = serveOne(route, body, send);
    return one.error ? answer(one.status, { error: one.error }) : answer(200, one.result);
  }
  if (!Array.isArray(body)) return failure(422, 'invalid_request', 'a batch is a JSON array of bodies');
  const results = body.map((item) => {
    const one = serveOne(route, item, send);
    return one.error
      ? { status: one.status, path: 'peer', error: one.error }
      : { status: 200, path: 'peer', result: one.result };
  });
  return answer(200, { results });
}

/** The first frame on every connection, as switchyard greets. */
function greeting(connectionId, userId) {
  return JSON.stringify({
    type: 'connection_established',
    data: { connection_id: connectionId, user_id: userId },
  });
}

module.exports = { produce, greeting, validUserId };
