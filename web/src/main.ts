// The entry point: the chat for a logged-in tab, the login screen otherwise.
import "./style.css";
import { startApp } from "./app";
import { Session } from "./session";
import { loginView } from "./views/login";

const root = document.getElementById("app") as HTMLElement;

function showLogin(notice = ""): void {
  document.body.classList.remove("in-room");
  root.replaceChildren(loginView(showApp, notice));
  document.getElementById("login-email")?.focus();
}

function showApp(session: Session): void {
  startApp(root, session, showLogin);
}

const session = Session.restore();
if (session) showApp(session);
else showLogin();
