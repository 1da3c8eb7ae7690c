// Shared by both peers: a market of the same symbols as Tickwire's simulator,
// producing updates of the same shape and size (quotes and trades with exact
// decimal strings and the three clocks), at RATE events per second in total.
// Each update is sent as its own batch frame: {"type":"batch","updates":[...]}.

export const SYMBOLS = [
  'BTC-USD', 'ETH-USD', 'SOL-USD', 'XRP-USD', 'DOGE-USD', 'ADA-USD', 'AVAX-USD', 'LINK-USD',
  'DOT-USD', 'LTC-USD', 'BCH-USD', 'ATOM-USD', 'AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META',
  'TSLA', 'JPM', 'V', 'SPY', 'QQQ', 'AMD',
];

const epochNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
export const nowNs = () => epochNs + process.hrtime.bigint();

const seqs = new Map();
let tradeId = 1;

function update(symbol) {
  const t = nowNs().toString();
  const trade = Math.random() < 0.15;
  const channel = trade ? 'trades' : 'quotes';
  const key = symbol + channel;
  const seq = (seqs.get(key) || 0) + 1;
  seqs.set(key, seq);
  const px = (100 + Math.random()).toFixed(2);
  const body = trade
    ? `"price":"${px}","size":"0.${String(Math.floor(Math.random() * 1e5)).padStart(5, '0')}","side":"buy","trade_id":${tradeId++}`
    : `"bid":"${px}","bid_size":"0.42100","ask":"${px}","ask_size":"1.20000"`;
  return { symbol, channel, frame: `{"type":"batch","updates":[{"symbol":"${symbol}","channel":"${channel}","seq":${seq},${body},"ts_event":${t},"ts_recv":${t},"ts_send":${t}}]}` };
}

// Calls emit(update) RATE times per second, paced every millisecond.
export function run(rate, emit) {
  const started = process.hrtime.bigint();
  const maxBurst = Math.max(1, Math.floor(rate / 10)); // a stall never floods more than 100 ms worth
  let sent = 0;
  setInterval(() => {
    const due = Number((process.hrtime.bigint() - started) * BigInt(rate) / 1_000_000_000n);
    if (due - sent > maxBurst) sent = due - maxBurst;
    for (; sent < due; sent++) emit(update(SYMBOLS[Math.floor(Math.random() * SYMBOLS.length)]));
  }, 1);
}

export function parseArgs() {
  const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')));
  return { port: Number(args.port || 0), rate: Number(args.rate || 1000) };
}
