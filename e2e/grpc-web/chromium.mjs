// Debian's Chromium, headless, driven by playwright-core: the one browser
// setup of the e2e tests (browser.mjs for grpc-web, web-client.mjs for the
// web client).
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

// playwright-core makes a fresh, empty user-data dir for each launch. The
// flags keep Chromium from reaching for the network on its own (there is
// none here besides the local services) and from needing a sandbox or GPU.
export function launch() {
  return chromium.launch({
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
}

/** Calls `report` with what a page must not show: console errors,
 * uncaught exceptions and requests that failed. */
export function watch(page, report) {
  page.on("console", (message) => {
    if (message.type() === "error") report(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => report(`page error: ${error.message}`));
  page.on("requestfailed", (request) =>
    report(`request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`),
  );
}
