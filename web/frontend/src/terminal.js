// The terminal page: asks tuxio-web for the visitor's sandbox and a token (POST /api/visit),
// opens the terminal at the gateway's visitor endpoint (Kubernetes remote-command, v5, the
// token in the subprotocol list), keeps a presence socket to tuxio-web while the tab is open,
// and reconnects with the same terminal session, which the agent replays.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";

const STDIN = 0, STDOUT = 1, STDERR = 2, STATUS = 3, RESIZE = 4;
const encoder = new TextEncoder();

const term = new Terminal({
  cursorBlink: true,
  fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, monospace",
  fontSize: 15,
  scrollback: 5000,
  theme: { background: "#101418" },
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("terminal"));
fit.fit();

const banner = {
  message: document.getElementById("message"),
  detail: document.getElementById("detail"),
  again: document.getElementById("again"),
};
let socket = null;
let presence = null;
let visit = null;
let ended = false;
let attempts = 0;
let countdown = null;

function show(state, message, detail = "") {
  document.body.dataset.state = state;
  banner.message.textContent = message;
  banner.detail.textContent = detail;
  banner.again.hidden = state !== "ended";
}

function waitThen(seconds, label, next) {
  clearInterval(countdown);
  let left = Math.max(1, Math.ceil(seconds));
  banner.detail.textContent = `${label} in ${left} s`;
  countdown = setInterval(() => {
    left -= 1;
    if (left <= 0) {
      clearInterval(countdown);
      next();
    } else {
      banner.detail.textContent = `${label} in ${left} s`;
    }
  }, 1000);
}

function frame(channel, bytes) {
  const out = new Uint8Array(bytes.length + 1);
  out[0] = channel;
  out.set(bytes, 1);
  return out;
}

function send(channel, bytes) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(frame(channel, bytes));
}

function sendSize() {
  send(RESIZE, encoder.encode(JSON.stringify({ Width: term.cols, Height: term.rows })));
}

function bearer(token) {
  const b64 = btoa(token).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `base64url.bearer.authorization.k8s.io.${b64}`;
}

async function enter() {
  let answer;
  try {
    const response = await fetch("/api/visit", { method: "POST", credentials: "same-origin" });
    answer = await response.json();
    if (!response.ok && !answer.state) answer = { state: "retry", retryAfter: 3, message: answer.message };
  } catch (error) {
    answer = { state: "retry", retryAfter: 3, message: "The site cannot be reached." };
  }
  if (answer.state !== "ready") {
    const title = answer.state === "queued" ? "Hang on, you are in line" : "Almost there";
    show(answer.state, title, "");
    banner.message.textContent = answer.message;
    waitThen(answer.retryAfter || 3, answer.state === "queued" ? "Checking again" : "Trying again", enter);
    return;
  }
  visit = answer;
  attempts = 0;
  keepPresence();
  connect();
}

function keepPresence() {
  if (presence && presence.readyState <= WebSocket.OPEN) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  presence = new WebSocket(`${scheme}//${location.host}/api/presence`);
  presence.onclose = () => {
    presence = null;
    if (!ended) setTimeout(keepPresence, 1000);
  };
}

function connect() {
  const path = `/v1/namespaces/${encodeURIComponent(visit.namespace)}/sandboxes/` +
    `${encodeURIComponent(visit.name)}/terminal?session=${encodeURIComponent(visit.session)}`;
  const ws = new WebSocket(visit.gateway + path, ["v5.channel.k8s.io", bearer(visit.token)]);
  ws.binaryType = "arraybuffer";
  socket = ws;
  ws.onopen = () => {
    show("live", "");
    fit.fit();
    sendSize();
    term.focus();
  };
  ws.onmessage = (event) => {
    const data = new Uint8Array(event.data);
    if (data.length === 0) return;
    const channel = data[0];
    if (channel === STDOUT || channel === STDERR) {
      term.write(data.subarray(1));
    } else if (channel === STATUS) {
      ended = true;
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    if (ended) {
      show("ended", "Your shell has ended.", "Start a new one when you like.");
      return;
    }
    attempts += 1;
    show("reconnecting", "Reconnecting\u2026", "Your shell keeps running meanwhile.");
    // A fresh visit each time: a fresh token, the same sandbox and terminal session.
    setTimeout(enter, Math.min(5000, 250 * 2 ** Math.min(attempts, 5)));
  };
}

term.onData((text) => send(STDIN, encoder.encode(text)));
term.onBinary((text) => send(STDIN, Uint8Array.from(text, (c) => c.charCodeAt(0) & 255)));
term.onResize(() => sendSize());
window.addEventListener("resize", () => fit.fit());

// Copy and paste: Ctrl+Shift+C / Ctrl+Shift+V (Ctrl+C stays the interrupt); the browser's own
// paste (its menu, middle click) reaches xterm.js through its text area as usual.
term.attachCustomKeyEventHandler((event) => {
  if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
  if (event.code === "KeyC") {
    const selected = term.getSelection();
    if (selected) navigator.clipboard.writeText(selected).catch(() => {});
    return false;
  }
  if (event.code === "KeyV") {
    navigator.clipboard.readText().then((text) => term.paste(text)).catch(() => {});
    return false;
  }
  return true;
});

banner.again.addEventListener("click", async () => {
  await fetch("/api/visit?fresh=1", { method: "POST", credentials: "same-origin" }).catch(() => {});
  ended = false;
  term.reset();
  enter();
});

// What the terminal shows, line by line: for people who read the page with a program.
window.tuxio = {
  term,
  screen() {
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i += 1) {
      lines.push(buffer.getLine(i).translateToString(true));
    }
    return lines.join("\n");
  },
  get visit() { return visit && { namespace: visit.namespace, name: visit.name, session: visit.session }; },
};

enter();
