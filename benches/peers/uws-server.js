// The uWebSockets.js peer: the fastest WebSocket server there is. Subscriptions
// are uWS topics; app.publish corks and fans out in C++.
import uWS from '@trufflesuite/uws-js-unofficial';
import { run, parseArgs } from './feed.js';

const { port, rate } = parseArgs();
const app = uWS.App().ws('/v1/ws', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1 << 20,
  message: (ws, message) => {
    let request;
    try { request = JSON.parse(Buffer.from(message).toString()); } catch { return; }
    if (request.op !== 'subscribe') return;
    for (const symbol of request.symbols || []) ws.subscribe(symbol);
  },
});
app.listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('listen failed'); process.exit(1); }
  console.log(`peer uws listening on ws://127.0.0.1:${uWS.us_socket_local_port(token)}/v1/ws`);
  run(rate, ({ symbol, frame }) => app.publish(symbol, frame, false));
});
