// The web client (web/, served by the gateway at /) in headless Chromium,
// as people use it: e2e/test_web_client.py runs one scenario per call and
// reads the JSON result on the last line of stdout.
//
//   node web-client.mjs chat <gateway URL> <screenshot folder>
//     Two people, one on a laptop and one on a phone: register, log in,
//     create and join rooms, chat both ways, typing and online, edit,
//     delete, react, reply, the unread count of another room, the token
//     renewed over the socket; screenshots of both screens; every console
//     error and failed request of both pages.
//   node web-client.mjs restart <gateway URL>
//     Two people in one room. Prints {"need":"stop","room":N} and waits
//     for a line on stdin ({"sent":[texts]}): the test stops the gateway
//     and sends those into the room over gRPC. One of them writes a message
//     while offline; then {"need":"start"}: the gateway starts again, and
//     both pages must show every message once, in order, by themselves.
//
// Exits 1 with {"error": ...} when an expectation fails.
import { createInterface } from "node:readline";
import { launch, watch } from "./chromium.mjs";

const [scenario, base, shots] = process.argv.slice(2);
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const WAIT = { timeout: 15_000 };
const suffix = Math.random().toString(36).slice(2, 8);
// For the report of a failure: every person's page, and what they saw go wrong.
const people = [];
const problems = [];

/** A person with a browser context of their own (its own storage). */
async function person(browser, name, viewport) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(WAIT.timeout);
  const page = await context.newPage();
  watch(page, (problem) => problems.push(`${name}: ${problem}`));
  // Frames the page's socket sent and received, for the checks that only
  // the wire shows (the token's renewal).
  const frames = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (frame) => frames.push({ sent: true, payload: String(frame.payload) }));
    ws.on("framereceived", (frame) => frames.push({ sent: false, payload: String(frame.payload) }));
  });
  const username = `${name}_${suffix}`;
  people.push({ name, page });
  await page.goto(base);
  await page.getByLabel("Username").fill(username);
  await page.locator("#register-email").fill(`${username}@example.com`);
  await page.locator("#register-password").fill("password123");
  await page.getByRole("button", { name: "Register and log in" }).click();
  await page.getByRole("status").filter({ hasText: "Connected" }).waitFor(WAIT);
  const uid = Number((await page.locator(".me").textContent()).match(/user number (\d+)/)[1]);
  return { name: username, uid, page, frames };
}

/** Opens one of the room list's disclosures (a second click would close it). */
async function disclose(page, title) {
  const details = page.locator("details", { has: page.locator("summary", { hasText: title }) });
  if ((await details.getAttribute("open")) === null) await details.locator("summary").click();
}

async function createRoom(who, name) {
  const { page } = who;
  await disclose(page, "Create a room");
  await page.locator("#new-room-name").fill(name);
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.locator("#chat-title").filter({ hasText: name }).waitFor(WAIT);
  await page.getByRole("status").filter({ hasText: "Connected" }).waitFor(WAIT);
  const info = await page.locator(".room-info").textContent();
  return Number(info.match(/room number (\d+)/)[1]);
}

async function joinRoom(who, roomId, name) {
  const { page } = who;
  await backToRooms(who);
  await disclose(page, "Join a room");
  await page.locator("#join-room-id").fill(String(roomId));
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.locator("#chat-title").filter({ hasText: name }).waitFor(WAIT);
}

/** On a phone, from the open room back to the room list. */
async function backToRooms(who) {
  const back = who.page.getByRole("button", { name: "← Rooms" });
  if (await back.isVisible()) await back.click();
}

/** Opens a room from the list. */
async function openRoom(who, name) {
  await backToRooms(who);
  await who.page.locator(".room", { hasText: name }).click();
  await who.page.locator("#chat-title").filter({ hasText: name }).waitFor(WAIT);
}

async function send(who, text) {
  await who.page.locator("#composer").fill(text);
  await who.page.locator("#composer").press("Enter");
}

/** The message (not pending) whose text is `text`, on `who`'s page. */
function message(who, text) {
  return who.page.locator(".entries .entry.message", { has: who.page.locator(".text", { hasText: text }) });
}

/** The texts of the room's messages, in the order shown. */
async function texts(who) {
  return who.page.locator(".entries .entry.message .text").allTextContents();
}

