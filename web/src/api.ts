// The gateway's REST API (API.md), on the page's own origin. Every call
// either returns the parsed answer or throws an ApiError with the status
// and the server's `Error` text.

/** A room's entry as history and the socket show it (its latest state). */
export interface Entry {
  Type: "message" | "join" | "leave";
  ID: number;
  RoomID: number;
  UID: number;
  Text: string;
  Timestamp: string | null;
  ReplyTo?: number;
  EditedAt?: string;
  Deleted?: boolean;
  Reactions?: Record<string, number[]>;
}

export interface Room {
  RoomID: number;
  Name: string;
  CreatorUID: number;
  IsPrivate: boolean;
  Kind: "group" | "direct";
}

export interface Unread {
  RoomID: number;
  Unread: number;
  LastReadID: number;
  LastMessageID: number;
}

export interface Login {
  token: string;
  UID: number;
  ExpiresAt: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly text: string,
    readonly retryAfter: number | null,
  ) {
    super(text);
  }
}

async function call<T>(method: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    // No answer at all: the gateway is down or the network is.
    throw new ApiError(0, "network", null);
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError(response.status, typeof answer.Error === "string" ? answer.Error : "", retryAfter);
  }
  return answer as T;
}

export const register = (username: string, email: string, password: string) =>
  call<{ UID: number }>("POST", "/register", null, { Username: username, Email: email, Password: password });

export const login = (email: string, password: string) =>
  call<Login>("PUT", "/login", null, { Email: email, Password: password });

export const profile = (uid: number) => call<{ UID: number; Username: string }>("GET", `/profile/${uid}`, null);

export const myRooms = (token: string) => call<{ IDs: number[] }>("GET", "/rooms", token);

export const room = (token: string, roomId: number) => call<Room>("GET", `/room/${roomId}`, token);

export const createRoom = (token: string, name: string, isPrivate: boolean) =>
  call<{ RoomID: number }>("POST", "/create-room", token, { Name: name, IsPrivate: isPrivate });

export const join = (token: string, roomId: number) => call("PUT", "/join", token, { RoomID: roomId });

export const invite = (token: string, roomId: number, uid: number) =>
  call("PUT", "/invite", token, { RoomID: roomId, UID: uid });

export const direct = (token: string, uid: number) => call<{ RoomID: number }>("POST", "/direct", token, { UID: uid });

/** A page of history, newest first: entries with `ID <= lastId` (0: the newest). */
export const history = (token: string, roomId: number, lastId: number, limit: number) =>
  call<Entry[]>("GET", `/messages/${roomId}?LastID=${lastId}&Limit=${limit}`, token);

export const edit = (token: string, roomId: number, messageId: number, text: string) =>
  call("PATCH", `/messages/${roomId}/${messageId}`, token, { Text: text });

export const remove = (token: string, roomId: number, messageId: number) =>
  call("DELETE", `/messages/${roomId}/${messageId}`, token);

export const react = (token: string, roomId: number, messageId: number, emoji: string, added: boolean) =>
  call("PUT", `/messages/${roomId}/${messageId}/reactions`, token, { Emoji: emoji, Added: added });

export const markRead = (token: string, roomId: number, messageId: number) =>
  call("PUT", "/read", token, { RoomID: roomId, MessageID: messageId });

export const unread = (token: string) => call<{ Rooms: Unread[] }>("GET", "/unread", token);
