// The WebSocket (API.md, "WebSocket"): one connection, in one room at a
// time. It owns what makes the chat survive the network:
// - a dropped socket reconnects with backoff, and re-enters its room with
//   `LastID` (the newest event the page applied), so the server replays
//   exactly what was missed: nothing lost, nothing twice;
// - every send carries a `Key`, stays pending until its `sent`, and is
//   sent again with the same `Key` after `temporarily unavailable` or a
//   reconnect, so a retry never stores a message twice;
// - a fresh token goes over the open socket in an `auth` frame.

/** A frame from the server: a room's event or entry, or an answer. */
export interface Frame {
  Type: string;
  [field: string]: unknown;
}

export type SendState = "sending" | "retrying" | "sent" | "failed";

/** One of the person's messages, from the moment it is written. */
export interface PendingSend {
  key: string;
  roomId: number;
  text: string;
  replyTo: number;
  state: SendState;
  /** Set once `sent` came. */
  messageId?: number;
  /** The contract's error text, when refused. */
  error?: string;
  attempts: number;
}

export type Status = "connecting" | "online" | "offline";

export interface SocketEvents {
  /** A frame of the entered room: an entry or event, online, presence, typing, read. */
  frame(frame: Frame): void;
  /** The server confirmed the enter: replayed and live frames follow. */
  entered(roomId: number): void;
  /** The enter was refused (e.g. `not room member`), or the person was removed. */
  refused(roomId: number, error: string): void;
  send(send: PendingSend): void;
  status(status: Status): void;
  /** The answer to an `auth` frame: the socket's token now lasts until `expiresAt`. */
  renewed(expiresAt: string): void;
  /** The server refused a fresh token (`invalid token`). */
  authRefused(): void;
}

/** Automatic retries of a `temporarily unavailable` send, before asking the person. */
const MAX_RETRIES = 5;
const MAX_BACKOFF_MS = 10_000;

/** Up to `MAX_BACKOFF_MS`, doubling from 500 ms, with jitter so that
 * clients that lost the same gateway do not all come back at once. */
