// marketdata dashboard: one symbol per page (/?ex=binance&sym=ETH-USDT), live over /v1/stream.
// Text shows decimals exactly as received (strings); only the charts convert them to numbers.
"use strict";

const LC = window.LightweightCharts;
const params = new URLSearchParams(location.search);
const LADDER_ROWS = 15;
const state = (window.mdState = {
  ex: (params.get("ex") || "").toLowerCase(),
  sym: (params.get("sym") || "").toUpperCase(),
  interval: params.get("interval") || "1m",
  book: null, ticker: null, bookUpdates: 0, tickerUpdates: 0, candleUpdates: 0,
  candleBars: 0, lastCandle: null, lastPush: 0, errors: [], connected: false,
});
const $ = (id) => document.getElementById(id);
const num = (s) => Number.parseFloat(s);

// -- symbol list and navigation ---------------------------------------------------------------
async function loadSymbols() {
  const res = await fetch("/v1/symbols");
  const body = await res.json();
  const nav = $("symbols");
  nav.textContent = "";
  const all = [];
  for (const [ex, list] of Object.entries(body.exchanges)) {
    for (const s of list) all.push({ ex, ...s });
  }
  for (const s of all) {
    const a = document.createElement("a");
    a.href = `/?ex=${encodeURIComponent(s.ex)}&sym=${encodeURIComponent(s.sym)}`;
    a.textContent = `${s.ex}:${s.sym}`;
    if (s.ex === state.ex && s.sym === state.sym) a.className = "current";
    nav.appendChild(a);
  }
  return all;
}

// -- order book: ladder and depth chart --------------------------------------------------------
function ladderRows(tbody, levels, maxCum, reverse) {
  let cum = 0;
  const rows = levels.slice(0, LADDER_ROWS).map(([px, qty]) => {
    cum += num(qty);
    return { px, qty, cum };
  });
  if (reverse) rows.reverse();
  tbody.textContent = "";
  for (const r of rows) {
    const tr = document.createElement("tr");
    const pct = maxCum > 0 ? Math.min(100, (100 * r.cum) / maxCum) : 0;
    tr.innerHTML = `<td class="px"><span></span></td>` +
      `<td class="qty"><div class="bar" style="width:${pct.toFixed(1)}%"></div><span></span></td>`;
    tr.cells[0].firstChild.textContent = r.px;
    tr.cells[1].lastChild.textContent = r.qty;
    tbody.appendChild(tr);
  }
}

function cumulative(levels) {
  let cum = 0;
  return levels.map(([px, qty]) => ({ px: num(px), cum: (cum += num(qty)) }));
}

let depthChart = null, bidSeries = null, askSeries = null;
function initDepth() {
  depthChart = LC.createOptionsChart($("depth-chart"), {
    autoSize: true,
    layout: { background: { color: "#161c23" }, textColor: "#d8dee9" },
    grid: { vertLines: { color: "#222b35" }, horzLines: { color: "#222b35" } },
  });
  bidSeries = depthChart.addSeries(LC.AreaSeries, {
    lineColor: "#26a69a", topColor: "rgba(38,166,154,.45)", bottomColor: "rgba(38,166,154,.05)",
    lineType: 1, priceLineVisible: false, lastValueVisible: false });
  askSeries = depthChart.addSeries(LC.AreaSeries, {
    lineColor: "#ef5350", topColor: "rgba(239,83,80,.45)", bottomColor: "rgba(239,83,80,.05)",
    lineType: 1, priceLineVisible: false, lastValueVisible: false });
}

let depthPrecision = -1;
function significantDecimals(px) {
  const frac = (px.split(".")[1] || "").replace(/0+$/, "");
  return frac.length;
}

function renderDepth(book) {
  const levels = [...book.bids.slice(0, 10), ...book.asks.slice(0, 10)];
  const precision = Math.min(8, Math.max(0, ...levels.map(([px]) => significantDecimals(px))));
  if (precision !== depthPrecision) {
    depthPrecision = precision;
    depthChart.applyOptions({ localization: { precision } });
  }
  const bids = cumulative(book.bids).reverse(); // ascending price
  const asks = cumulative(book.asks);
  bidSeries.setData(bids.map((p) => ({ time: p.px, value: p.cum })));
  askSeries.setData(asks.map((p) => ({ time: p.px, value: p.cum })));
  depthChart.timeScale().fitContent();
}

