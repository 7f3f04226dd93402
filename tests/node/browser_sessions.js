// Successive headless Chromium sessions (each a fresh browser context: its own cookies and
// cache) open the chat page through wslb, one after the other, and stay open; prints the pod
// each landed on as one JSON line.
//   node tests/node/browser_sessions.js URL N
"use strict";
const path = require("path");
const { chromium } = require(path.join(__dirname, "../../examples/chat/node_modules/playwright-core"));

const [url, n] = [process.argv[2], Number(process.argv[3] || 20)];
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
  "--disable-component-update", "--disable-sync", "--disable-quic"];

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args });
  const pods = [];
  for (let i = 0; i < n; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${url}?room=sessions&name=s${i}`);
    await page.waitForFunction(() => window.chat && window.chat.pod, null, { timeout: 20000 });
    pods.push(await page.evaluate(() => window.chat.pod));
  }
  console.log(JSON.stringify({ pods }));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
