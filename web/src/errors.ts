// The contract's error texts (API.md), in plain words for the person
// using the client.
import { ApiError } from "./api";

const WORDS: Record<string, string> = {
  "not in room": "Open a room first.",
  "already in room": "You are already in this room.",
  "invalid room id": "That is not a valid room number.",
  "not room member": "You are not a member of this room.",
  "invalid operation": "The server did not understand the app's request.",
  "invalid json": "The server did not understand the app's request.",
  "empty message": "Write something before sending.",
  "message too long": "That message is too long: 2000 characters at most.",
  "invalid characters": "The message contains control characters that cannot be sent.",
  "too many messages": "You are sending too fast. Wait a moment, then retry.",
  "temporarily unavailable": "The server could not store the message just now.",
  "internal error": "Something went wrong on the server.",
  "invalid reply": "The message you answer is not in this room.",
  "invalid token": "Your session could not be renewed. Please log in again.",
  "removed from room": "You were removed from this room.",
  "not author": "Only the author can do that.",
  "no such message": "That message no longer exists.",
};

/** A WebSocket `error` frame's text, in plain words. */
export function socketWords(text: string): string {
  return WORDS[text] ?? `The server refused that: ${text}.`;
}

/** Why a REST call failed, in plain words. */
export function restWords(error: unknown): string {
  if (!(error instanceof ApiError)) return "Something went wrong in the app.";
  if (WORDS[error.text]) return WORDS[error.text];
  switch (error.status) {
    case 0:
      return "The server cannot be reached. Check the connection and try again.";
    case 401:
      return error.text === "wrong email or password"
        ? "Wrong e-mail or password."
        : "Your session has ended. Please log in again.";
    case 403:
      return `Not allowed: ${error.text}.`;
    case 404:
      return `Not found: ${error.text}.`;
    case 413:
      return "That is too large to send.";
    case 429:
      return `Too many attempts. Try again${error.retryAfter ? ` in ${error.retryAfter} s` : " later"}.`;
    case 500:
      return "Something went wrong on the server.";
    case 502:
    case 503:
    case 504:
      return "The service is briefly unavailable. Try again in a moment.";
    default:
      // 400 and 409 carry the validation problems, written for people.
      return error.text ? capitalise(error.text) + "." : `The request failed (${error.status}).`;
  }
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
