// N Socket.IO clients (the official socket.io-client from npm, no cookies) in one room, each
// saying a message every PERIOD ms while it is joined, for as long as a rolling update of the
// load balancers lasts; a test drives them from standard input and reads what they saw.
//   node tests/node/rollout_clients.js URL N PERIOD_MS STAGGER_MS
// Clients start STAGGER_MS apart (no handshake burst of our own). Prints {"ready": ...} once
// every client joined. Input lines: "stop": stop saying, wait (at most 10 s) for the acks of
// what was said, print {"stopped": ...}; "dump FIN": wait (at most 15 s) until every client
// received the message with id FIN, print everything, exit. Times are wall-clock seconds
// (Date.now() / 1000), the clock of the pods' "ts" too:
//   {"fin": ..., "ts": {id: the pod's ts}, "clients": [{name, pod, joined, connects: [t],
//    joins: [t], upgrades, disconnects: [[t, reason]], errors, sent: [[id, ack t]],
//    received: {id: t}, dups: [[id, t, transport]]}]}
"use strict";
const path = require("path");
const readline = require("readline");
const { io } = require(path.join(__dirname, "../../examples/chat/node_modules/socket.io-client"));

const [url, nArg, periodArg, staggerArg] = process.argv.slice(2);
const n = Number(nArg), period = Number(periodArg), stagger = Number(staggerArg);
const ROOM = "rollout";
const now = () => Date.now() / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ts = {}; // message id -> the pod's time of the broadcast
let saying = true;

async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await sleep(20);
  return pred();
}

function client(i) {
  const name = "node-" + i;
  const s = io(url, { forceNew: true, withCredentials: false, reconnectionDelay: 200, reconnectionDelayMax: 1000, timeout: 10000 });
  const st = { name, socket: s, pod: null, joined: false, connects: [], joins: [], upgrades: 0, disconnects: [], errors: [], sent: [], pending: 0, seen: new Map(), dups: [], k: 0 };
  s.on("connect", () => {
    st.connects.push(now());
    st.joined = false;
    s.timeout(5000).emit("join", { room: ROOM, name }, (err, ack) => {
      if (err) { st.errors.push("join: " + String(err.message)); return; }
      st.pod = ack.pod;
      st.joined = true;
      st.joins.push(now());
    });
  });
  s.on("disconnect", (reason) => { st.joined = false; st.disconnects.push([now(), String(reason)]); });
  s.on("connect_error", (e) => st.errors.push(String(e && e.message)));
  s.io.on("error", (e) => st.errors.push("manager: " + String(e && e.message)));
  s.io.on("open", () => s.io.engine.once("upgrade", () => { st.upgrades += 1; }));
  s.on("message", (msg) => {
    if (typeof msg.id !== "string") return;
    if (st.seen.has(msg.id)) st.dups.push([msg.id, now(), s.io.engine && s.io.engine.transport.name]);
    else st.seen.set(msg.id, now());
    ts[msg.id] = msg.ts;
  });
  // say a message every period ms (from a random phase) while joined; never buffered while away
  const say = () => {
    if (!saying) return;
    if (s.connected && st.joined) {
      const id = `${name}-${st.k++}`;
      st.pending += 1;
      s.timeout(5000).emit("message", { room: ROOM, name, text: "tick", id }, (err) => {
        st.pending -= 1;
        if (!err) st.sent.push([id, now()]);
      });
    }
    setTimeout(say, period);
  };
  setTimeout(say, Math.random() * period);
  return st;
}

const clients = [];
const state = () => clients.map((c) => ({
  name: c.name, pod: c.pod, joined: c.joined, connects: c.connects, joins: c.joins, upgrades: c.upgrades,
  disconnects: c.disconnects, errors: c.errors, sent: c.sent, received: Object.fromEntries(c.seen), dups: c.dups,
}));

(async () => {
  for (let i = 0; i < n; i++) {
    clients.push(client(i));
    await sleep(stagger);
  }
  const ok = await until(() => clients.every((c) => c.joined), 30000);
  console.log(JSON.stringify({ ready: ok, pods: clients.map((c) => c.pod) }));
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, fin] = line.trim().split(/\s+/);
    if (cmd === "stop") {
      saying = false;
      const acked = await until(() => clients.every((c) => c.pending === 0), 10000);
      console.log(JSON.stringify({ stopped: acked }));
    } else if (cmd === "dump") {
      const all = await until(() => clients.every((c) => c.seen.has(fin)), 15000);
      const out = JSON.stringify({ fin: all, clients: state(), ts });
      clients.forEach((c) => c.socket.close());
      // megabytes: exit once written (a pipe takes 64 KiB at a time)
      process.stdout.write(out + "\n", () => process.exit(0));
      return;
    }
  }
  clients.forEach((c) => c.socket.close());
  process.exit(0);
})();
