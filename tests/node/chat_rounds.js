// N Socket.IO clients (the official socket.io-client from npm, no cookies) in one room, driven
// in rounds from standard input, so that a test can change the cluster between rounds.
//   node tests/node/chat_rounds.js URL N
// Prints {"ready": ...} once every client joined; then for each input line "round NAME" waits
// until every client is connected, has each client say one message "NAME-i", waits until
// every client received all N (or 30 s), and prints one JSON line: per client the pod it is
// on, the round's messages received, duplicates so far, connects and errors; "pods" prints
// where the clients are now; "quit" ends.
"use strict";
const path = require("path");
const readline = require("readline");
const { io } = require(path.join(__dirname, "../../examples/chat/node_modules/socket.io-client"));

const [url, nArg] = process.argv.slice(2);
const n = Number(nArg);

function client(i) {
  const s = io(url, { forceNew: true, withCredentials: false, reconnectionDelay: 200, reconnectionDelayMax: 1000, timeout: 10000 });
  const st = { socket: s, pod: null, seen: new Set(), dups: 0, errors: [], connects: 0, joined: false };
  s.on("connect", () => {
    st.connects += 1;
    st.joined = false;
    s.emit("join", { room: "rounds", name: "node-" + i }, (ack) => { st.pod = ack.pod; st.joined = true; });
  });
  s.on("disconnect", () => { st.joined = false; });
  s.on("connect_error", (e) => st.errors.push(String(e && e.message)));
  s.io.on("error", (e) => st.errors.push("manager: " + String(e && e.message)));
  s.on("message", (msg) => {
    if (typeof msg.id !== "string") return;
    if (st.seen.has(msg.id)) st.dups += 1;
    st.seen.add(msg.id);
  });
  return st;
}

const clients = Array.from({ length: n }, (_, i) => client(i));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await sleep(20);
  return pred();
}
const state = () => clients.map((c) => ({ pod: c.pod, dups: c.dups, errors: c.errors, connects: c.connects, joined: c.joined }));

(async () => {
  const ok = await until(() => clients.every((c) => c.joined), 30000);
  console.log(JSON.stringify({ ready: ok, clients: state() }));
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, name] = line.trim().split(/\s+/);
    if (cmd === "quit") break;
    if (cmd === "pods") { console.log(JSON.stringify({ clients: state() })); continue; }
    if (cmd !== "round") continue;
    const joined = await until(() => clients.every((c) => c.joined), 30000);
    clients.forEach((c, i) => c.socket.emit("message", { room: "rounds", name: "node-" + i, text: "hi", id: `${name}-${i}` }));
    const ids = clients.map((_, i) => `${name}-${i}`);
    await until(() => clients.every((c) => ids.every((id) => c.seen.has(id))), 30000);
    const out = state().map((s, i) => ({ ...s, received: ids.filter((id) => clients[i].seen.has(id)).length }));
    console.log(JSON.stringify({ round: name, joined, expected: n, clients: out }));
  }
  clients.forEach((c) => c.socket.close());
  process.exit(0);
})();
