// Opens page.html in headless Chromium (Debian's, driven by playwright-core)
// and prints the flow's result that the page puts on window.chatResult.
// Usage: node browser.mjs 'http://localhost:P/page.html?core=http://127.0.0.1:Q'
// The page's console errors go to stderr, since a CORS refusal shows only there.
// Exits 1 when the flow reports an error or no result comes within 30 s.
import { launch, watch } from "./chromium.mjs";

const pageUrl = process.argv[2];
if (!pageUrl) {
  console.error("usage: node browser.mjs <page URL>");
  process.exit(2);
}

const browser = await launch();
let result;
try {
  const page = await browser.newPage();
  // Printed as they come, since a CORS refusal shows only there.
  watch(page, (problem) => console.error(problem));
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
