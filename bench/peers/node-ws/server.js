// A plain broadcast hub for `hubbub-bench --raw`: no auth, no welcome; every
// text frame received is sent to every client (the sender included). Clients
// with more than 1 MiB buffered are skipped (their messages are dropped).
// Usage: node server.js [PORT]   (or PORT=...; 0 picks a free port)
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] ?? process.env.PORT ?? 8090);
const MAX_BUFFERED = 1 << 20;
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 64 * 1024 });

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    for (const c of wss.clients) {
      if (c.readyState === 1 && c.bufferedAmount <= MAX_BUFFERED) c.send(data, { binary: false });
    }
  });
  ws.on('error', () => {});
});

wss.on('listening', () => {
  console.log(`node-ws listening on http://127.0.0.1:${wss.address().port} pid ${process.pid}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
