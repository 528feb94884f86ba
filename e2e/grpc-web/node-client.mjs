// Runs the shared flow from Node over grpc-web (Node's own fetch, HTTP/1.1),
// the way a JavaScript client outside a browser would talk to core-svc.
// Usage: node node-client.mjs http://127.0.0.1:PORT
// Prints the flow's JSON result; exits 1 when the flow reports an error.
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { runFlow } from "./flow.mjs";

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.error("usage: node node-client.mjs <core-svc base URL>");
  process.exit(2);
}
const result = await runFlow(createGrpcWebTransport({ baseUrl }));
console.log(JSON.stringify(result));
process.exitCode = result.error ? 1 : 0;
