// Two headless Chromium browsers (fresh profiles) open the chat page through wslb, land on
// different pods, and each sees the other's message. Prints one JSON line.
//   node tests/node/browser_chat.js URL
"use strict";
const path = require("path");
const { chromium } = require(path.join(__dirname, "../../examples/chat/node_modules/playwright-core"));

const url = process.argv[2];
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
  "--disable-component-update", "--disable-sync", "--disable-quic"];

async function open(name) {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args });
  const page = await browser.newPage();
  await page.goto(`${url}?room=browsers&name=${name}`);
  await page.waitForFunction(() => window.chat && window.chat.pod, null, { timeout: 20000 });
  return { browser, page, pod: await page.evaluate(() => window.chat.pod) };
}

(async () => {
  const a = await open("alice");
  const b = await open("bob");  // a's session is live: b's goes to another pod, first time
  await a.page.fill("input[name=text]", "hello from alice");
  await a.page.press("input[name=text]", "Enter");
  await b.page.waitForFunction(() => window.chat.received.some((m) => m.text === "hello from alice"), null, { timeout: 20000 });
  await b.page.fill("input[name=text]", "hello from bob");
  await b.page.press("input[name=text]", "Enter");
  await a.page.waitForFunction(() => window.chat.received.some((m) => m.text === "hello from bob"), null, { timeout: 20000 });
  const transport = await Promise.all([a, b].map((x) => x.page.evaluate(() => window.chat.socket.io.engine.transport.name)));
  const seen = await b.page.evaluate(() => window.chat.received.map((m) => [m.text, m.pod]));
  console.log(JSON.stringify({ pods: [a.pod, b.pod], transport, seenByBob: seen }));
  await a.browser.close(); await b.browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
