// The first screen: log in, or register and then log in.
import { register } from "../api";
import { field, h } from "../dom";
import { restWords } from "../errors";
import { Session } from "../session";

export function loginView(done: (session: Session) => void, notice = ""): HTMLElement {
  const status = h("p", { class: "form-error", role: "alert" }, notice);
  const busy = (form: HTMLFormElement, on: boolean) =>
    form.querySelectorAll("button").forEach((button) => (button.disabled = on));

  const logInForm = h(
    "form",
    { "aria-labelledby": "login-title" },
    h("h2", { id: "login-title" }, "Log in"),
    input("login-email", "E-mail", { type: "email", autocomplete: "username", required: true }),
    input("login-password", "Password", { type: "password", autocomplete: "current-password", required: true }),
    h("button", { type: "submit" }, "Log in"),
  );
  logInForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(logInForm, true);
    status.textContent = "";
    try {
      done(await Session.logIn({ email: value("login-email"), password: value("login-password") }));
    } catch (error) {
      status.textContent = restWords(error);
      busy(logInForm, false);
    }
  });

  const registerForm = h(
    "form",
    { "aria-labelledby": "register-title" },
    h("h2", { id: "register-title" }, "New here? Register"),
    input("register-name", "Username", { autocomplete: "username", required: true, minlength: 3, maxlength: 20 }),
    h("p", { class: "hint", id: "register-name-hint" }, "3 to 20 letters, digits or _"),
    input("register-email", "E-mail", { type: "email", autocomplete: "email", required: true }),
    input("register-password", "Password", {
      type: "password",
      autocomplete: "new-password",
      required: true,
      minlength: 8,
      maxlength: 128,
    }),
    h("p", { class: "hint" }, "8 to 128 characters"),
    h("button", { type: "submit" }, "Register and log in"),
  );
  registerForm.querySelector("#register-name")?.setAttribute("aria-describedby", "register-name-hint");
  registerForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(registerForm, true);
    status.textContent = "";
    const email = value("register-email");
    const password = value("register-password");
    try {
      await register(value("register-name"), email, password);
      done(await Session.logIn({ email, password }));
    } catch (error) {
      status.textContent = restWords(error);
      busy(registerForm, false);
    }
  });

  return h(
    "main",
    { class: "login", id: "main" },
    h("h1", {}, "Chat"),
    status,
    h("div", { class: "login-forms" }, logInForm, registerForm),
  );
}

function input(id: string, label: string, attributes: Record<string, string | number | boolean>): HTMLElement {
  return field(label, h("input", { id, name: id, ...attributes }));
}

function value(id: string): string {
  return (document.getElementById(id) as HTMLInputElement).value;
}
