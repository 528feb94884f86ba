// Who is logged in: the token and when it expires. The token is kept in
// sessionStorage, so a reload of the tab stays logged in. To renew it
// before it expires, the client logs in again with the credentials typed
// at login, which it holds in memory only (never stored); after a reload
// it has none, and asks the person to log in again when the token ends.
import { login } from "./api";

export interface Credentials {
  email: string;
  password: string;
}

interface Stored {
  token: string;
  uid: number;
  expiresAt: string;
}

const KEY = "chat.session";

export class Session {
  private timer: number | undefined;
  /** Called with each fresh token; `null` when the session ended. */
  onToken: (token: string | null) => void = () => {};

  private constructor(
    private stored: Stored,
    private readonly credentials: Credentials | null,
  ) {}

  static async logIn(credentials: Credentials): Promise<Session> {
    const answer = await login(credentials.email, credentials.password);
    const session = new Session({ token: answer.token, uid: answer.UID, expiresAt: answer.ExpiresAt }, credentials);
    session.save();
    return session;
  }

  /** The session of this tab before a reload, if its token is still good. */
  static restore(): Session | null {
    try {
      const stored = JSON.parse(sessionStorage.getItem(KEY) ?? "null") as Stored | null;
      if (stored && Date.parse(stored.expiresAt) > Date.now() + 5_000) return new Session(stored, null);
    } catch {
      // A damaged entry: log in again.
    }
    sessionStorage.removeItem(KEY);
    return null;
  }

  get token(): string {
    return this.stored.token;
  }

  get uid(): number {
    return this.stored.uid;
  }

  /** Keeps the token fresh from now on. */
  start(): void {
    this.schedule();
  }

  /** The socket accepted the fresh token until `expiresAt`. */
  confirmed(expiresAt: string): void {
    this.stored.expiresAt = expiresAt;
    this.save();
  }

  end(): void {
    window.clearTimeout(this.timer);
    sessionStorage.removeItem(KEY);
  }

  /** Renews at half the remaining lifetime (at the latest 10 s before the end). */
  private schedule(): void {
    const left = Date.parse(this.stored.expiresAt) - Date.now();
    const wait = this.credentials ? Math.max(0, Math.min(left / 2, left - 10_000)) : left;
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.renew(), wait);
  }

  private async renew(): Promise<void> {
    if (!this.credentials) {
      this.end();
      this.onToken(null);
      return;
    }
    try {
      const answer = await login(this.credentials.email, this.credentials.password);
      this.stored = { token: answer.token, uid: answer.UID, expiresAt: answer.ExpiresAt };
      this.save();
      this.onToken(answer.token);
    } catch {
      // The gateway may be restarting: try again soon, while the token lasts.
      if (Date.parse(this.stored.expiresAt) <= Date.now()) {
        this.end();
        this.onToken(null);
        return;
      }
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => void this.renew(), 5_000);
      return;
    }
    this.schedule();
  }

  private save(): void {
    sessionStorage.setItem(KEY, JSON.stringify(this.stored));
  }
}
