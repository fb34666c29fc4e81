// End-to-end test of the chat page: Debian's Chromium, headless, driven by
// playwright-core, against a real `wshub serve` on loopback.
//
// Run with `make e2e` (builds the binary, installs playwright-core).
// Screenshots go to target/e2e/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = process.env.WSHUB_BIN || path.join(root, "target", "debug", "wshub");
const shots = path.join(root, "target", "e2e");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP = 15000;
const MAX = 4 * 1024 * 1024;

let server = null;
let port = 0;
let browser = null;

/** Starts wshub; resolves once it logs its address. */
function startServer(addr, extra = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ["serve", "--addr", addr, "--max-message-bytes", String(MAX), "--log-level", "info", ...extra], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    child.log = () => log;
    const timer = setTimeout(() => reject(new Error("wshub did not start:\n" + log)), STEP);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/listening on 127\.0\.0\.1:(\d+)/);
      if (m && !child.started) {
        child.started = true;
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.on("exit", (code) => {
      if (!child.started) reject(new Error(`wshub exited with ${code}:\n${log}`));
    });
  });
}

function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.on("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  ({ child: server, port } = await startServer("127.0.0.1:0"));
  // playwright gives each launch a fresh, temporary --user-data-dir.
  browser = await chromium.launch({
    executablePath: browserPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await stopServer(server);
});

/** A user with their own browser context (own localStorage), in `room`. */
async function user(name, room, viewport = { width: 1280, height: 800 }, colorScheme = "light") {
  const context = await browser.newContext({ viewport, colorScheme, acceptDownloads: true });
  await context.addInitScript((n) => localStorage.setItem("wshub.name", n), name);
  const page = await context.newPage();
  page.dialogs = [];
  page.on("dialog", async (d) => {
    page.dialogs.push(d.message());
    await d.dismiss();
  });
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  await page.goto(`http://127.0.0.1:${port}/#room=${room}`);
  await connected(page);
  return page;
}

async function connected(page) {
  await page.waitForFunction(() => document.getElementById("state").classList.contains("open"), null, { timeout: STEP });
}

async function say(page, text) {
  await page.fill("#msg", text);
  await page.press("#msg", "Enter");
}

/** Texts of the messages in the log that have class `kind`. */
function messages(page, kind) {
  return page.$$eval(`#log .msg.${kind} .body`, (els) => els.map((e) => e.textContent));
}

async function waitForText(page, kind, text) {
  await page.waitForFunction(
    ([k, t]) => [...document.querySelectorAll(`#log .msg.${k} .body`)].some((e) => e.textContent === t),
    [kind, text],
    { timeout: STEP },
  );
}

test("chat, files, rooms, XSS and reconnect in a real browser", async () => {
  const alice = await user("alice", "e2e");
  const bob = await user("bob", "e2e");
  const carol = await user("carol", "elsewhere", { width: 390, height: 844 }, "dark");

  // Alice's message reaches Bob with her name, and shows once on her page.
  await say(alice, "hello from alice");
  await waitForText(bob, "theirs", "hello from alice");
  const who = await bob.$eval("#log .msg.theirs .who", (e) => e.textContent);
  assert.equal(who, "alice");
  assert.deepEqual(await messages(alice, "mine"), ["hello from alice"]);
  assert.deepEqual(await messages(alice, "theirs"), []);
  assert.ok(await bob.$eval("#log .msg.theirs time", (e) => e.textContent.length > 0), "message shows its time");

  // Bob sends a 2 MiB file; Alice gets a link (no auto-download) with the same bytes.
  const file = randomBytes(2 * 1024 * 1024);
  const digest = createHash("sha256").update(file).digest("hex");
  await bob.setInputFiles("#file", { name: "report 2024 ü.bin", mimeType: "application/octet-stream", buffer: file });
  await alice.waitForSelector("#log .msg.theirs a.file-link", { timeout: STEP });
  const link = await alice.$eval("#log .msg.theirs a.file-link", (a) => ({ text: a.textContent, name: a.download, href: a.href }));
  assert.equal(link.text, "report 2024 ü.bin");
  assert.equal(link.name, "report 2024 ü.bin");
  const size = await alice.$eval("#log .msg.theirs .file-size", (e) => e.textContent);
  assert.match(size, /2\.0 MiB/);
  const got = await alice.evaluate(async (href) => {
    const bytes = await (await fetch(href)).arrayBuffer();
    const hash = await crypto.subtle.digest("SHA-256", bytes);
    return [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }, link.href);
  assert.equal(got, digest, "downloaded bytes equal the original");
  const [download] = await Promise.all([alice.waitForEvent("download", { timeout: STEP }), alice.click("#log a.file-link")]);
  assert.equal(download.suggestedFilename(), "report 2024 ü.bin");

  // A file over the server's limit is refused on the page, before sending.
  await bob.setInputFiles("#file", { name: "huge.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(MAX + 1) });
  await bob.waitForFunction(() => [...document.querySelectorAll("#log .msg.system")].some((e) => e.textContent.includes("over the server's limit")), null, { timeout: STEP });

  // Malformed file frames are shown as such, not thrown.
  await bob.evaluate(async (p) => {
    const ws = new WebSocket(`ws://127.0.0.1:${p}/ws/e2e`);
    ws.binaryType = "arraybuffer";
    await new Promise((r) => (ws.onopen = r));
    ws.send(new Uint8Array([1]));
    ws.send(new Uint8Array([200, 0, 97]));
    ws.send(new Uint8Array([2, 0, 0xff, 0xfe]));
    ws.send("plain text from another program");
    ws.close();
  }, port);
  await waitForText(alice, "theirs", "plain text from another program");
  const malformed = (await messages(alice, "theirs")).filter((t) => t.startsWith("malformed file frame"));
  assert.equal(malformed.length, 3);

  // HTML in a message is text: nothing runs, no element is made.
  const xss = "<img src=x onerror=alert(1)>";
  await say(alice, xss);
  await waitForText(bob, "theirs", xss);
  assert.equal(await bob.$$eval("#log img", (els) => els.length), 0);
  assert.deepEqual(bob.dialogs, []);

  // Carol, in another room, saw none of it.
  assert.deepEqual(await messages(carol, "theirs"), []);
  assert.equal(await carol.$$eval("#log a.file-link", (els) => els.length), 0);

  await alice.screenshot({ path: path.join(shots, "chat-desktop.png") });
  await carol.setViewportSize({ width: 390, height: 844 });
  await say(carol, "hi from a phone-width screen");
  await carol.screenshot({ path: path.join(shots, "chat-phone-dark.png") });
  const [bg, fg] = await carol.evaluate(() => {
    const s = getComputedStyle(document.body);
    return [s.backgroundColor, s.color];
  });
  assert.notEqual(bg, fg);
  assert.match(bg, /rgb\(21, 21, 23\)/, "dark theme follows the OS setting");
  const phoneOverflow = await carol.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(phoneOverflow, false, "no horizontal scrolling at phone width");

  // Restart the server on the same port: both pages reconnect and chat again.
  assert.equal(await stopServer(server), 0);
  await alice.waitForFunction(() => document.getElementById("state").classList.contains("closed"), null, { timeout: STEP });
  assert.equal(await alice.$eval("#msg", (e) => e.disabled), true, "controls disabled while disconnected");
  ({ child: server } = await startServer(`127.0.0.1:${port}`));
  await connected(alice);
  await connected(bob);
  await say(bob, "after the restart");
  await waitForText(alice, "theirs", "after the restart");
  await bob.screenshot({ path: path.join(shots, "chat-after-restart.png") });

  for (const p of [alice, bob, carol]) assert.deepEqual(p.errors, [], "no page errors");
});

/** Waits until `cond()` holds (polling the server's log, say). */
async function until(what, cond) {
  const deadline = Date.now() + STEP;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The page's log as a list: message bodies, "|" for the divider. */
function logItems(page) {
  return page.$$eval("#log > *", (els) =>
    els.map((e) => (e.classList.contains("divider") ? "|" : e.classList.contains("presence") ? "~" : (e.querySelector(".body") || {}).textContent)),
  );
}

test("presence, history under a divider, and a dropped socket loses nothing and repeats nothing", async () => {
  const joinedLines = () => server.log().split("\n").filter((l) => l.includes('joined room "hist"'));
  const dana = await user("dana", "hist");
  await until("dana's join in the log", () => joinedLines().length >= 1);
  const danaPort = joinedLines()[0].match(/\(127\.0\.0\.1:(\d+)\)/)[1];
  const eli = await user("eli", "hist");

  // Both pages show who is there: a count, names on hover, a line on joining.
  for (const p of [dana, eli]) {
    await p.waitForFunction(() => document.getElementById("who").title.split(", ").sort().join() === "dana,eli", null, { timeout: STEP });
    assert.equal(await p.$eval("#who", (e) => e.textContent), "2 here");
  }
  await dana.waitForFunction(() => [...document.querySelectorAll("#log .msg.presence")].some((e) => e.textContent === "eli joined"), null, { timeout: STEP });

  await say(dana, "first");
  await waitForText(eli, "theirs", "first");
  await say(eli, "second");
  await waitForText(dana, "theirs", "second");

  // A reload shows the earlier messages, then the divider.
  await eli.reload();
  await connected(eli);
  await eli.waitForSelector("#log .divider", { timeout: STEP });
  const items = (await logItems(eli)).filter((t) => t !== "~");
  assert.deepEqual(items, ["first", "second", "|"]);
  await eli.screenshot({ path: path.join(shots, "chat-history.png") });

  // The server drops dana's socket (ss -K, as a lost Wi-Fi would); eli
  // talks meanwhile; dana reconnects and shows those messages exactly once.
  const kill = spawn("ss", ["-K", `( sport = :${port} and dport = :${danaPort} )`], { stdio: "ignore" });
  await new Promise((r) => kill.on("exit", r));
  await dana.waitForFunction(() => document.getElementById("state").classList.contains("closed"), null, { timeout: STEP });
  await say(eli, "while you were away");
  await say(eli, "and once more");
  await connected(dana);
  await waitForText(dana, "theirs", "and once more");
  const after = (await messages(dana, "theirs")).concat(await messages(dana, "mine"));
  const count = (t) => after.filter((x) => x === t).length;
  for (const t of ["first", "second", "while you were away", "and once more"]) assert.equal(count(t), 1, `"${t}" shown ${count(t)} times`);
  assert.deepEqual(dana.errors.concat(eli.errors), []);
});

test("the echo page talks to /echo", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${port}/echo.html`);
  await page.waitForFunction(() => document.getElementById("state").classList.contains("open"), null, { timeout: STEP });
  await page.fill("#msg", "echo me");
  await page.press("#msg", "Enter");
  await page.waitForFunction(() => [...document.querySelectorAll("#log .msg.theirs")].some((e) => e.textContent.startsWith("echo: echo me")), null, { timeout: STEP });
  await page.screenshot({ path: path.join(shots, "echo.png") });
  await context.close();
});

test("room from the query string, and changing rooms", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${port}/?room=q.room`);
  await connected(page);
  assert.match(await page.$eval("#state", (e) => e.textContent), /room q\.room/);
  await page.fill("#room", "next-room");
  await page.press("#room", "Enter");
  await page.waitForFunction(() => /room next-room/.test(document.getElementById("state").textContent), null, { timeout: STEP });
  assert.match(page.url(), /#room=next-room$/);
  await context.close();
});

test("with --auth-secret-file the page joins with #token= and says why without one", async () => {
  const secret = path.join(shots, "secret");
  writeFileSync(secret, randomBytes(32), { mode: 0o600 });
  const token = execFileSync(bin, ["token", "--secret-file", secret, "--sub", "erin", "--rooms", "ops,team-*", "--ttl", "10m"], { encoding: "utf8" }).trim();
  const { child: secured, port: securedPort } = await startServer("127.0.0.1:0", ["--auth-secret-file", secret]);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${securedPort}/#room=team-blue&token=${token}`);
    await connected(page);
    assert.match(await page.$eval("#state", (e) => e.textContent), /room team-blue/);
    // Changing rooms keeps the token in the fragment.
    await page.fill("#room", "ops");
    await page.press("#room", "Enter");
    await page.waitForFunction(() => /room ops/.test(document.getElementById("state").textContent), null, { timeout: STEP });
    assert.ok(page.url().includes("token="), page.url());
    // A room the token does not grant, and no token at all: a clear message.
    await page.fill("#room", "finance");
    await page.press("#room", "Enter");
    await page.waitForFunction(() => /Not authorised for room finance/.test(document.getElementById("state").textContent), null, { timeout: STEP });
    const stranger = await context.newPage();
    await stranger.goto(`http://127.0.0.1:${securedPort}/#room=ops`);
    await stranger.waitForFunction(() => /Not authorised: this server needs an access token/.test(document.getElementById("state").textContent), null, { timeout: STEP });
    await stranger.screenshot({ path: path.join(shots, "not-authorised.png") });
    assert.ok(!secured.log().includes(token.split(".")[2]), "the token is in the server's log");
    await context.close();
  } finally {
    await stopServer(secured);
  }
});

test("Chromium negotiates permessage-deflate with --compression and the chat works", async () => {
  const { child: deflating, port: dport } = await startServer("127.0.0.1:0", ["--compression"]);
  try {
    const pages = [];
    for (const name of ["fay", "gus"]) {
      const context = await browser.newContext();
      await context.addInitScript((n) => localStorage.setItem("wshub.name", n), name);
      const page = await context.newPage();
      await page.goto(`http://127.0.0.1:${dport}/#room=zip`);
      await connected(page);
      pages.push(page);
    }
    const [fay, gus] = pages;
    // Long enough to be compressed both ways (--compression-min-bytes 256).
    const long = "a long message that compresses well, ".repeat(12);
    await say(fay, long);
    await waitForText(gus, "theirs", long);
    await say(gus, "short reply");
    await waitForText(fay, "theirs", "short reply");
    const metrics = await (await fetch(`http://127.0.0.1:${dport}/metrics`)).text();
    const value = (name) => Number((metrics.match(new RegExp("^" + name.replace(/[{}]/g, "\\$&") + " (\\d+)", "m")) || [])[1]);
    assert.equal(value("wshub_deflate_negotiated_total"), 2, metrics);
    // The browser compressed what it sent; the server deflated the long message once for gus.
    assert.ok(value('wshub_deflate_messages_total{direction="in"}') >= 2, metrics);
    assert.equal(value('wshub_deflate_messages_total{direction="out"}'), 1, metrics);
    for (const p of pages) await p.context().close();
  } finally {
    await stopServer(deflating);
  }
});
