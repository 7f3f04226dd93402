// Headless Chromium loads a page over https:// from a wslb TLS listener and opens a wss://
// WebSocket on the same origin; the page exchanges 20 messages with the backend.
// Prints one JSON line: the page's result and the protocol the page itself came over.
//   node tests/node/browser_h2_ws.js URL
"use strict";
const path = require("path");
const { chromium } = require(path.join(__dirname, "../../examples/chat/node_modules/playwright-core"));

const url = process.argv[2];
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
  "--disable-component-update", "--disable-sync", "--disable-quic"];

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args });
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => window.result !== null, null, { timeout: 20000 });
  const result = await page.evaluate(() => window.result);
  const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  console.log(JSON.stringify({ result, protocol }));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
