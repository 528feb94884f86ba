import { defineConfig } from "vite";

// `npm run dev` serves the client with live reload and hands every API path
// to a gateway (GATEWAY, by default the one `scripts/up` starts).
const gateway = process.env.GATEWAY ?? "http://127.0.0.1:8080";
const api = ["/register", "/login", "/profile", "/change-name", "/create-room", "/join", "/invite", "/rooms", "/room/",
  "/messages", "/direct", "/leave", "/remove-member", "/read", "/unread", "/search"];

export default defineConfig({
  build: {
    target: "es2022",
    // No source maps in what the gateway serves: they would double its size.
    sourcemap: false,
  },
  server: {
    proxy: {
      ...Object.fromEntries(api.map((path) => [path, gateway])),
      "/ws": { target: gateway.replace(/^http/, "ws"), ws: true },
    },
  },
});
