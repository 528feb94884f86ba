// The client flow shared by node-client.mjs and the browser page: a new user
// signs up, opens a live Subscribe stream on a new room, sends a message and
// waits for that message to come back on the stream, all over grpc-web.
// It returns plain JSON (ids as numbers: the API keeps them below 2^53), so
// that the Python test can assert on what was actually observed.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { MessageKind, MessageService, RoomService, UserService } from "./gen/chat/v1/chat_pb.js";

const STREAM_TIMEOUT_MS = 15_000;

export async function runFlow(transport) {
  const users = createClient(UserService, transport);
  const rooms = createClient(RoomService, transport);
  const messages = createClient(MessageService, transport);
  const result = { step: "register" };
  try {
    // Unique per run: the suffix is 3-20 word characters as the API requires.
    const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    const username = `gw_${suffix}`.slice(0, 20);
    const email = `${username}@example.com`;
    const password = `pw-${suffix}-${suffix}`;
    const registered = await users.register({ username, email, password });
    result.username = username;
    result.registered_uid = Number(registered.uid);

    result.step = "login";
    const login = await users.login({ email, password });
    result.uid = Number(login.uid);
    // Only its presence is reported: the token itself stays out of logs.
    result.token_received = login.token.length > 0;
    const auth = { headers: { authorization: `Bearer ${login.token}` } };

    result.step = "get_profile";
    const profile = await users.getProfile({ uid: 0n }, auth);
    result.profile = { uid: Number(profile.uid), username: profile.username, email: profile.email ?? null };

    result.step = "create_room";
    const room = await rooms.createRoom({ name: `grpc-web ${suffix}`, isPrivate: false }, auth);
    result.room_id = Number(room.roomId);

    result.step = "subscribe";
    const text = `hello over grpc-web ${suffix} ✓`;
    result.sent_text = text;
    result.received = await sendAndReceive(messages, auth, room.roomId, text, result);
    delete result.step;
  } catch (error) {
    const e = ConnectError.from(error);
    result.error = `${Code[e.code] ?? e.code}: ${e.rawMessage}${causes(e)}`;
  }
  return result;
}

// Node's "fetch failed" says why only in its causes (e.g. ECONNREFUSED).
function causes(error) {
  let text = "";
  for (let cause = error.cause, seen = error.rawMessage; cause instanceof Error; cause = cause.cause) {
    if (cause.message !== seen) text += ` (${cause.code ?? cause.name}: ${cause.message})`;
    seen = cause.message;
  }
  return text;
}

// Opens the stream, sends once the stream is live, and waits for the sent
// message on it. The response headers of a grpc-web stream arrive only after
// core-svc has attached the stream to the room's feed, so a message sent after
// `onHeader` fired must come through live (no after_id replay involved).
async function sendAndReceive(messages, auth, roomId, text, result) {
  const abort = new AbortController();
  const timer = setTimeout(
    () => abort.abort(new ConnectError(`the sent message did not arrive within ${STREAM_TIMEOUT_MS} ms`, Code.DeadlineExceeded)),
    STREAM_TIMEOUT_MS,
  );
  let onHeader, onSent;
  const headers = new Promise((resolve) => (onHeader = resolve));
  const sentId = new Promise((resolve) => (onSent = resolve));
  const stream = messages.subscribe({ roomId }, { ...auth, signal: abort.signal, onHeader });
  const received = (async () => {
    const seen = [];
    for await (const message of stream) {
      seen.push({ id: Number(message.id), kind: MessageKind[message.kind] });
      // Only the message whose id Send returned counts (its answer may come
      // after the stream delivered it); other events, such as joins, are
      // kept only to explain a failure.
      if (message.kind === MessageKind.MESSAGE && message.id === (await sentId)) {
        return { id: Number(message.id), room_id: Number(message.roomId), uid: Number(message.uid), text: message.text };
      }
    }
    throw new ConnectError(`the stream ended without the sent message; it had ${JSON.stringify(seen)}`, Code.DataLoss);
  })();
  try {
    // A stream that fails before its headers (e.g. PERMISSION_DENIED) ends the wait too.
    await Promise.race([headers, received]);
    result.step = "send";
    const sent = await messages.send({ roomId, text }, { ...auth, signal: abort.signal });
    result.sent_id = Number(sent.messageId);
    onSent(sent.messageId);
    result.step = "receive";
    return await received;
  } finally {
    clearTimeout(timer);
    // Closes the stream, which would otherwise stay open for good.
    abort.abort();
    received.catch(() => {});
  }
}
