// The Node.js `ws` peer: what most teams would write. One send per update per
// subscribed client.
import { WebSocketServer } from 'ws';
import { run, parseArgs } from './feed.js';

const { port, rate } = parseArgs();
const subscribers = new Map(); // symbol -> Set<socket>
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (socket) => {
  socket.on('message', (data) => {
    let request;
    try { request = JSON.parse(data); } catch { return; }
    if (request.op !== 'subscribe') return;
    for (const symbol of request.symbols || []) {
      if (!subscribers.has(symbol)) subscribers.set(symbol, new Set());
      subscribers.get(symbol).add(socket);
    }
  });
  socket.on('close', () => { for (const set of subscribers.values()) set.delete(socket); });
});
wss.on('listening', () => {
  console.log(`peer ws listening on ws://127.0.0.1:${wss.address().port}/v1/ws`);
  run(rate, ({ symbol, frame }) => {
    const set = subscribers.get(symbol);
    if (set) for (const socket of set) socket.send(frame);
  });
});
