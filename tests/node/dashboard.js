// Headless Chromium opens wslb's dashboard, and a second page opens and closes WebSockets
// through wslb: the dashboard's open-WebSocket count for the endpoint must follow.
// Prints one JSON line: the counts the dashboard showed, in order.
//   node tests/node/dashboard.js DASHBOARD_URL WS_URL ROW_ID SCREENSHOT_PATH
"use strict";
const path = require("path");
const { chromium } = require(path.join(__dirname, "../../examples/chat/node_modules/playwright-core"));

const [dashboardUrl, wsUrl, rowId, screenshot] = process.argv.slice(2);
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
  "--disable-component-update", "--disable-sync"];

async function waitForCount(page, n) {
  await page.waitForFunction(([id, want]) => {
    const row = document.getElementById(id);
    return row !== null && row.querySelector(".tunnels").textContent === String(want);
  }, [rowId, n], { timeout: 30000 });
  return n;
}

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args });
  const context = await browser.newContext({ viewport: { width: 1200, height: 720 } });
  const dashboard = await context.newPage();
  await dashboard.goto(dashboardUrl);
  const seen = [await waitForCount(dashboard, 0)];
  const client = await context.newPage();
  await client.goto(new URL("/healthz", dashboardUrl).href);  // an http:// origin to open ws:// from
  await client.evaluate(async (url) => {
    window.sockets = await Promise.all([0, 1, 2].map(() => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(ws);
      ws.onerror = reject;
    })));
  }, wsUrl);
  seen.push(await waitForCount(dashboard, 3));
  await dashboard.screenshot({ path: screenshot, fullPage: true });
  await client.evaluate(async () => {
    await Promise.all(window.sockets.slice(1).map((ws) => new Promise((resolve) => {
      ws.onclose = resolve;
      ws.close(1000);
    })));
  });
  seen.push(await waitForCount(dashboard, 1));
  console.log(JSON.stringify({ seen }));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
