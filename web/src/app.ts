// The logged-in page: the room list beside the open room, one socket for
// both, and the session's token kept fresh.
import { h } from "./dom";
import { socketWords } from "./errors";
import { nameSpan } from "./names";
import { RoomLog } from "./room-log";
import type { Session } from "./session";
import { ChatSocket, type Status } from "./socket";
import { ChatView } from "./views/chat";
import { RoomList } from "./views/rooms";

/** How often the unread counts of the other rooms are asked for. */
const UNREAD_EVERY_MS = 4_000;

const STATUS_WORDS: Record<Status, string> = {
  connecting: "Connecting…",
  online: "Connected",
  offline: "Connection lost, reconnecting…",
};

export function startApp(root: HTMLElement, session: Session, loggedOut: (notice: string) => void): void {
  const logs = new Map<number, RoomLog>();
  const logOf = (roomId: number) => {
    let log = logs.get(roomId);
    if (!log) logs.set(roomId, (log = new RoomLog(roomId)));
    return log;
  };
  let chat: ChatView | null = null;
  const status = h("p", { class: "status", role: "status", "data-testid": "connection" }, STATUS_WORDS.connecting);
  const main = h("main", { class: "room-pane", id: "main", tabindex: -1 }, h("p", { class: "placeholder" }, "Pick a room, or create one."));

  const socket = new ChatSocket(
    () => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?token=${encodeURIComponent(session.token)}`,
    (roomId) => logOf(roomId).lastId,
    {
      frame: (frame) => chat?.frame(frame),
      entered: () => chat?.entered(),
      refused: (roomId, error) => {
        if (chat?.room.RoomID === roomId) chat.refused(error);
        if (error === "removed from room") rooms.forget(roomId);
      },
      send: (send) => chat?.send(send),
      status: (now) => {
        status.textContent = STATUS_WORDS[now];
        status.dataset.state = now;
        if (now === "online") void rooms.refreshUnread();
      },
      renewed: (expiresAt) => session.confirmed(expiresAt),
      authRefused: () => logOut(socketWords("invalid token")),
    },
  );

  const rooms = new RoomList(() => session.token, session.uid, (roomId) => void open(roomId));

  async function open(roomId: number): Promise<void> {
    if (chat?.room.RoomID === roomId) {
      document.body.classList.add("in-room");
      chat.focus();
      return;
    }
    const room = rooms.rooms.get(roomId);
    if (!room) return;
    chat?.dispose();
    const view = new ChatView(room, await rooms.title(roomId), logOf(roomId), {
      token: () => session.token,
      uid: session.uid,
      socket,
      back: () => document.body.classList.remove("in-room"),
      partner: (uid) => rooms.partner(roomId, uid),
    });
    chat = view;
    rooms.select(roomId);
    main.replaceChildren(view.element);
    document.body.classList.add("in-room");
    // History first, then the socket resumes after its newest entry: the
    // replay fills exactly the gap between the two.
    if ((await view.load()) && chat === view) {
      socket.enter(roomId);
      view.focus();
    }
  }

  function logOut(notice = ""): void {
    window.clearInterval(poll);
    socket.close();
    session.end();
    loggedOut(notice);
  }

  session.onToken = (token) => {
    if (token) socket.auth(token);
    else logOut("Your session has ended. Please log in again.");
  };
  session.start();

  const poll = window.setInterval(() => {
    if (socket.isOpen) void rooms.refreshUnread();
  }, UNREAD_EVERY_MS);
  window.addEventListener("online", () => socket.reconnectNow());

  root.replaceChildren(
    h("a", { class: "skip", href: "#main" }, "Skip to the conversation"),
    h(
      "header",
      { class: "top" },
      h("h1", {}, "Chat"),
      h("p", { class: "me" }, "You are ", nameSpan(session.uid), ` (user number ${session.uid})`),
      status,
      h("button", { type: "button", onclick: () => logOut() }, "Log out"),
    ),
    h("div", { class: "layout" }, rooms.element, main),
  );
  socket.connect();
  void rooms.load();
}
