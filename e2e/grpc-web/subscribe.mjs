// A grpc-web subscriber of a room that another client sends to, for the
// tracing test: subscribes with the token given, prints {"subscribed":true}
// once the stream is attached to the room, then waits for a message with the
// text given and prints it as JSON. Exits 1 on an error or after 20 s.
// Usage: node subscribe.mjs http://127.0.0.1:PORT TOKEN ROOM_ID TEXT
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { MessageService } from "./gen/chat/v1/chat_pb.js";

const [baseUrl, token, roomId, text] = process.argv.slice(2);
if (!text) {
  console.error("usage: node subscribe.mjs <core-svc base URL> <token> <room id> <text>");
  process.exit(2);
}
const messages = createClient(MessageService, createGrpcWebTransport({ baseUrl }));
const abort = new AbortController();
const timer = setTimeout(() => abort.abort(new ConnectError("no such message within 20 s", Code.DeadlineExceeded)), 20_000);
const onHeader = () => console.log(JSON.stringify({ subscribed: true }));
try {
  const stream = messages.subscribe(
    { roomId: BigInt(roomId) },
    { headers: { authorization: `Bearer ${token}` }, signal: abort.signal, onHeader },
  );
  for await (const message of stream) {
    if (message.text === text) {
      console.log(JSON.stringify({ id: Number(message.id), uid: Number(message.uid), text: message.text }));
      break;
    }
  }
} catch (error) {
  const e = ConnectError.from(error);
  console.log(JSON.stringify({ error: `${Code[e.code] ?? e.code}: ${e.rawMessage}` }));
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  abort.abort();
}
