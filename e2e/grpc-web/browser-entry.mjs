// The page's script (bundled by esbuild into dist/browser-entry.js): runs the
// shared flow with the browser's fetch against the core-svc URL given as
// `?core=...`, so the call is cross-origin and CORS is exercised for real.
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { runFlow } from "./flow.mjs";

async function main() {
  const core = new URLSearchParams(location.search).get("core");
  if (!core) return { error: "the page needs ?core=<core-svc base URL>" };
  return runFlow(createGrpcWebTransport({ baseUrl: core }));
}

main()
  .catch((error) => ({ error: `page script failed: ${error}` }))
  .then((result) => {
    document.getElementById("result").textContent = JSON.stringify(result, null, 2);
    document.getElementById("status").textContent = result.error ? "failed" : "passed";
    // Set last: browser.mjs waits for this.
    window.chatResult = result;
  });