export function backoff(attempt: number): number {
  const ceiling = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class ChatSocket {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private reconnectTimer: number | undefined;
  private closedByUs = false;
  /** The room the person is looking at (0: none), and the one the server confirmed. */
  private room = 0;
  private entered = 0;
  private readonly pending = new Map<string, PendingSend>();
  private sends = 0;
  /** Makes keys unique across tabs and reloads of the same user. */
  private readonly tab = crypto.randomUUID().slice(0, 8);

  constructor(
    private readonly url: () => string,
    /** The id to resume a room after: the newest event applied, 0 for none. */
    private readonly resumeAfter: (roomId: number) => number,
    private readonly events: SocketEvents,
  ) {}

  connect(): void {
    this.closedByUs = false;
    this.events.status("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.events.status("online");
      if (this.room) this.sendEnter();
    };
    ws.onmessage = (message) => this.receive(JSON.parse(message.data as string) as Frame);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.entered = 0;
      if (this.closedByUs) return;
      this.events.status("offline");
      const delay = backoff(this.attempt++);
      this.reconnectTimer = window.setTimeout(() => this.connect(), delay);
    };
  }

  /** Ends the connection for good (logging out). */
  close(): void {
    this.closedByUs = true;
    window.clearTimeout(this.reconnectTimer);
    this.ws?.close(1000);
    this.ws = null;
  }

  /** Reconnects at once instead of waiting out the backoff (the network came back). */
  reconnectNow(): void {
    if (this.ws || this.closedByUs) return;
    window.clearTimeout(this.reconnectTimer);
    this.connect();
  }

  get isOpen(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** Enters `roomId` (0: leaves the current room), resuming after `resumeAfter(roomId)`. */
  enter(roomId: number): void {
    this.room = roomId;
    this.entered = 0;
    this.sendEnter();
  }

  send(text: string, replyTo = 0): PendingSend {
    const key = `${this.tab}-${++this.sends}`;
    const send: PendingSend = { key, roomId: this.room, text, replyTo, state: "sending", attempts: 0 };
    this.pending.set(key, send);
    this.events.send(send);
    this.transmit(send);
    return send;
  }

  /** Sends a refused message again, with the same `Key`. */
  retry(key: string): void {
    const send = this.pending.get(key);
    if (!send) return;
    send.state = "sending";
    send.error = undefined;
    send.attempts = 0;
    this.events.send(send);
    this.transmit(send);
  }

  /** Gives up on a refused message. */
  discard(key: string): void {
    this.pending.delete(key);
  }

  /** Tells the room the person is typing (the server relays at most one per 3 s). */
  typing(): void {
    if (this.entered) this.write({ Type: "typing" });
  }

  /** Marks the entered room read up to `messageId`; false when in no room yet. */
  read(messageId: number): boolean {
    if (!this.entered) return false;
    this.write({ Type: "read", MessageID: messageId });
    return true;
  }

  /** Gives the open socket a fresh token; a closed one takes it from `url()` when it reconnects. */
  auth(token: string): void {
    if (this.isOpen) this.write({ Type: "auth", Token: token, Ref: "auth" });
  }

  private sendEnter(): void {
    if (!this.isOpen) return;
    const frame: Frame = { Type: "enter", RoomID: this.room, Ref: `enter-${this.room}` };
    if (this.room) frame.LastID = this.resumeAfter(this.room);
    this.write(frame);
  }

  private transmit(send: PendingSend): void {
    if (this.entered !== send.roomId || send.state !== "sending") return;
    send.attempts++;
    const frame: Frame = { Type: "message", Text: send.text, Key: send.key, Ref: send.key };
    if (send.replyTo) frame.ReplyTo = send.replyTo;
    this.write(frame);
  }

  private write(frame: Frame): void {
    this.ws?.send(JSON.stringify(frame));
  }

  private receive(frame: Frame): void {
    const ref = typeof frame.Ref === "string" ? frame.Ref : "";
    switch (frame.Type) {
      case "enter":
        this.onEnter(frame.RoomID as number, ref);
        return;
      case "sent":
        this.onSent(ref, frame.MessageID as number);
        return;
      case "error":
        this.onError(frame.Error as string, ref);
        return;
      case "auth":
        this.events.renewed(frame.ExpiresAt as string);
        return;
      default:
        if (frame.RoomID === this.entered) this.events.frame(frame);
    }
  }

  private onEnter(roomId: number, ref: string): void {
    // Sent unasked on connecting (the lobby), or after a removal.
    if (!ref) {
      this.entered = 0;
      return;
    }
    if (roomId !== this.room) return;
    this.entered = roomId;
    if (!roomId) return;
    this.events.entered(roomId);
    // What was written meanwhile, and what was in flight when the socket
    // dropped: the server answers a repeated Key with the first `sent`.
    for (const send of this.pending.values()) if (send.roomId === roomId) this.transmit(send);
  }

  private onSent(key: string, messageId: number): void {
    const send = this.pending.get(key);
    if (!send) return;
    this.pending.delete(key);
    send.state = "sent";
    send.messageId = messageId;
    this.events.send(send);
  }

  private onError(error: string, ref: string): void {
    if (ref === "auth") {
      this.events.authRefused();
      return;
    }
    if (ref.startsWith("enter-") || error === "removed from room") {
      const roomId = ref.startsWith("enter-") ? Number(ref.slice("enter-".length)) : this.room;
      if (roomId === this.room) {
        this.room = 0;
        this.entered = 0;
        this.events.refused(roomId, error);
      }
      return;
    }
    const send = this.pending.get(ref);
    if (!send) return;
    if (error === "temporarily unavailable" && send.attempts <= MAX_RETRIES) {
      send.state = "retrying";
      this.events.send(send);
      window.setTimeout(() => {
        if (send.state !== "retrying") return;
        send.state = "sending";
        this.transmit(send);
      }, backoff(send.attempts));
      return;
    }
    send.state = "failed";
    send.error = error;
    this.events.send(send);
  }
}
