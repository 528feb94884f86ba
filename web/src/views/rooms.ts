// The room list, with each room's unread count, and the forms that add a
// room to it: create one, join one by its number, start a direct
// conversation.
import * as api from "../api";
import type { Room } from "../api";
import { field, h, numberInput } from "../dom";
import { restWords } from "../errors";
import { nameOf } from "../names";

export class RoomList {
  readonly element: HTMLElement;
  readonly rooms = new Map<number, Room>();
  private readonly unread = new Map<number, number>();
  /** The other person of each direct room, when known. */
  private readonly partners = new Map<number, number>();
  private readonly list = h("ul", { class: "room-list" });
  private readonly alert = h("p", { class: "form-error", role: "alert" });
  private current = 0;

  constructor(
    private readonly token: () => string,
    private readonly uid: number,
    private readonly open: (roomId: number) => void,
  ) {
    this.element = h(
      "nav",
      { class: "rooms", "aria-label": "Rooms" },
      h("h2", {}, "Rooms"),
      this.list,
      this.alert,
      this.createForm(),
      this.joinForm(),
      this.directForm(),
    );
  }

  async load(): Promise<void> {
    try {
      const { IDs } = await api.myRooms(this.token());
      await Promise.all(IDs.map((id) => this.fetchRoom(id)));
      this.render();
      await this.refreshUnread();
    } catch (error) {
      this.alert.textContent = restWords(error);
    }
  }

  /** Asks for the unread counts again; quiet on failure (the next try will tell). */
  async refreshUnread(): Promise<void> {
    let rooms: api.Unread[];
    try {
      rooms = (await api.unread(this.token())).Rooms;
    } catch {
      return;
    }
    for (const room of rooms) {
      if (!this.rooms.has(room.RoomID)) await this.fetchRoom(room.RoomID).catch(() => undefined);
      this.unread.set(room.RoomID, room.Unread);
    }
    this.render();
  }

  select(roomId: number): void {
    this.current = roomId;
    this.unread.set(roomId, 0);
    this.render();
  }

  /** A room the person just joined, created or was invited to. */
  async add(roomId: number): Promise<void> {
    await this.fetchRoom(roomId);
    this.render();
  }

  /** Names a direct room by its other member, once seen. */
  partner(roomId: number, uid: number): void {
    if (uid === this.uid || this.partners.has(roomId) || this.rooms.get(roomId)?.Kind !== "direct") return;
    this.partners.set(roomId, uid);
    this.render();
  }

  forget(roomId: number): void {
    this.rooms.delete(roomId);
    this.render();
  }

  /** The room's name for people: a direct room is named by the other person. */
  async title(roomId: number): Promise<string> {
    const room = this.rooms.get(roomId);
    if (!room) return `Room ${roomId}`;
    if (room.Kind !== "direct") return room.Name;
    const partner = this.partners.get(roomId);
    return partner ? `Direct: ${await nameOf(partner)}` : "Direct conversation";
  }

  private async fetchRoom(roomId: number): Promise<void> {
    this.rooms.set(roomId, await api.room(this.token(), roomId));
  }

  private render(): void {
    const rooms = [...this.rooms.values()].sort((a, b) => a.RoomID - b.RoomID);
    this.list.replaceChildren(
      ...rooms.map((room) => {
        const unread = room.RoomID === this.current ? 0 : (this.unread.get(room.RoomID) ?? 0);
        const label = h("span", { class: "room-name" }, room.Kind === "direct" ? "Direct conversation" : room.Name);
        void this.title(room.RoomID).then((title) => (label.textContent = title));
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "room",
              "data-room": room.RoomID,
              "aria-current": room.RoomID === this.current ? "page" : undefined,
              onclick: () => this.open(room.RoomID),
            },
            label,
            room.IsPrivate && room.Kind === "group" ? h("span", { class: "tag" }, "private") : null,
            unread
              ? h("span", { class: "badge", "aria-label": `${unread} unread` }, unread >= 1000 ? "999+" : String(unread))
              : null,
          ),
        );
      }),
    );
    if (!rooms.length) this.list.append(h("li", { class: "empty" }, "No rooms yet: create or join one below."));
  }

  private createForm(): HTMLElement {
    const name = h("input", { id: "new-room-name", required: true, maxlength: 100, autocomplete: "off" });
    const isPrivate = h("input", { id: "new-room-private", type: "checkbox" });
    const fields = [
      field("Name", name),
      h("p", { class: "check" }, isPrivate, h("label", { for: isPrivate.id }, "Private (members join by invitation)")),
    ];
    return this.form("Create a room", "Create", fields, async () => {
      const { RoomID } = await api.createRoom(this.token(), name.value.trim(), isPrivate.checked);
      return RoomID;
    });
  }

  private joinForm(): HTMLElement {
    const id = numberInput("join-room-id");
    return this.form("Join a room", "Join", [field("Room number", id)], async () => {
      const roomId = Number(id.value);
      try {
        await api.join(this.token(), roomId);
      } catch (error) {
        // Already a member: open it all the same.
        if (!(error instanceof api.ApiError && error.status === 409)) throw error;
      }
      return roomId;
    });
  }

  private directForm(): HTMLElement {
    const uid = numberInput("direct-uid");
    return this.form("Message someone directly", "Open", [field("Their user number", uid)], async () => {
      const other = Number(uid.value);
      const { RoomID } = await api.direct(this.token(), other);
      this.partners.set(RoomID, other);
      return RoomID;
    });
  }

  /** A form in a disclosure, whose action yields the room to open. */
  private form(title: string, action: string, fields: HTMLElement[], run: () => Promise<number>): HTMLElement {
    const button = h("button", { type: "submit" }, action);
    const form = h("form", {}, ...fields, button);
    const details = h("details", { class: "room-form" }, h("summary", {}, title), form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      this.alert.textContent = "";
      try {
        const roomId = await run();
        await this.add(roomId);
        form.reset();
        details.open = false;
        this.open(roomId);
      } catch (error) {
        this.alert.textContent = restWords(error);
      } finally {
        button.disabled = false;
      }
    });
    return details;
  }
}