function onBook(book) {
  if (state.book && book.seq !== null && state.book.seq !== null && book.seq < state.book.seq) {
    return; // never move backwards
  }
  state.book = book;
  state.bookUpdates += 1;
  const top = (levels) => cumulative(levels.slice(0, LADDER_ROWS)).at(-1)?.cum || 0;
  const maxCum = Math.max(top(book.bids), top(book.asks));
  ladderRows($("asks"), book.asks, maxCum, true);
  ladderRows($("bids"), book.bids, maxCum, false);
  const bb = book.bids[0], ba = book.asks[0];
  $("spread").textContent = bb && ba
    ? `spread ${(num(ba[0]) - num(bb[0])).toPrecision(6)}  ·  bid ${bb[0]}  ask ${ba[0]}`
    : "spread —";
  $("book-status").textContent = book.status;
  $("book-status").className = `badge ${book.status}`;
  $("book-seq").textContent = book.seq === null ? "—" : String(book.seq);
  renderDepth(book);
  tickAges();
}

// -- ticker ------------------------------------------------------------------------------------
function onTicker(t) {
  state.ticker = t;
  state.tickerUpdates += 1;
  $("t-last").textContent = t.lastPrice;
  const ch = $("t-change");
  ch.textContent = `${t.priceChange} (${t.priceChangePercent}%)`;
  ch.className = t.priceChange.startsWith("-") ? "down" : "up";
  $("t-high").textContent = t.highPrice;
  $("t-low").textContent = t.lowPrice;
  $("t-volume").textContent = t.volume;
  $("t-qvolume").textContent = t.quoteVolume;
  $("t-count").textContent = String(t.count);
}

// -- candles -----------------------------------------------------------------------------------
let candleChart = null, candleSeries = null, volumeSeries = null;
function initCandles() {
  candleChart = LC.createChart($("candle-chart"), {
    autoSize: true,
    layout: { background: { color: "#161c23" }, textColor: "#d8dee9" },
    grid: { vertLines: { color: "#222b35" }, horzLines: { color: "#222b35" } },
    timeScale: { timeVisible: true, secondsVisible: false },
  });
  candleSeries = candleChart.addSeries(LC.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    borderVisible: false });
  volumeSeries = candleChart.addSeries(LC.HistogramSeries, {
    priceFormat: { type: "volume" }, priceScaleId: "vol", lastValueVisible: false,
    priceLineVisible: false });
  candleChart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  candleSeries.priceScale().applyOptions({ scaleMargins: { top: 0.05, bottom: 0.25 } });
}

function bar(c) {
  const time = Math.floor(c.t / 1000);
  const up = num(c.c) >= num(c.o);
  return [
    { time, open: num(c.o), high: num(c.h), low: num(c.l), close: num(c.c) },
    { time, value: num(c.v), color: up ? "rgba(38,166,154,.5)" : "rgba(239,83,80,.5)" },
  ];
}

function onCandle(c, live) {
  if (c.iv !== state.interval) return;
  const last = state.lastCandle;
  const [k, v] = bar(c);
  try {
    if (last && c.t < last.t) {
      candleSeries.update(k, true); // a late trade changed an older candle
      volumeSeries.update(v, true);
    } else {
      candleSeries.update(k);
      volumeSeries.update(v);
      if (!last || c.t > last.t) state.candleBars += 1;
      state.lastCandle = c;
    }
  } catch (e) {
    state.errors.push(String(e));
  }
  if (live) state.candleUpdates += 1;
  $("candle-info").textContent =
    `${state.candleBars} bars · last ${new Date(state.lastCandle.t).toISOString().slice(0, 16)}Z` +
    ` close ${state.lastCandle.c}${state.lastCandle.closed ? "" : " (open)"}`;
}

