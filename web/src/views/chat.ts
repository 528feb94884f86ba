// One room: its entries (older ones loaded as the person scrolls up), the
// person's own messages pending until acknowledged, who is online and who
// is typing, and the composer. Edits, deletions and reactions go over REST;
// everyone (the author included) sees them when their live event arrives.
import * as api from "../api";
import type { Entry, Room } from "../api";
import { h, numberInput, time } from "../dom";
import { restWords, socketWords } from "../errors";
import { nameOf, nameSpan } from "../names";
import type { RoomLog } from "../room-log";
import type { ChatSocket, Frame, PendingSend } from "../socket";

const PAGE = 50;
const MAX_TEXT = 2000;
const REACTIONS: [string, string][] = [
  ["👍", "thumbs up"],
  ["❤️", "heart"],
  ["😂", "laughing"],
  ["🎉", "party"],
];
/** How long "is typing" shows after the last typing frame. */
const TYPING_MS = 5_000;
/** How often the person's own typing is told (the server relays one per 3 s). */
const TYPING_EVERY_MS = 2_500;

export interface ChatContext {
  token(): string;
  uid: number;
  socket: ChatSocket;
  /** Back to the room list (narrow screens). */
  back(): void;
  /** Another member of a direct room was seen. */
  partner(uid: number): void;
}

export class ChatView {
  readonly element: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly pendingList = h("ol", { class: "pending", "aria-label": "Your messages being sent" });
  private readonly scroller: HTMLElement;
  private readonly older: HTMLButtonElement;
  private readonly alert = h("p", { class: "form-error", role: "alert" });
  private readonly onlineLine = h("p", { class: "online", "data-testid": "online" });
  private readonly typingLine = h("p", { class: "typing", "data-testid": "typing" });
  private readonly composer: HTMLTextAreaElement;
  private readonly replyLine = h("div", { class: "reply-line" });
  private readonly elements = new Map<number, HTMLElement>();
  private readonly pendingElements = new Map<string, HTMLElement>();
  private readonly sent = new Map<number, string>(); // message id → pending key, until its entry shows
  private readonly online = new Set<number>();
  private readonly typing = new Map<number, number>();
  private replyTo = 0;
  private lastTyping = 0;
  private loadingOlder = false;
  private readSent = 0;
  private seen = 0;
  private readTimer: number | undefined;
  private readonly visible: IntersectionObserver;

