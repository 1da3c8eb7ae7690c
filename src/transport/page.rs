//! The built-in page served at `/` when no built dashboard is configured: a plain
//! live quote table, so a first run always shows something.

use axum::response::Html;

pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tickwire — live quotes</title>
<style>
body{font:14px/1.4 ui-monospace,Menlo,Consolas,monospace;background:#0d1117;color:#c9d1d9;margin:2em}
table{border-collapse:collapse}td,th{padding:2px 14px;text-align:right}th{color:#8b949e}td:first-child,th:first-child{text-align:left}
.up{color:#3fb950}.down{color:#f85149}#status{color:#8b949e}
</style></head><body>
<h1>Tickwire</h1><p id="status">connecting…</p>
<table><thead><tr><th>symbol</th><th>bid</th><th>ask</th><th>last</th><th>seq</th></tr></thead><tbody id="rows"></tbody></table>
<script>
const rows = new Map();
function row(symbol){
  if(!rows.has(symbol)){const tr=document.createElement('tr');tr.innerHTML='<td>'+symbol+'</td><td></td><td></td><td></td><td></td>';document.getElementById('rows').appendChild(tr);rows.set(symbol,tr);}
  return rows.get(symbol).children;
}
function quote(u){const c=row(u.symbol);if(!u.bid)return;c[1].textContent=u.bid;c[2].textContent=u.ask;c[4].textContent=u.seq;}
function trade(u){const c=row(u.symbol);if(!u.price)return;c[3].textContent=u.price;c[3].className=u.side==='buy'?'up':'down';}
async function start(){
  const list=(await (await fetch('/v1/instruments')).json()).instruments.map(i=>i.symbol);
  const ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+'/v1/ws');
  ws.onopen=()=>{document.getElementById('status').textContent='live';ws.send(JSON.stringify({op:'subscribe',channels:['quotes','trades'],symbols:list}));};
  ws.onclose=()=>{document.getElementById('status').textContent='disconnected, retrying…';setTimeout(start,1000);};
  ws.onmessage=(m)=>{const msg=JSON.parse(m.data);
    if(msg.type==='snapshot'&&msg.data){(msg.channel==='quotes'?quote:trade)(Object.assign({symbol:msg.symbol,seq:msg.seq},msg.data));}
    else if(msg.type==='batch'){for(const u of msg.updates){(u.channel==='quotes'?quote:trade)(u);}}};
}
start();
</script></body></html>
"#;
