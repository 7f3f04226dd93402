// N Socket.IO clients (the official socket.io-client from npm) in one room, M messages each.
// Prints one JSON line: pods per client, messages received, duplicates, errors, reconnects.
//   node tests/node/chat_clients.js URL N M [websocket]
"use strict";
const path = require("path");
const { io } = require(path.join(__dirname, "../../examples/chat/node_modules/socket.io-client"));

const [url, nArg, mArg, mode] = process.argv.slice(2);
const n = Number(nArg), m = Number(mArg);
const transports = mode === "websocket" ? ["websocket"] : ["polling", "websocket"];
const deadline = Date.now() + 60000;

function client(i) {
  const s = io(url, { transports, forceNew: true, withCredentials: false, reconnectionDelay: 200, timeout: 10000 });
  const st = { socket: s, pod: null, received: new Map(), dups: 0, errors: [], connects: 0, upgraded: false };
  s.on("connect", () => { st.connects += 1; });
  s.on("connect_error", (e) => st.errors.push(String(e && e.message)));
  s.io.on("error", (e) => st.errors.push("manager: " + String(e && e.message)));
  s.io.on("open", () => s.io.engine.on("upgrade", () => { st.upgraded = true; }));
  s.on("message", (msg) => {
    if (st.received.has(msg.id)) st.dups += 1;
    st.received.set(msg.id, msg.pod);
  });
  st.joined = new Promise((resolve) => {
    s.on("connect", () => s.emit("join", { room: "bench", name: "node-" + i }, (ack) => { st.pod = ack.pod; resolve(); }));
  });
  return st;
}

(async () => {
  const clients = Array.from({ length: n }, (_, i) => client(i));
  await Promise.race([Promise.all(clients.map((c) => c.joined)), new Promise((r) => setTimeout(r, 30000))]);
  for (let j = 0; j < m; j++) {
    for (let i = 0; i < n; i++) clients[i].socket.emit("message", { room: "bench", name: "node-" + i, text: "hi", id: `${i}-${j}` });
    await new Promise((r) => setTimeout(r, 10));
  }
  while (Date.now() < deadline && clients.some((c) => c.received.size < n * m)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const out = clients.map((c) => ({
    pod: c.pod, received: c.received.size, dups: c.dups, errors: c.errors, connects: c.connects,
    transport: c.socket.io.engine ? c.socket.io.engine.transport.name : null, upgraded: c.upgraded,
  }));
  console.log(JSON.stringify({ expected: n * m, clients: out }));
  clients.forEach((c) => c.socket.close());
  process.exit(0);
})();
