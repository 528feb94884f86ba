// Opens page.html in headless Chromium (Debian's, driven by playwright-core)
// and prints the flow's result that the page puts on window.chatResult.
// Usage: node browser.mjs 'http://localhost:P/page.html?core=http://127.0.0.1:Q'
// The page's console errors go to stderr, since a CORS refusal shows only there.
// Exits 1 when the flow reports an error or no result comes within 30 s.
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const pageUrl = process.argv[2];
if (!pageUrl) {
  console.error("usage: node browser.mjs <page URL>");
  process.exit(2);
}

// playwright-core makes a fresh, empty user-data dir for each launch. The
// flags keep Chromium from reaching for the network on its own (there is
// none here besides the local services) and from needing a sandbox or GPU.
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let result;
try {
  const page = await browser.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") console.error(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  page.on("requestfailed", (request) => console.error(`request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`));
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.chatResult !== undefined, null, { timeout: 30_000 });
  result = await page.evaluate(() => window.chatResult);
} catch (error) {
  result = { error: `browser: ${error.message.split("\n")[0]}` };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exitCode = result.error ? 1 : 0;