async function chat(browser) {
  const alice = await person(browser, "alice", LAPTOP);
  const bob = await person(browser, "bob", PHONE);
  const lobby = `Lobby ${suffix}`;
  const side = `Side ${suffix}`;
  const sideId = await createRoom(alice, side);
  const lobbyId = await createRoom(alice, lobby);
  await joinRoom(bob, sideId, side);
  await openRoom(bob, side);
  await joinRoom(bob, lobbyId, lobby);

  // Each sees the other online, and typing.
  await alice.page.getByTestId("online").filter({ hasText: bob.name }).waitFor(WAIT);
  await bob.page.getByTestId("online").filter({ hasText: alice.name }).waitFor(WAIT);
  await alice.page.locator("#composer").pressSequentially("hel");
  await bob.page.getByTestId("typing").filter({ hasText: `${alice.name} is typing` }).waitFor(WAIT);

  // Both ways; one's own message is pending until `sent`, then shown once.
  await send(alice, "hello from alice");
  await message(bob, "hello from alice").waitFor(WAIT);
  await message(alice, "hello from alice").waitFor(WAIT);
  await alice.page.locator(".pending .entry").waitFor({ state: "detached", ...WAIT });
  await send(bob, "hi alice, bob here");
  await message(alice, "hi alice, bob here").waitFor(WAIT);

  // A reply, an edit, a reaction and a deletion, each seen by the other.
  await message(bob, "hello from alice").getByRole("button", { name: "Reply" }).click();
  await send(bob, "a reply to alice");
  await message(alice, "a reply to alice").locator(".quote", { hasText: "hello from alice" }).waitFor(WAIT);
  await message(alice, "hello from alice").getByRole("button", { name: "Edit" }).click();
  await alice.page.getByLabel("Edit your message").fill("hello from alice, edited");
  await alice.page.getByRole("button", { name: "Save" }).click();
  await message(bob, "hello from alice, edited").locator(".edited").waitFor(WAIT);
  await message(bob, "hello from alice, edited").getByRole("button", { name: "React with thumbs up" }).click();
  await message(alice, "hello from alice, edited").getByRole("button", { name: /👍 1/ }).waitFor(WAIT);
  await message(alice, "hi alice, bob here").getByRole("button", { name: "React with party" }).click();
  await message(bob, "hi alice, bob here").getByRole("button", { name: /🎉 1/ }).waitFor(WAIT);
  await message(bob, "hi alice, bob here").getByRole("button", { name: "Delete" }).click();
  await alice.page.locator(".entries .deleted").waitFor(WAIT);
  const deletedTextShown = await message(alice, "hi alice, bob here").count();

  // A room bob is not looking at counts what he has not read, and
  // forgets it once he has read it there.
  await openRoom(alice, side);
  await send(alice, "news in the side room");
  await message(alice, "news in the side room").waitFor(WAIT);
  await backToRooms(bob);
  const sideButton = bob.page.locator(".room", { hasText: side });
  await sideButton.locator(".badge", { hasText: "1" }).waitFor(WAIT);
  const unreadLabel = await sideButton.locator(".badge").getAttribute("aria-label");
  await sideButton.click();
  await message(bob, "news in the side room").waitFor(WAIT);
  await openRoom(bob, lobby);
  // Two polls of the counts later, the side room still has none.
  await bob.page.waitForTimeout(9_000);
  const unreadAfterReading = await sideButton.locator(".badge").count();

  // The token is renewed over the open socket before it expires (the
  // test's tokens last 60 s, renewed at half their life), and the socket
  // goes on working.
  const renewed = () => alice.frames.some((f) => !f.sent && f.payload.includes('"Type":"auth"'));
  for (let waited = 0; !renewed() && waited < 45; waited++) await alice.page.waitForTimeout(1_000);
  await send(alice, "still here after the renewal");
  await message(alice, "still here after the renewal").waitFor(WAIT);

  await openRoom(alice, lobby);
  await alice.page.screenshot({ path: `${shots}/laptop.png` });
  await bob.page.screenshot({ path: `${shots}/phone.png` });
  await bob.page.getByRole("button", { name: "← Rooms" }).click();
  await bob.page.screenshot({ path: `${shots}/phone-rooms.png` });

  return {
    lobby: await texts(alice),
    lobbyOnPhone: await texts(bob),
    deletedTextShown,
    unreadLabel,
    unreadAfterReading,
    renewed: renewed(),
    authSent: alice.frames.filter((f) => f.sent && f.payload.includes('"Type":"auth"')).length,
    screenshots: ["laptop.png", "phone.png", "phone-rooms.png"].map((file) => `${shots}/${file}`),
    problems,
  };
}

/** Asks the test to do something to the stack; returns its answer. */
async function ask(lines, need, fields = {}) {
  console.log(JSON.stringify({ need, ...fields }));
  return JSON.parse(await new Promise((resolve) => lines.once("line", resolve)));
}

async function restart(browser) {
  const carol = await person(browser, "carol", LAPTOP);
  const dave = await person(browser, "dave", LAPTOP);
  const name = `Restart ${suffix}`;
  const roomId = await createRoom(carol, name);
  await joinRoom(dave, roomId, name);
  await send(carol, "before the restart");
  await message(dave, "before the restart").waitFor(WAIT);

  const lines = createInterface({ input: process.stdin });
  // The gateway stops; a third person sends over gRPC meanwhile.
  const { sent } = await ask(lines, "stop", { room: roomId });
  for (const who of [carol, dave]) await who.page.getByRole("status").filter({ hasText: "Connection lost" }).waitFor(WAIT);
  // Written while offline: pending until the socket is back.
  await send(carol, "written while offline");
  await carol.page.locator(".pending .entry", { hasText: "written while offline" }).waitFor(WAIT);
  await ask(lines, "start");
  lines.close();

  // Both reconnect by themselves and get what they missed, then live ones.
  for (const who of [carol, dave]) {
    await who.page.getByRole("status").filter({ hasText: "Connected" }).waitFor({ timeout: 30_000 });
    await message(who, "written while offline").waitFor(WAIT);
  }
  await carol.page.locator(".pending .entry").waitFor({ state: "detached", ...WAIT });
  await send(dave, "after the restart");
  for (const who of [carol, dave]) await message(who, "after the restart").waitFor(WAIT);
  return {
    expected: ["before the restart", ...sent, "written while offline", "after the restart"],
    carol: await texts(carol),
    dave: await texts(dave),
  };
}

const scenarios = { chat, restart };
const browser = await launch();
let result;
try {
  if (!scenarios[scenario]) throw new Error(`no scenario ${scenario}: ${Object.keys(scenarios)}`);
  result = await scenarios[scenario](browser);
} catch (error) {
  // Where it stopped: the failing call and each page as it was then.
  const at = error.stack?.split("\n").find((line) => line.includes("web-client.mjs"))?.trim();
  const screens = [];
  for (const { name, page } of people) {
    const path = `${shots ?? "/tmp"}/failed-${scenario}-${name}.png`;
    if (await page.screenshot({ path }).then(() => true, () => false)) screens.push(path);
  }
  result = { error: `${scenario}: ${error.message.split("\n")[0]} ${at}`, screens, problems };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exitCode = result.error ? 1 : 0;
