// What the page knows of one room: its entries in their latest state, by
// id, from history pages and live frames alike. Applying the same entry or
// event twice changes nothing, so a replay that overlaps what was already
// seen shows nothing twice.
import type { Entry } from "./api";
import type { Frame } from "./socket";

export class RoomLog {
  readonly entries = new Map<number, Entry>();
  /** The newest event applied: where a resume starts (`LastID`). */
  lastId = 0;
  /** The oldest entry loaded, for the next page up; Infinity before the first page. */
  oldestId = Number.POSITIVE_INFINITY;
  /** No older entries exist. */
  complete = false;
  /** Whether a history page has been read yet. */
  loaded = false;

  constructor(readonly roomId: number) {}

  /** A page of history (newest first); returns the entries new to the log. */
  addPage(page: Entry[], limit: number): Entry[] {
    this.loaded = true;
    if (page.length < limit) this.complete = true;
    const added: Entry[] = [];
    for (const entry of page) {
      this.oldestId = Math.min(this.oldestId, entry.ID);
      this.lastId = Math.max(this.lastId, entry.ID);
      if (!this.entries.has(entry.ID)) added.push(entry);
      // History shows the latest state, which may be newer than what we have.
      this.entries.set(entry.ID, entry);
    }
    return added;
  }

  /** A live or replayed frame; returns the entry it added or changed, if any. */
  apply(frame: Frame): Entry | null {
    const id = frame.ID as number;
    if (typeof id !== "number") return null;
    this.lastId = Math.max(this.lastId, id);
    switch (frame.Type) {
      case "message":
      case "join":
      case "leave": {
        if (this.entries.has(id)) return null;
        const entry = frame as unknown as Entry;
        this.entries.set(id, entry);
        return entry;
      }
      case "edit":
        return this.change(frame, (entry) => {
          entry.Text = frame.Text as string;
          entry.EditedAt = frame.EditedAt as string;
        });
      case "delete":
        return this.change(frame, (entry) => {
          entry.Deleted = true;
          entry.Text = "";
          entry.Reactions = undefined;
        });
      case "reaction":
        return this.change(frame, (entry) => react(entry, frame.Emoji as string, frame.UID as number, frame.Added === true));
      default:
        return null;
    }
  }

  /** Entries in id order, which is time order within a room. */
  sorted(): Entry[] {
    return [...this.entries.values()].sort((a, b) => a.ID - b.ID);
  }

  /** The newest entry that is a message. */
  newestMessageId(): number {
    let newest = 0;
    for (const entry of this.entries.values()) if (entry.Type === "message") newest = Math.max(newest, entry.ID);
    return newest;
  }

  private change(frame: Frame, update: (entry: Entry) => void): Entry | null {
    // An entry older than the pages loaded: its page, when loaded, shows
    // the change already.
    const entry = this.entries.get(frame.MessageID as number);
    if (!entry) return null;
    update(entry);
    return entry;
  }
}

function react(entry: Entry, emoji: string, uid: number, added: boolean): void {
  const reactions = { ...entry.Reactions };
  const uids = new Set(reactions[emoji] ?? []);
  if (added) uids.add(uid);
  else uids.delete(uid);
  if (uids.size) reactions[emoji] = [...uids].sort((a, b) => a - b);
  else delete reactions[emoji];
  entry.Reactions = Object.keys(reactions).length ? reactions : undefined;
}
