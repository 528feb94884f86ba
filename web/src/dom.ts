// A few lines instead of a framework: build elements with attributes and
// children. Text always goes in as text nodes, never as HTML, so nothing a
// person writes can become markup.

type Child = Node | string | null | undefined | false;
type Attributes = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  element.append(...children.filter((child): child is Node | string => Boolean(child)));
  return element;
}

/** A labelled field: the label above its input. */
export function field(label: string, input: HTMLInputElement): HTMLElement {
  return h("p", { class: "field" }, h("label", { for: input.id }, label), input);
}

/** An input for a room's or a user's number. */
export function numberInput(id: string): HTMLInputElement {
  return h("input", { id, type: "number", min: 1, required: true, inputmode: "numeric" });
}

/** A short local time, with the full date and time as a tooltip. */
export function time(timestamp: string | null | undefined): HTMLTimeElement | null {
  if (!timestamp) return null;
  const at = new Date(timestamp);
  return h(
    "time",
    { datetime: timestamp, title: at.toLocaleString() },
    at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  );
}