  constructor(
    readonly room: Room,
    title: string,
    private readonly log: RoomLog,
    private readonly context: ChatContext,
  ) {
    this.list = h("ol", {
      class: "entries",
      role: "log",
      "aria-live": "polite",
      "aria-relevant": "additions",
      "aria-label": `Messages in ${title}`,
    });
    this.older = h("button", { type: "button", class: "older", onclick: () => void this.loadOlder() }, "Load older messages");
    this.scroller = h("div", { class: "scroller", tabindex: 0, "aria-label": "Conversation" }, this.older, this.list, this.pendingList);
    this.scroller.addEventListener("scroll", () => {
      if (this.scroller.scrollTop < 80) void this.loadOlder();
    });
    this.visible = new IntersectionObserver((seen) => this.onSeen(seen), { root: this.scroller });
    this.composer = h("textarea", {
      id: "composer",
      rows: 2,
      maxlength: MAX_TEXT,
      "aria-describedby": "composer-hint",
    });
    this.composer.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      } else if (event.key === "Escape" && this.replyTo) {
        this.setReply(0);
      }
    });
    this.composer.addEventListener("input", () => this.onInput());
    const form = h(
      "form",
      { class: "composer" },
      this.replyLine,
      h("label", { for: "composer" }, "Message"),
      h("div", { class: "composer-row" }, this.composer, h("button", { type: "submit" }, "Send")),
      h("p", { class: "hint", id: "composer-hint" }, "Enter sends, Shift+Enter starts a new line"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    const kind = room.Kind === "direct" ? "direct" : room.IsPrivate ? "private room" : "public room";
    this.element = h(
      "section",
      { class: "chat", "aria-labelledby": "chat-title" },
      h(
        "header",
        { class: "chat-header" },
        h("button", { type: "button", class: "back", onclick: () => context.back() }, "← Rooms"),
        h(
          "div",
          { class: "chat-title" },
          h("h2", { id: "chat-title" }, title),
          h("p", { class: "room-info" }, `${kind} · room number ${room.RoomID}`),
          this.onlineLine,
        ),
        room.CreatorUID === context.uid && room.Kind === "group" ? this.inviteForm() : null,
      ),
      this.alert,
      this.scroller,
      this.typingLine,
      form,
    );
    for (const entry of log.sorted()) this.place(entry);
    this.older.hidden = log.complete;
    this.renderOnline();
  }

  /** Reads the first page if the room has none yet; then the socket may enter. */
  async load(): Promise<boolean> {
    if (this.log.loaded) return true;
    this.list.setAttribute("aria-busy", "true");
    try {
      const page = await api.history(this.context.token(), this.room.RoomID, 0, PAGE);
      for (const entry of this.log.addPage(page, PAGE)) this.place(entry);
      this.older.hidden = this.log.complete;
      this.scrollToEnd();
      return true;
    } catch (error) {
      this.alert.textContent = restWords(error);
      return false;
    } finally {
      this.list.removeAttribute("aria-busy");
    }
  }

  focus(): void {
    this.composer.focus();
  }

  /** A frame of this room from the socket. */
  frame(frame: Frame): void {
    switch (frame.Type) {
      case "online":
        this.online.clear();
        for (const uid of frame.Online as number[]) this.online.add(uid);
        this.renderOnline();
        return;
      case "presence":
        if (frame.Online) this.online.add(frame.UID as number);
        else this.online.delete(frame.UID as number);
        this.renderOnline();
        return;
      case "typing":
        this.showTyping(frame.UID as number);
        return;
      case "read":
        return;
    }
    const atEnd = this.nearEnd();
    const entry = this.log.apply(frame);
    if (!entry) return;
    this.place(entry);
    if (entry.Type === "message" && frame.Type === "message") this.stopTyping(entry.UID);
    const key = this.sent.get(entry.ID);
    if (key) this.dropPending(key, entry.ID);
    if (atEnd) this.scrollToEnd();
  }

  /** A send of the person's changed state. */
  send(send: PendingSend): void {
    if (send.roomId !== this.room.RoomID) return;
    if (send.state === "sent" && send.messageId) {
      if (this.log.entries.has(send.messageId)) this.dropPending(send.key, send.messageId);
      else this.sent.set(send.messageId, send.key);
      return;
    }
    const element = this.pendingElement(send);
    const old = this.pendingElements.get(send.key);
    if (old) old.replaceWith(element);
    else this.pendingList.append(element);
    this.pendingElements.set(send.key, element);
    this.scrollToEnd();
  }

  /** The socket entered the room (again, after a reconnect): frames follow. */
  entered(): void {
    this.alert.textContent = "";
    // What was seen before the socket was in the room.
    this.scheduleRead();
  }

  refused(error: string): void {
    this.alert.textContent = socketWords(error);
  }

  dispose(): void {
    this.visible.disconnect();
    window.clearTimeout(this.readTimer);
    // Seen just before leaving: the socket is on its way to another room,
    // so the mark goes over REST, which names the room.
    if (this.seen > this.readSent) {
      void api.markRead(this.context.token(), this.room.RoomID, this.seen).catch(() => undefined);
    }
    for (const timer of this.typing.values()) window.clearTimeout(timer);
  }

  private submit(): void {
    const text = this.composer.value;
    if (!text.trim()) {
      this.alert.textContent = socketWords("empty message");
      return;
    }
    if ([...text].length > MAX_TEXT) {
      this.alert.textContent = socketWords("message too long");
      return;
    }
    this.alert.textContent = "";
    this.context.socket.send(text, this.replyTo);
    this.composer.value = "";
    this.setReply(0);
  }

  private onInput(): void {
    const now = Date.now();
    if (this.composer.value && now - this.lastTyping > TYPING_EVERY_MS) {
      this.lastTyping = now;
      this.context.socket.typing();
    }
  }

  private async loadOlder(): Promise<void> {
    if (this.loadingOlder || this.log.complete || !this.log.loaded) return;
    this.loadingOlder = true;
    const before = this.scroller.scrollHeight;
    try {
      const page = await api.history(this.context.token(), this.room.RoomID, this.log.oldestId - 1, PAGE);
      for (const entry of this.log.addPage(page, PAGE)) this.place(entry);
      this.older.hidden = this.log.complete;
      // Keep the entries that were in view where they were.
      this.scroller.scrollTop += this.scroller.scrollHeight - before;
    } catch (error) {
      this.alert.textContent = restWords(error);
    } finally {
      this.loadingOlder = false;
    }
  }

  /** Shows an entry where its id puts it, replacing its old look. */
  private place(entry: Entry): void {
    if (entry.UID !== this.context.uid) this.context.partner(entry.UID);
    const element = this.entryElement(entry);
    const old = this.elements.get(entry.ID);
    this.elements.set(entry.ID, element);
    if (old) {
      this.visible.unobserve(old);
      old.replaceWith(element);
    } else {
      const next = [...this.elements.keys()].filter((id) => id > entry.ID).sort((a, b) => a - b)[0];
      this.list.insertBefore(element, next === undefined ? null : (this.elements.get(next) ?? null));
    }
    if (entry.Type === "message") this.visible.observe(element);
  }

  private entryElement(entry: Entry): HTMLElement {
    if (entry.Type !== "message") {
      const what = entry.Type === "join" ? "joined the room" : "left the room";
      return h("li", { class: "entry event", "data-id": entry.ID }, nameSpan(entry.UID), ` ${what} `, time(entry.Timestamp));
    }
    const mine = entry.UID === this.context.uid;
    const article = h(
      "article",
      { "aria-label": `message ${entry.ID}` },
      h("header", {}, nameSpan(entry.UID), " ", time(entry.Timestamp), entry.EditedAt && !entry.Deleted ? h("span", { class: "edited" }, " (edited)") : null),
      entry.ReplyTo ? this.quote(entry.ReplyTo) : null,
      entry.Deleted
        ? h("p", { class: "text deleted" }, "This message was deleted.")
        : h("p", { class: "text" }, entry.Text),
      entry.Deleted ? null : this.reactions(entry),
      entry.Deleted ? null : this.actions(entry, mine),
    );
    void nameOf(entry.UID).then((name) => article.setAttribute("aria-label", `${name} wrote`));
    return h("li", { class: `entry message${mine ? " mine" : ""}`, "data-id": entry.ID }, article);
  }

  private quote(replyTo: number): HTMLElement {
    const target = this.log.entries.get(replyTo);
    const quote = h("blockquote", { class: "quote" }, "↪ ");
    if (target) quote.append(nameSpan(target.UID), ": ", target.Deleted ? "a deleted message" : snippet(target.Text));
    else quote.append("an earlier message");
    return quote;
  }

  private reactions(entry: Entry): HTMLElement | null {
    const all = Object.entries(entry.Reactions ?? {});
    if (!all.length) return null;
    return h(
      "ul",
      { class: "reactions", "aria-label": "Reactions" },
      ...all.map(([emoji, uids]) => {
        const mine = uids.includes(this.context.uid);
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "reaction",
              "aria-pressed": String(mine),
              "aria-label": `${emoji} ${uids.length}${mine ? ", yours: remove it" : ": add yours"}`,
              onclick: () => void this.react(entry, emoji, !mine),
            },
            `${emoji} ${uids.length}`,
          ),
        );
      }),
    );
  }

  private actions(entry: Entry, mine: boolean): HTMLElement {
    const mayDelete = mine || this.room.CreatorUID === this.context.uid;
    const reacted = (emoji: string) => entry.Reactions?.[emoji]?.includes(this.context.uid) ?? false;
    return h(
      "div",
      { class: "actions", role: "group", "aria-label": "Message actions" },
      h("button", { type: "button", onclick: () => this.setReply(entry.ID) }, "Reply"),
      ...REACTIONS.map(([emoji, name]) =>
        h(
          "button",
          {
            type: "button",
            class: "react",
            "aria-label": `React with ${name}`,
            onclick: () => void this.react(entry, emoji, !reacted(emoji)),
          },
          emoji,
        ),
      ),
      mine ? h("button", { type: "button", onclick: () => this.startEdit(entry) }, "Edit") : null,
      mayDelete ? h("button", { type: "button", onclick: () => void this.remove(entry) }, "Delete") : null,
    );
  }

  private async react(entry: Entry, emoji: string, added: boolean): Promise<void> {
    await this.rest(() => api.react(this.context.token(), this.room.RoomID, entry.ID, emoji, added));
  }

  private async remove(entry: Entry): Promise<void> {
    await this.rest(() => api.remove(this.context.token(), this.room.RoomID, entry.ID));
  }

  private startEdit(entry: Entry): void {
    const element = this.elements.get(entry.ID);
    const text = element?.querySelector(".text");
    if (!element || !text) return;
    const field = h("textarea", { id: `edit-${entry.ID}`, rows: 2, maxlength: MAX_TEXT });
    field.value = entry.Text;
    const cancel = () => this.place(entry);
    const save = async () => {
      if (!field.value.trim()) {
        this.alert.textContent = socketWords("empty message");
        return;
      }
      // The live edit event redraws the entry with the new text.
      if (await this.rest(() => api.edit(this.context.token(), this.room.RoomID, entry.ID, field.value))) cancel();
    };
    const form = h(
      "form",
      { class: "edit" },
      h("label", { for: field.id }, "Edit your message"),
      field,
      h("button", { type: "submit" }, "Save"),
      h("button", { type: "button", onclick: cancel }, "Cancel"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void save();
    });
    field.addEventListener("keydown", (event) => {
      if (event.key === "Escape") cancel();
    });
    text.replaceWith(form);
    field.focus();
  }

  /** Runs a REST change, telling the person in plain words if it failed. */
  private async rest(call: () => Promise<unknown>): Promise<boolean> {
    try {
      await call();
      this.alert.textContent = "";
      return true;
    } catch (error) {
      this.alert.textContent = restWords(error);
      return false;
    }
  }

  private setReply(messageId: number): void {
    this.replyTo = messageId;
    const target = this.log.entries.get(messageId);
    if (!messageId || !target) {
      this.replyLine.replaceChildren();
      return;
    }
    this.replyLine.replaceChildren(
      h("span", {}, "Replying to ", nameSpan(target.UID), `: ${snippet(target.Text)}`),
      h("button", { type: "button", onclick: () => this.setReply(0), "aria-label": "Cancel the reply" }, "✕"),
    );
    this.composer.focus();
  }

  private pendingElement(send: PendingSend): HTMLElement {
    const state =
      send.state === "failed"
        ? h(
            "span",
            { class: "send-state failed" },
            `Not sent: ${socketWords(send.error ?? "")} `,
            h("button", { type: "button", onclick: () => this.context.socket.retry(send.key) }, "Retry"),
            h("button", { type: "button", onclick: () => this.discard(send.key) }, "Discard"),
          )
        : h("span", { class: "send-state" }, send.state === "retrying" ? "Server busy, retrying…" : "Sending…");
    return h(
      "li",
      { class: "entry message mine pending", "data-key": send.key },
      h("article", { "aria-label": "your message, not yet sent" }, h("p", { class: "text" }, send.text), state),
    );
  }

  private discard(key: string): void {
    this.context.socket.discard(key);
    this.pendingElements.get(key)?.remove();
    this.pendingElements.delete(key);
  }

  private dropPending(key: string, messageId: number): void {
    this.sent.delete(messageId);
    this.pendingElements.get(key)?.remove();
    this.pendingElements.delete(key);
  }

  private renderOnline(): void {
    const others = [...this.online].filter((uid) => uid !== this.context.uid).sort((a, b) => a - b);
    if (!others.length) {
      this.onlineLine.textContent = "Nobody else online";
      return;
    }
    this.onlineLine.replaceChildren("Online: ", ...others.flatMap((uid, i) => [i ? ", " : "", nameSpan(uid)]));
  }

  private showTyping(uid: number): void {
    window.clearTimeout(this.typing.get(uid));
    this.typing.set(uid, window.setTimeout(() => this.stopTyping(uid), TYPING_MS));
    this.renderTyping();
  }

  private stopTyping(uid: number): void {
    window.clearTimeout(this.typing.get(uid));
    if (this.typing.delete(uid)) this.renderTyping();
  }

  private renderTyping(): void {
    const uids = [...this.typing.keys()];
    if (!uids.length) {
      this.typingLine.replaceChildren();
      return;
    }
    this.typingLine.replaceChildren(
      ...uids.flatMap((uid, i) => [i ? ", " : "", nameSpan(uid)]),
      uids.length === 1 ? " is typing…" : " are typing…",
    );
  }

  /** Marks read what the person saw, once the page is in view. */
  private onSeen(changes: IntersectionObserverEntry[]): void {
    for (const change of changes) {
      const id = Number((change.target as HTMLElement).dataset.id);
      if (change.isIntersecting) this.seen = Math.max(this.seen, id);
    }
    this.scheduleRead();
  }

  private scheduleRead(): void {
    window.clearTimeout(this.readTimer);
    this.readTimer = window.setTimeout(() => {
      if (document.visibilityState === "visible" && this.seen > this.readSent && this.context.socket.read(this.seen)) {
        this.readSent = this.seen;
      }
    }, 500);
  }

  private nearEnd(): boolean {
    const { scrollTop, scrollHeight, clientHeight } = this.scroller;
    return scrollHeight - scrollTop - clientHeight < 120;
  }

  private scrollToEnd(): void {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  private inviteForm(): HTMLElement {
    const uid = numberInput("invite-uid");
    const form = h(
      "form",
      { class: "invite" },
      h("label", { for: "invite-uid" }, "Invite user number"),
      uid,
      h("button", { type: "submit" }, "Invite"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (await this.rest(() => api.invite(this.context.token(), this.room.RoomID, Number(uid.value)))) uid.value = "";
    });
    return h("details", { class: "invite-box" }, h("summary", {}, "Invite"), form);
  }
}

function snippet(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}