async function loadCandles() {
  const url = `/v1/candles/${encodeURIComponent(state.ex)}/${encodeURIComponent(state.sym)}` +
    `?interval=${encodeURIComponent(state.interval)}&limit=500`;
  const res = await fetch(url);
  const list = res.ok ? await res.json() : [];
  const bars = list.map(bar);
  candleSeries.setData(bars.map((b) => b[0]));
  volumeSeries.setData(bars.map((b) => b[1]));
  state.candleBars = list.length;
  state.lastCandle = list.at(-1) || null;
  if (state.lastCandle) onCandle(state.lastCandle, false);
  else $("candle-info").textContent = res.ok ? "no candles yet" : `(${res.status})`;
  candleChart.timeScale().fitContent();
}

function renderIntervals(intervals) {
  const box = $("intervals");
  box.textContent = "";
  for (const iv of intervals) {
    const b = document.createElement("button");
    b.textContent = iv;
    b.dataset.iv = iv;
    if (iv === state.interval) b.className = "current";
    b.onclick = () => switchInterval(iv);
    box.appendChild(b);
  }
}

async function switchInterval(iv) {
  if (iv === state.interval) return;
  const old = `candles:${state.ex}:${state.sym}:${state.interval}`;
  state.interval = iv;
  for (const b of $("intervals").children) b.className = b.dataset.iv === iv ? "current" : "";
  const u = new URL(location.href);
  u.searchParams.set("interval", iv);
  history.replaceState(null, "", u);
  send({ op: "unsubscribe", channels: [old] });
  await loadCandles();
  send({ op: "subscribe", channels: [`candles:${state.ex}:${state.sym}:${iv}`] });
}

// -- WebSocket ---------------------------------------------------------------------------------
let ws = null, retry = 500;
function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/v1/stream`);
  ws.onopen = () => {
    retry = 500;
    state.connected = true;
    $("conn").textContent = "live";
    $("conn").className = "badge open";
    const base = `${state.ex}:${state.sym}`;
    send({ op: "subscribe",
           channels: [`book:${base}`, `ticker:${base}`, `candles:${base}:${state.interval}`] });
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "error") { state.errors.push(msg.reason); return; }
    if (msg.type !== "update" && msg.type !== "snapshot") return;
    state.lastPush = Date.now();
    const kind = msg.channel.split(":", 1)[0];
    if (kind === "book") onBook(msg.data);
    else if (kind === "ticker") onTicker(msg.data);
    else if (kind === "candles") onCandle(msg.data, true);
  };
  ws.onclose = (ev) => {
    state.connected = false;
    $("conn").textContent = ev.code === 4008 ? "too slow, reconnecting" : "reconnecting";
    $("conn").className = "badge closed";
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

// -- ages ------------------------------------------------------------------------------------
function fmtAge(ms) {
  if (ms < 0) ms = 0;
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.round(ms / 1000)} s`;
  if (ms < 172800000) return `${(ms / 3600000).toFixed(1)} h`;
  return `${Math.round(ms / 86400000)} d`;
}

function tickAges() {
  const now = Date.now();
  if (state.book) {
    const age = now - state.book.ts;
    $("data-age").textContent = fmtAge(age);
    $("data-age").className = age > 10000 ? "badge old" : "";
  }
  if (state.lastPush) $("push-age").textContent = fmtAge(now - state.lastPush);
}

// -- start -------------------------------------------------------------------------------------
async function main() {
  const all = await loadSymbols();
  if (!state.ex || !state.sym) {
    if (!all.length) { $("title").textContent = "marketdata: no data in Redis yet"; return; }
    state.ex = all[0].ex;
    state.sym = all[0].sym;
    history.replaceState(null, "", `/?ex=${state.ex}&sym=${state.sym}`);
    await loadSymbols();
  }
  $("title").textContent = `${state.ex}:${state.sym}`;
  document.title = `${state.ex}:${state.sym} · marketdata`;
  const me = all.find((s) => s.ex === state.ex && s.sym === state.sym);
  const intervals = me && me.intervals.length ? me.intervals : ["1m", "5m", "15m", "1h", "4h", "1d"];
  if (!intervals.includes(state.interval)) state.interval = intervals[0];
  renderIntervals(intervals);
  initDepth();
  initCandles();
  await loadCandles();
  connect();
  setInterval(tickAges, 500);
  state.ready = true;
}

main().catch((e) => { state.errors.push(String(e)); console.error(e); });
