// Usernames by uid, asked once each (GET /profile/{UID} is public).
import { profile } from "./api";

const names = new Map<number, Promise<string>>();

export function nameOf(uid: number): Promise<string> {
  let name = names.get(uid);
  if (!name) {
    name = profile(uid).then(
      (answer) => answer.Username,
      () => `user ${uid}`,
    );
    names.set(uid, name);
  }
  return name;
}

/** A span that shows the uid's name once known. */
export function nameSpan(uid: number, className = "name"): HTMLSpanElement {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = `user ${uid}`;
  void nameOf(uid).then((name) => (span.textContent = name));
  return span;
}
