// wshub chat page. Plain script, no build step, nothing from the internet.
// Every piece of text a peer sent goes into the page with textContent only.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), msg = $("msg"), send = $("send"), file = $("file"), fileLabel = $("file-label");
  const stateEl = $("state"), roomInput = $("room"), nameInput = $("name");
  const progress = $("progress"), progressBar = $("progress-bar"), progressText = $("progress-text");

  if (!window.WebSocket) {
    stateEl.textContent = "Your browser does not support WebSockets.";
    stateEl.className = "state closed";
    return;
  }

  // The server's message limit, so large files are refused here, not by a 1009.
  let maxMessageBytes = 16 * 1024 * 1024;
  fetch("/limits.json").then((r) => (r.ok ? r.json() : null)).then((j) => {
    if (j && Number.isFinite(j.maxMessageBytes)) maxMessageBytes = j.maxMessageBytes;
  }).catch(() => {});

  const ROOM_RE = /^[A-Za-z0-9_.\-]{1,64}$/;
  function roomFromUrl() {
    const hash = new URLSearchParams(location.hash.slice(1)).get("room");
    const query = new URLSearchParams(location.search).get("room");
    const room = hash || query || "";
    return ROOM_RE.test(room) ? room : "";
  }

  // An access token from the URL's fragment (#token=…, never sent to the
  // server with the page request), for servers with --auth-secret-file.
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
  function fragment() {
    const f = new URLSearchParams();
    if (room) f.set("room", room);
    if (token) f.set("token", token);
    const s = f.toString();
    return s ? "#" + s : location.pathname + location.search;
  }

  let room = roomFromUrl();
  roomInput.value = room;
  nameInput.value = localStorage.getItem("wshub.name") || "guest-" + Math.floor(Math.random() * 9000 + 1000);
  nameInput.addEventListener("change", () => {
    nameInput.value = nameInput.value.trim().slice(0, 40) || "guest";
    localStorage.setItem("wshub.name", nameInput.value);
  });
  localStorage.setItem("wshub.name", nameInput.value);

  // ---- the log ----
  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 8;
  }
  function time() {
    return new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function add(kind, who, build) {
    const stick = atBottom();
    const item = document.createElement("div");
    item.className = "msg " + kind;
    const meta = document.createElement("span");
    meta.className = "meta";
    if (who !== null) {
      const w = document.createElement("span");
      w.className = "who";
      w.textContent = who;
      meta.appendChild(w);
    }
    const t = document.createElement("time");
    t.textContent = time();
    meta.appendChild(t);
    item.appendChild(meta);
    build(item);
    log.appendChild(item);
    if (stick || kind === "mine") log.scrollTop = log.scrollHeight;
    return item;
  }
  function addText(kind, who, text) {
    return add(kind, who, (item) => {
      const body = document.createElement("span");
      body.className = "body";
      body.textContent = text;
      item.appendChild(body);
    });
  }
  function system(text) {
    addText("system", null, text);
  }
  function size(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  // ---- file frames: [u16 LE name length][UTF-8 name][bytes] ----
  function encodeFile(name, bytes) {
    const nameBytes = new TextEncoder().encode(name);
    const out = new Uint8Array(2 + nameBytes.length + bytes.byteLength);
    new DataView(out.buffer).setUint16(0, nameBytes.length, true);
    out.set(nameBytes, 2);
    out.set(new Uint8Array(bytes), 2 + nameBytes.length);
    return out;
  }
  function decodeFile(buffer) {
    if (buffer.byteLength < 2) return null;
    const n = new DataView(buffer).getUint16(0, true);
    if (2 + n > buffer.byteLength) return null;
    let name;
    try {
      name = new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buffer, 2, n));
    } catch (e) {
      return null;
    }
    return { name: name, data: buffer.slice(2 + n) };
  }
  function fileLink(item, name, data) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([data]));
    a.download = name.replace(/[\/\\]/g, "_") || "file";
    a.textContent = name || "(unnamed)";
    a.className = "file-link";
    item.appendChild(a);
    const s = document.createElement("span");
    s.className = "file-size";
    s.textContent = " (" + size(data.byteLength) + ")";
    item.appendChild(s);
  }

  // ---- the connection ----
  let ws = null, retry = 0, retryTimer = null;
  const mine = new Set();
  // Ids of chat messages shown in this room: a reconnect asks for the room's
  // history and shows only what is not here yet.
  const shown = new Set();
  // Until the server's presence snapshot, what arrives is the room's history.
  let replaying = false, replayed = 0;
  const whoEl = $("who");
  let present = [];

  function setState(text, cls) {
    stateEl.textContent = text;
    stateEl.className = "state " + cls;
    const open = cls === "open";
    msg.disabled = send.disabled = file.disabled = !open;
    fileLabel.setAttribute("aria-disabled", String(!open));
  }

  function url() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const q = new URLSearchParams({ history: "all", presence: "1", name: nameInput.value || "guest" });
    if (token) q.set("token", token);
    return scheme + location.host + "/ws" + (room ? "/" + room : "") + "?" + q.toString();
  }

  function showPresence() {
    whoEl.hidden = present.length === 0;
    whoEl.textContent = present.length + " here";
    whoEl.title = present.join(", ");
  }

  function onPresence(p) {
    if (p.event === "snapshot" && Array.isArray(p.names)) {
      present = p.names.filter((n) => typeof n === "string");
      if (replaying && replayed > 0) {
        const d = document.createElement("div");
        d.className = "divider";
        d.textContent = "earlier messages";
        log.appendChild(d);
      }
      replaying = false;
    } else if ((p.event === "join" || p.event === "leave") && typeof p.name === "string") {
      if (p.event === "join") present.push(p.name);
      else {
        const i = present.indexOf(p.name);
        if (i >= 0) present.splice(i, 1);
      }
      const line = document.createElement("div");
      line.className = "msg presence";
      line.textContent = p.name + (p.event === "join" ? " joined" : " left");
      const stick = atBottom();
      log.appendChild(line);
      if (stick) log.scrollTop = log.scrollHeight;
    }
    showPresence();
  }

  function connect() {
    clearTimeout(retryTimer);
    const socket = new WebSocket(url());
    socket.binaryType = "arraybuffer";
    ws = socket;
    setState("connecting…", "connecting");
    replaying = true;
    replayed = 0;
    let opened = false;
    socket.onopen = () => {
      if (ws !== socket) return;
      opened = true;
      retry = 0;
      setState("connected to " + (room ? "room " + room : "the lobby"), "open");
    };
    socket.onmessage = (ev) => {
      if (ws !== socket) return;
      if (typeof ev.data === "string") return onText(ev.data);
      const f = decodeFile(ev.data);
      if (!f) return addText("theirs", null, "malformed file frame (" + size(ev.data.byteLength) + ")");
      if (replaying) replayed++;
      add("theirs", null, (item) => fileLink(item, f.name, f.data));
    };
    socket.onclose = (ev) => {
      if (ws !== socket) return;
      present = [];
      showPresence();
      if (!opened) {
        // A browser does not show why an upgrade failed: ask the same URL
        // without the upgrade, which answers 401 or 403 when access is why.
        const probe = url().replace(/^ws/, "http");
        fetch(probe, { cache: "no-store" }).then((r) => {
          if (ws !== socket) return;
          if (r.status === 401 || r.status === 403) {
            return r.text().then((why) => {
              const what = r.status === 401
                ? "Not authorised: this server needs an access token — open the page as /#token=<your token>"
                : "Not authorised for " + (room ? "room " + room : "the lobby");
              setState(what + " (" + why.trim() + ")", "closed denied");
            });
          }
          retryLater(ev);
        }).catch(() => retryLater(ev));
        return;
      }
      retryLater(ev);
    };
  }

  function retryLater(ev) {
    const delay = Math.min(15000, 1000 * Math.pow(2, retry++)) + Math.floor(Math.random() * 300);
    const why = ev.code === 1000 || ev.code === 1005 ? "" : " (" + ev.code + (ev.reason ? " " + ev.reason : "") + ")";
    setState("disconnected" + why + " — retrying in " + Math.round(delay / 1000) + " s", "closed");
    retryTimer = setTimeout(connect, delay);
  }

  function onText(text) {
    let m = null;
    try {
      m = JSON.parse(text);
    } catch (e) {
      m = null;
    }
    if (m && m.wshub === "presence") return onPresence(m);
    if (m && m.type === "chat" && typeof m.body === "string") {
      // Our own (echoed, or in the history), or already shown before a reconnect.
      if (typeof m.id === "string" && (mine.has(m.id) || shown.has(m.id))) return;
      if (typeof m.id === "string") shown.add(m.id);
      if (replaying) replayed++;
      return addText("theirs", typeof m.name === "string" ? m.name : "?", m.body);
    }
    if (replaying) replayed++;
    addText("theirs", null, text); // from another kind of client: shown as-is
  }

  function newId() {
    return Math.random().toString(36).slice(2) + Date.now().toString(36);
  }

  document.getElementById("send-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = msg.value;
    if (!body.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
    const id = newId();
    mine.add(id);
    ws.send(JSON.stringify({ type: "chat", id: id, name: nameInput.value, body: body }));
    addText("mine", nameInput.value, body);
    msg.value = "";
    msg.focus();
  });

  file.addEventListener("change", () => {
    const f = file.files && file.files[0];
    file.value = "";
    if (!f || !ws || ws.readyState !== WebSocket.OPEN) return;
    const overhead = 2 + new TextEncoder().encode(f.name).length;
    if (f.size + overhead > maxMessageBytes) {
      system("“" + f.name + "” is " + size(f.size) + ": over the server's limit of " + size(maxMessageBytes - overhead) + ".");
      return;
    }
    f.arrayBuffer().then((bytes) => {
      const socket = ws;
      const frame = encodeFile(f.name, bytes);
      const before = socket.bufferedAmount;
      socket.send(frame);
      add("mine", nameInput.value, (item) => fileLink(item, f.name, bytes));
      showProgress(socket, before + frame.byteLength, f.name);
    });
  });

  function showProgress(socket, total, name) {
    progress.hidden = false;
    const tick = () => {
      const left = socket.bufferedAmount;
      progressBar.value = total ? (total - left) / total : 1;
      progressText.textContent = "sending " + name + ": " + size(total - left) + " / " + size(total);
      if (left > 0 && socket.readyState === WebSocket.OPEN) {
        requestAnimationFrame(tick);
      } else {
        progressText.textContent = socket.readyState === WebSocket.OPEN ? "sent " + name : "send interrupted";
        setTimeout(() => (progress.hidden = true), 1500);
      }
    };
    tick();
  }

  function changeRoom(next) {
    next = next.trim();
    if (next && !ROOM_RE.test(next)) {
      system("Room names are 1–64 of A–Z a–z 0–9 _ . -");
      return;
    }
    if (next === room && ws && ws.readyState <= WebSocket.OPEN) return;
    room = next;
    roomInput.value = room;
    history.replaceState(null, "", fragment());
    if (ws) {
      const old = ws;
      ws = null;
      old.close(1000);
    }
    log.textContent = "";
    shown.clear();
    present = [];
    showPresence();
    connect();
  }

  document.getElementById("room-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    changeRoom(roomInput.value);
  });
  window.addEventListener("hashchange", () => changeRoom(roomFromUrl()));

  connect();
})();
