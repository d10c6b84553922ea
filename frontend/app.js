// Chorus web interface: plain JavaScript, no dependencies, no build step.
//
// One live conversation over the gateway's /v1/realtime WebSocket (OpenAI Realtime, GA event
// names): the microphone streams 24 kHz PCM from an AudioWorklet (capture-worklet.js), the reply's
// PCM plays through Web Audio as it arrives, scheduled on the AudioContext's clock so the page
// knows how much of each reply was heard (what a barge-in or Stop truncates the item to). Typed
// messages go into the same session. GET ../voices and ../config fill the settings.
"use strict";

const API = new URL("../", window.location.href); // /api/
const REALTIME = (() => {
  const url = new URL("../../v1/realtime?model=chorus", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
})();
const V1 = new URL("../../v1/", window.location.href);
const HISTORY_KEY = "chorus.history";
const CONVERSATION_KEY = "chorus.conversation"; // the stored conversation the page continues
const SETTINGS_KEY = "chorus.settings";
const KEY_KEY = "chorus.apiKey"; // sessionStorage: gone with the browser session
const RATE = 24000;
const PLAY_LEAD = 0.05; // s: the first chunk of a reply starts this far ahead of the clock
const BACKOFF = [500, 1000, 2000, 4000, 8000, 10000]; // ms between reconnection attempts

const $ = (id) => document.getElementById(id);
const els = {
  chat: $("chat"), text: $("text"), send: $("send"), start: $("start"), talk: $("talk"),
  stop: $("stop"), status: $("status"), error: $("error"), errorText: $("error-text"),
  voice: $("voice"), imageMode: $("image-mode"), language: $("language"), speak: $("speak"),
  mode: $("mode"), model: $("transcription-model"), maxTokens: $("max-tokens"),
  composer: $("composer"), keyForm: $("key-form"), apiKey: $("api-key"), keyError: $("key-error"),
  notices: $("notices"), conversationList: $("conversation-list"),
};

// What the page saw, for people debugging and for the tests: server and client events (audio
// deltas and appends are counted, not logged), and the clock times of capture and playback.
window.chorusEvents = [];
window.chorusMetrics = { micOpenedAt: null, captureStartedAt: null, firstPlayed: {}, sentChunks: 0, audioDeltas: 0 };
window.chorusNow = () => (audio ? audio.context.currentTime : 0);
function logEvent(direction, event) {
  const entry = { dir: direction, type: event.type, t: performance.now() };
  for (const key of ["item_id", "response_id", "audio_end_ms", "transcript", "delta"]) {
    if (event[key] !== undefined) entry[key] = event[key];
  }
  if (event.response) {
    entry.item_id = event.response.output?.[0]?.id;
    entry.status = event.response.status;
    entry.reason = event.response.status_details?.reason;
    entry.response_id = event.response.id;
  }
  if (event.error) entry.message = event.error.message;
  if (event.item) { entry.item_id = event.item.id; entry.role = event.item.role; }
  window.chorusEvents.push(entry);
  if (window.chorusEvents.length > 1000) window.chorusEvents.splice(0, 200);
}

// Turn limits (max_history_messages, max_history_chars, max_text_chars) come from /api/config:
// the orchestrator's own, no numbers of ours to drift.
let limits = {};
let apiKey = sessionStorage.getItem(KEY_KEY) || "";
let needsKey = false;

function loadJSON(storage, key, fallback) {
  try { return JSON.parse(storage.getItem(key)) ?? fallback; } catch { return fallback; }
}

// ---------------------------------------------------------------- status and errors
// The status line is the page's one live region: the chat, which fills token by token, is not.
function setStatus(state, text) {
  els.status.dataset.state = state;
  els.status.textContent = text;
}
function showError(message) {
  els.errorText.textContent = message;
  els.error.hidden = false;
}
function clearError() { els.error.hidden = true; els.errorText.textContent = ""; }
$("error-close").addEventListener("click", clearError);

const CLOSE_REASONS = {
  1000: "the session ended",
  1001: "the gateway is restarting or shutting down",
  1006: "the connection was lost",
  1009: "a message was too large for the gateway",
  1011: "the server failed",
  1013: "Chorus is unavailable or busy right now",
};

// ---------------------------------------------------------------- the API key and settings
function authHeaders() { return apiKey ? { Authorization: `Bearer ${apiKey}` } : {}; }

async function getJSON(name) {
  const response = await fetch(new URL(name, API), { headers: authHeaders() });
  if (response.status === 401) {
    const error = new Error("the API key is missing or wrong");
    error.status = 401;
    throw error;
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

function askForKey(refused) {
  needsKey = true;
  els.keyForm.hidden = false;
  els.keyError.textContent = refused ? "That key was refused; try again." : "";
  setStatus("key", refused ? "The API key was refused." : "This Chorus needs an API key.");
  els.apiKey.focus();
}

els.keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  apiKey = els.apiKey.value.trim();
  sessionStorage.setItem(KEY_KEY, apiKey);
  loadServerSettings(true);
});

function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify({
    voice: els.voice.value, imageMode: els.imageMode.value, language: els.language.value,
    speak: els.speak.checked, mode: els.mode.value, model: els.model.value,
    maxTokens: els.maxTokens.value,
  }));
}
const saved = loadJSON(localStorage, SETTINGS_KEY, {});
if (saved.imageMode) els.imageMode.value = saved.imageMode;
if (saved.language !== undefined) els.language.value = saved.language;
if (saved.speak !== undefined) els.speak.checked = saved.speak;
if (saved.mode) els.mode.value = saved.mode;
if (saved.model !== undefined) els.model.value = saved.model;
if (saved.maxTokens) els.maxTokens.value = saved.maxTokens;
for (const el of [els.voice, els.imageMode, els.language, els.speak, els.mode, els.model, els.maxTokens]) {
  el.addEventListener("change", () => {
    saveSettings();
    updateMode();
    if (live()) send({ type: "session.update", session: sessionConfig() });
  });
}
$("settings-form").addEventListener("submit", (e) => e.preventDefault());

function showNotices(notices) {
  els.notices.replaceChildren();
  for (const n of Array.isArray(notices) ? notices : []) {
    const li = document.createElement("li");
    const message = n.message || `The ${n.service} service serves a placeholder model.`;
    // The message names its setting as a rule; when it does not, say it.
    const setting = n.setting && !message.includes(n.setting) ? ` Set ${n.setting}.` : "";
    li.textContent = message + setting;
    els.notices.append(li);
  }
  els.notices.hidden = !els.notices.children.length;
}

async function loadServerSettings(retrying = false) {
  try {
    limits = await getJSON("config");
  } catch (error) {
    if (error.status === 401) { askForKey(retrying || Boolean(apiKey)); return false; }
    showError(`Could not load the settings: ${error.message}`);
    return false;
  }
  needsKey = false;
  els.keyForm.hidden = true;
  showNotices(limits.notices);
  loadConversations();
  if (limits.max_text_chars) els.text.maxLength = limits.max_text_chars;
  trimHistory();
  if (!socket) setStatus("idle", "Press “Start conversation” and speak, or type.");
  try {
    const { voices } = await getJSON("voices");
    els.voice.length = 1;
    for (const v of voices) els.voice.add(new Option(`${v.name || v.id} (${v.language})`, v.id));
    if (saved.voice && voices.some((v) => v.id === saved.voice)) els.voice.value = saved.voice;
  } catch (error) {
    showError(`Could not load the voices: ${error.message}`);
  }
  return true;
}

function sessionConfig() {
  const maxTokens = parseInt(els.maxTokens.value, 10);
  const session = {
    type: "realtime",
    output_modalities: [els.speak.checked ? "audio" : "text"],
    audio: {
      input: {
        format: { type: "audio/pcm", rate: RATE },
        transcription: { model: els.model.value || undefined, language: els.language.value || undefined },
        turn_detection: pushToTalk() ? null : { type: "server_vad", silence_duration_ms: 500 },
      },
      output: { format: { type: "audio/pcm", rate: RATE }, voice: els.voice.value || undefined },
    },
    chorus: { image_mode: els.imageMode.value, conversation_id: conversationId || undefined },
  };
  if (maxTokens > 0) session.max_output_tokens = maxTokens;
  return session;
}

// ---------------------------------------------------------------- conversation and chat
// Items in the order the conversation made them (user and assistant; text only), kept in the
// browser so that a new server session, after a reconnection or a reload, is given the context.
let history = loadJSON(localStorage, HISTORY_KEY, []);
const bubbles = new Map(); // item id -> { el, text, role, entry }

function addMessage(role, text = "") {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  div.append(body);
  els.chat.append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

// The bubble of an item, made on first sight; its history entry is made with it, so the history
// keeps the conversation's order even when a transcript completes after the reply has started.
function bubble(itemId, role) {
  let b = bubbles.get(itemId);
  if (!b) {
    const el = addMessage(role);
    el.dataset.item = itemId;
    b = { el, role, text: "", entry: { role, content: "" } };
    bubbles.set(itemId, b);
    history.push(b.entry);
  }
  return b;
}
function setText(b, text, partial = false) {
  b.text = text;
  const body = b.el.querySelector(".text");
  if (partial) {
    body.replaceChildren(Object.assign(document.createElement("span"), { className: "partial", textContent: text || "…" }));
  } else {
    body.textContent = text;
  }
}
function settle(b, text) {
  b.entry.content = text;
  b.el.dataset.text = text;
  trimHistory();
}

function renderHistory() {
  els.chat.replaceChildren();
  for (const m of history) addMessage(m.role, m.content).dataset.text = m.content;
}
// Drop the oldest entries until the history fits the turn limits (count and characters); entries
// without text yet (a reply on its way) are kept but not stored.
function trimHistory() {
  const maxMessages = limits.max_history_messages ?? Infinity;
  const maxChars = limits.max_history_chars ?? Infinity;
  const settled = () => history.filter((m) => m.content);
  let chars = settled().reduce((n, m) => n + m.content.length, 0);
  while (history.length && (settled().length > maxMessages || chars > maxChars)) {
    chars -= history.shift().content.length;
  }
  localStorage.setItem(HISTORY_KEY, JSON.stringify(settled()));
}
function remember(userText, replyText) { // two settled entries at once (tests, and old callers)
  history.push({ role: "user", content: userText }, { role: "assistant", content: replyText });
  trimHistory();
}

function clearChat() {
  history = [];
  bubbles.clear();
  localStorage.removeItem(HISTORY_KEY);
  els.chat.replaceChildren();
  stopPlayback(false);
}
$("new-conversation").addEventListener("click", async () => {
  clearChat();
  clearError();
  setConversation("");
  if (socket) { closeSocket(); await ensureConversation(); connect(); }
  els.text.focus();
});

// ---------------------------------------------------------------- stored conversations
// The conversation lives in the server's store (/v1/conversations): a new session names it and
// starts from its items, so a reconnection or another device goes on where it was. Where the
// gateway cannot store (an error from the store), the page keeps the history itself and gives
// it to each new session, as before.
let conversationId = localStorage.getItem(CONVERSATION_KEY) || "";
let storing = true;

async function v1(method, path, body) {
  const headers = { ...authHeaders(), ...(body ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(new URL(path, V1), { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function setConversation(id) {
  conversationId = id;
  if (id) localStorage.setItem(CONVERSATION_KEY, id);
  else localStorage.removeItem(CONVERSATION_KEY);
  for (const li of els.conversationList.children) {
    li.querySelector(".open")?.setAttribute("aria-current", String(li.dataset.id === id));
  }
}

async function ensureConversation() {
  if (conversationId || !storing) return;
  try {
    const made = await v1("POST", "conversations", { title: new Date().toLocaleString() });
    setConversation(made.id);
    loadConversations();
  } catch (error) {
    storing = false;
    logEvent("page", { type: "conversation.unstored", message: error.message });
  }
}

async function loadConversations() {
  let page;
  try { page = await v1("GET", "conversations?page_size=50"); } catch { return; }
  els.conversationList.replaceChildren();
  for (const c of page.data) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const title = c.title || "Untitled";
    const open = Object.assign(document.createElement("button"), { type: "button", className: "open", textContent: title });
    open.setAttribute("aria-current", String(c.id === conversationId));
    open.addEventListener("click", () => openConversation(c.id).catch((e) => showError(`Could not open it: ${e.message}`)));
    const remove = Object.assign(document.createElement("button"), { type: "button", className: "delete", textContent: "Delete" });
    remove.setAttribute("aria-label", `Delete ${title}`);
    remove.addEventListener("click", () => deleteConversation(c.id, title).catch((e) => showError(`Could not delete it: ${e.message}`)));
    li.append(open, remove);
    els.conversationList.append(li);
  }
  if (!page.data.length) els.conversationList.append(Object.assign(document.createElement("li"), { className: "empty", textContent: "None yet." }));
}

// A stored item's media, fetched with the key (an <audio src> could not send it) into blob URLs.
async function attachMedia(el, artifact) {
  const response = await fetch(artifact.url, { headers: authHeaders() });
  if (!response.ok) return;
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  if (blob.type.startsWith("image/")) {
    el.append(Object.assign(document.createElement("img"), { src: url, alt: "Picture drawn for this reply" }));
  } else if (blob.type.startsWith("audio/")) {
    const player = Object.assign(document.createElement("audio"), { src: url, controls: true, preload: "metadata" });
    player.setAttribute("aria-label", "The reply, as it was spoken");
    el.append(player);
  }
}

async function openConversation(id) {
  const c = await v1("GET", `conversations/${encodeURIComponent(id)}`);
  const wasLive = wanted;
  if (wanted) end();
  clearChat();
  setConversation(id);
  for (const item of c.items) {
    if (item.role === "system") continue;
    const el = addMessage(item.role, item.text);
    el.dataset.text = item.text;
    el.dataset.item = item.id;
    history.push({ role: item.role, content: item.text });
    for (const artifact of item.artifacts) await attachMedia(el, artifact);
  }
  trimHistory();
  setStatus("idle", `Opened “${c.title || "Untitled"}”. Press “Start conversation” to go on.`);
  if (wasLive) begin();
}

async function deleteConversation(id, title) {
  if (!window.confirm(`Delete “${title}” with its audio and pictures? This cannot be undone.`)) return;
  await v1("DELETE", `conversations/${encodeURIComponent(id)}`);
  if (id === conversationId) {
    if (wanted) end();
    clearChat();
    setConversation("");
  }
  await loadConversations();
  setStatus("idle", `Deleted “${title}”.`);
}

// ---------------------------------------------------------------- audio: one context for both ways
let audio = null; // { context, node, stream }
const playback = { nextTime: 0, sources: new Set(), items: new Map() }; // item id -> { scheduled, stopped }

async function startAudio() {
  if (audio) return audio;
  const context = new AudioContext({ latencyHint: "interactive" });
  audio = { context, node: null, stream: null, problem: null };
  context.resume();
  try {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error("this browser cannot record here (it needs https or localhost)");
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    window.chorusMetrics.micOpenedAt = context.currentTime;
    window.chorusMetrics.micOpenedPerf = performance.now();
    await context.audioWorklet.addModule("capture-worklet.js");
    const node = new AudioWorkletNode(context, "chorus-capture", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
    node.port.onmessage = ({ data }) => {
      if (data.started !== undefined) window.chorusMetrics.captureStartedAt = data.started;
      else onCaptured(new Uint8Array(data.pcm));
    };
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination); // silent: the processor writes nothing to its output
    audio.node = node;
    audio.stream = stream;
  } catch (error) {
    const denied = error.name === "NotAllowedError" || error.name === "SecurityError";
    audio.problem = denied ? "microphone access was denied" : `no microphone: ${error.message}`;
    showError(`Typing only: ${audio.problem}.`);
  }
  return audio;
}

function stopAudio() {
  if (!audio) return;
  stopPlayback(false);
  audio.stream?.getTracks().forEach((t) => t.stop());
  audio.context.close();
  audio = null;
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function fromBase64(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

let talking = false; // push to talk: held
let talkStarted = 0;
function onCaptured(pcm) {
  if (!live() || (pushToTalk() && !talking)) return;
  send({ type: "input_audio_buffer.append", audio: toBase64(pcm) });
  window.chorusMetrics.sentChunks++;
}

// A delta of reply audio: scheduled right after what is queued, or just ahead of the clock when
// the queue has run dry.
function play(itemId, bytes) {
  if (!audio || !els.speak.checked) return;
  const item = playback.items.get(itemId) ?? { scheduled: 0, playedBefore: 0, stopped: false };
  playback.items.set(itemId, item);
  if (item.stopped) return; // interrupted: its late deltas are dropped
  const context = audio.context;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.byteLength >> 1;
  if (!count) return;
  const buffer = context.createBuffer(1, count, RATE);
  const samples = buffer.getChannelData(0);
  for (let i = 0; i < count; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
  const node = context.createBufferSource();
  node.buffer = buffer;
  node.connect(context.destination);
  const start = Math.max(playback.nextTime, context.currentTime + PLAY_LEAD);
  node.start(start);
  const source = { node, itemId, start, duration: buffer.duration };
  playback.sources.add(source);
  node.onended = () => {
    // Played to its end (a source that stopPlayback silenced is already gone from the set):
    // it counts whole in what was heard of its item.
    if (playback.sources.delete(source)) item.playedBefore += source.duration * 1000;
    updateButtons();
  };
  playback.nextTime = start + buffer.duration;
  item.scheduled += buffer.duration;
  if (window.chorusMetrics.firstPlayed[itemId] === undefined) {
    window.chorusMetrics.firstPlayed[itemId] = start;
    logEvent("page", { type: "playback.started", item_id: itemId });
  }
  updateButtons();
}

function playing() {
  return Boolean(audio) && [...playback.sources].some((s) => s.start + s.duration > audio.context.currentTime);
}

// How much of an item's audio was heard, in ms, by the context's clock: the pieces that played
// to their end, and of those still scheduled, what the clock has passed.
function heardMs(itemId) {
  if (!audio) return 0;
  const now = audio.context.currentTime;
  let heard = 0;
  for (const s of playback.sources) {
    if (s.itemId === itemId) heard += Math.min(Math.max(now - s.start, 0), s.duration);
  }
  return Math.round((playback.items.get(itemId)?.playedBefore ?? 0) + heard * 1000);
}
window.chorusHeardMs = heardMs;

// Stop every reply sound at once; with `truncate`, tell the server how much of each unfinished
// item was heard, so the conversation holds only the words the user heard.
function stopPlayback(truncate) {
  if (!audio) return;
  const now = audio.context.currentTime;
  const cut = new Map();
  for (const s of playback.sources) {
    if (s.start + s.duration > now) cut.set(s.itemId, true);
  }
  const heard = new Map([...cut.keys()].map((id) => [id, heardMs(id)]));
  for (const s of playback.sources) { try { s.node.stop(); } catch { /* not started */ } }
  playback.sources.clear();
  playback.nextTime = 0;
  if (heard.size) logEvent("page", { type: "playback.stopped", truncate });
  for (const [itemId, ms] of heard) {
    const item = playback.items.get(itemId);
    item.stopped = true;
    if (truncate) truncateItem(itemId, ms);
  }
  updateButtons();
}

// A truncate waits for the end of the item's response (the server truncates finished items).
const pendingTruncates = new Map();
function truncateItem(itemId, ms) {
  const event = { type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: ms };
  if ([...responses.values()].some((r) => r.itemId === itemId && !r.done)) pendingTruncates.set(itemId, event);
  else send(event);
}

// ---------------------------------------------------------------- the session socket
let socket = null;
let wanted = false; // the user started the conversation (and has not ended it)
let attempt = 0;
let retryTimer = null;
let sessionLive = false;
let opened = false;
const responses = new Map(); // response id -> { itemId, done }
let outbox = []; // typed messages waiting for the session

function live() { return Boolean(socket) && socket.readyState === WebSocket.OPEN && sessionLive; }
function pushToTalk() { return els.mode.value === "push-to-talk"; }

function send(event) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  if (event.type !== "input_audio_buffer.append") logEvent("out", event);
  socket.send(JSON.stringify(event));
  return true;
}

function connect() {
  clearTimeout(retryTimer);
  const protocols = ["realtime"];
  if (apiKey) protocols.push(`openai-insecure-api-key.${apiKey}`);
  // A reconnection keeps saying why it is needed, until the session is live again.
  setStatus(attempt ? "reconnecting" : "connecting", attempt ? `Reconnecting… (${closeWhy})` : "Connecting…");
  const ws = new WebSocket(REALTIME, protocols);
  socket = ws;
  opened = false;
  sessionLive = false;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (message) => { if (ws === socket) onServerEvent(JSON.parse(message.data)); };
  ws.onclose = (close) => { if (ws === socket) onClose(close); };
  updateButtons();
}

function closeSocket() {
  const ws = socket;
  socket = null;
  sessionLive = false;
  if (ws) ws.close(1000, "the user ended the conversation");
}

async function onClose(close) {
  socket = null;
  sessionLive = false;
  responses.clear();
  stopPlayback(false);
  updateButtons();
  if (!wanted) return;
  if (!opened) {
    // Refused before the upgrade: the browser does not say why; a 401 is the one we can fix.
    try { await getJSON("config"); } catch (error) {
      if (error.status === 401) { askForKey(Boolean(apiKey)); wanted = false; updateButtons(); return; }
    }
  }
  const why = CLOSE_REASONS[close.code] || close.reason || "the connection closed";
  closeWhy = `${why}, ${close.code}`;
  const delay = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
  attempt++;
  setStatus("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s: ${why} (${close.code}).`);
  if (close.code === 1013 || close.code === 1011) showError(`${why} (${close.code})${lastError ? `: ${lastError}` : ""}`);
  retryTimer = setTimeout(() => { if (wanted) connect(); }, delay);
}

let lastError = "";
let closeWhy = ""; // why the last connection closed, while reconnecting
function onServerEvent(event) {
  if (event.type !== "response.output_audio.delta") logEvent("in", event);
  switch (event.type) {
    case "session.created":
      send({ type: "session.update", session: sessionConfig() });
      if (conversationId) break; // the server starts from the stored conversation
      // A new server session knows nothing: give it the conversation so far.
      for (const m of history.filter((h) => h.content)) {
        const type = m.role === "user" ? "input_text" : "output_text";
        send({ type: "conversation.item.create", item: { type: "message", role: m.role, content: [{ type, text: m.content }] } });
      }
      break;
    case "session.updated":
      if (!sessionLive) {
        sessionLive = true;
        attempt = 0;
        lastError = "";
        if (els.error.hidden === false && /unavailable|lost|restarting|failed/.test(els.errorText.textContent)) clearError();
        for (const text of outbox.splice(0)) sendText(text);
      }
      setStatus("live", listeningText());
      updateButtons();
      break;
    case "input_audio_buffer.speech_started":
      // Barge-in: the user speaks over the reply. Silence it now; the server interrupts the
      // response itself (response.done, cancelled, turn_detected).
      if (playing()) stopPlayback(true);
      setText(bubble(event.item_id, "user"), "", true);
      setStatus("live", "Listening…");
      break;
    case "input_audio_buffer.committed":
      if (!bubbles.has(event.item_id)) setText(bubble(event.item_id, "user"), "", true);
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const b = bubble(event.item_id, "user");
      setText(b, b.text + event.delta, true);
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const b = bubble(event.item_id, "user");
      const text = (event.transcript || "").trim();
      setText(b, text || "(nothing heard)");
      settle(b, text);
      break;
    }
    case "conversation.item.added":
      if (event.item?.role === "assistant" && !bubbles.has(event.item.id) && replyingItem(event.item.id)) bubble(event.item.id, "assistant");
      break;
    case "response.created":
      responses.set(event.response.id, { itemId: null, done: false });
      setStatus("live", "Thinking…");
      updateButtons();
      break;
    case "response.output_item.added": {
      const r = responses.get(event.response_id);
      if (r) r.itemId = event.item.id;
      bubble(event.item.id, "assistant");
      break;
    }
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta": {
      const b = bubble(event.item_id, "assistant");
      setText(b, b.text + event.delta);
      setStatus("live", "Replying…");
      break;
    }
    case "response.output_audio.delta":
      window.chorusMetrics.audioDeltas++;
      play(event.item_id, fromBase64(event.delta));
      break;
    case "chorus.response.image.progress": {
      const b = replyBubble(event.response_id);
      if (!b) break;
      let bar = b.el.querySelector("progress");
      if (!bar) {
        bar = document.createElement("progress");
        bar.setAttribute("aria-label", "Drawing the picture");
        b.el.append(bar);
      }
      bar.max = event.total_steps || 1;
      bar.value = event.step;
      break;
    }
    case "chorus.response.image.done": {
      const b = event.item_id ? bubble(event.item_id, "assistant") : replyBubble(event.response_id);
      if (!b) break;
      b.el.querySelector("progress")?.remove();
      const image = document.createElement("img");
      image.src = `data:image/png;base64,${event.png_base64}`;
      image.alt = `Picture: ${event.prompt || "drawn for this reply"}`;
      image.width = event.width;
      image.height = event.height;
      b.el.append(image);
      break;
    }
    case "response.done": {
      const response = event.response;
      const r = responses.get(response.id) ?? { itemId: response.output?.[0]?.id };
      r.done = true;
      responses.delete(response.id);
      const item = response.output?.[0];
      const part = item?.content?.[0];
      if (item && bubbles.has(item.id)) {
        const b = bubbles.get(item.id);
        b.el.querySelector("progress")?.remove();
        const text = (part?.transcript ?? part?.text ?? b.text).trim();
        if (response.status === "completed") setText(b, text);
        settle(b, text || b.text);
        if (response.status !== "completed") {
          b.el.dataset.status = response.status_details?.reason || response.status;
          b.el.append(Object.assign(document.createElement("div"), { className: "note", textContent: response.status_details?.reason === "turn_detected" ? "(interrupted)" : response.status === "failed" ? `(failed: ${response.status_details?.error?.message || "unknown"})` : "(stopped)" }));
        }
      }
      const truncate = item && pendingTruncates.get(item.id);
      if (truncate) { pendingTruncates.delete(item.id); send(truncate); }
      if (response.status === "failed") showError(`The reply failed: ${response.status_details?.error?.message || "unknown error"}`);
      setStatus("live", listeningText());
      updateButtons();
      break;
    }
    case "conversation.item.truncated": {
      // What the user heard of an interrupted reply stays; the rest is shown dimmed, and the
      // history keeps only the heard words (as the server's conversation does).
      const b = bubbles.get(event.item_id);
      if (!b || typeof event.transcript !== "string") break;
      const heard = event.transcript.trim();
      const words = b.text.trim().split(/\s+/).filter(Boolean);
      const kept = heard ? heard.split(/\s+/).length : 0;
      const rest = words.slice(kept).join(" ");
      const unheard = Object.assign(document.createElement("span"), { className: "unheard", textContent: rest ? ` ${rest}` : "" });
      unheard.title = "not heard: cut when you interrupted";
      b.el.querySelector(".text").replaceChildren(words.slice(0, kept).join(" "), unheard);
      settle(b, heard);
      break;
    }
    case "error":
      lastError = event.error?.message || "unknown error";
      showError(`Chorus: ${lastError}`);
      setStatus(sessionLive ? "live" : "error", `Error: ${lastError}`);
      break;
    default:
      break;
  }
}

function replyingItem(itemId) { return [...responses.values()].some((r) => r.itemId === itemId || r.itemId === null); }
function replyBubble(responseId) {
  const r = responses.get(responseId);
  return r && r.itemId ? bubble(r.itemId, "assistant") : null;
}
function listeningText() {
  if (audio?.problem) return "Live: type your message (no microphone).";
  return pushToTalk() ? "Live: hold “Hold to talk” (or Space on it) to speak." : "Live: listening, speak any time.";
}

function updateButtons() {
  els.start.textContent = wanted ? "End conversation" : "Start conversation";
  els.start.setAttribute("aria-pressed", String(wanted));
  const active = [...responses.values()].some((r) => !r.done);
  els.stop.disabled = !(active || playing());
  els.talk.disabled = !live() || Boolean(audio?.problem);
  document.body.dataset.playing = String(playing());
}
function updateMode() { els.talk.hidden = !pushToTalk(); }

// ---------------------------------------------------------------- controls
async function begin() {
  if (needsKey) { askForKey(false); return; }
  wanted = true;
  attempt = 0;
  clearError();
  const started = startAudio(); // in the click's gesture: the AudioContext may start
  await ensureConversation();
  connect();
  await started;
  if (live()) setStatus("live", listeningText());
  updateButtons();
}
function end() {
  wanted = false;
  clearTimeout(retryTimer);
  closeSocket();
  stopAudio();
  outbox = [];
  setStatus("idle", "Conversation ended. Press “Start conversation” to talk again.");
  updateButtons();
}
els.start.addEventListener("click", () => (wanted ? end() : begin()));

// Stop: cancel the reply being made and silence what plays, truncated to what was heard.
function stopReply() {
  const active = [...responses.entries()].find(([, r]) => !r.done);
  if (active) send({ type: "response.cancel", response_id: active[0] });
  stopPlayback(true);
}
els.stop.addEventListener("click", stopReply);
document.addEventListener("keydown", (e) => { if (e.key === "Escape") stopReply(); });

function sendText(text) {
  const id = `item_${crypto.getRandomValues(new Uint32Array(3)).join("").slice(0, 24)}`;
  const b = bubble(id, "user");
  setText(b, text);
  settle(b, text);
  send({ type: "conversation.item.create", item: { id, type: "message", role: "user", content: [{ type: "input_text", text }] } });
  send({ type: "response.create" });
}

els.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.text.value.trim();
  if (!text) return;
  els.text.value = "";
  if (playing() || [...responses.values()].some((r) => !r.done)) stopReply();
  if (live()) sendText(text);
  else {
    outbox.push(text);
    if (!wanted) begin();
  }
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); els.composer.requestSubmit(); }
});

// Push to talk: hold the button (pointer), or Space / Enter while it has focus. Pressing stops a
// reply that plays; releasing commits what was said and asks for the answer.
function talkDown() {
  if (talking || !live()) return;
  if (playing() || [...responses.values()].some((r) => !r.done)) stopReply();
  talking = true;
  talkStarted = performance.now();
  send({ type: "input_audio_buffer.clear" });
  els.talk.setAttribute("aria-pressed", "true");
  setStatus("live", "Listening (release to send)…");
}
function talkUp() {
  if (!talking) return;
  talking = false;
  els.talk.setAttribute("aria-pressed", "false");
  if (performance.now() - talkStarted < 200) { // the server refuses commits under 100 ms
    send({ type: "input_audio_buffer.clear" });
    setStatus("live", "Too short: hold the button while you speak.");
    return;
  }
  send({ type: "input_audio_buffer.commit" });
  send({ type: "response.create" });
  setStatus("live", "Thinking…");
}
els.talk.addEventListener("pointerdown", (e) => { e.preventDefault(); els.talk.setPointerCapture?.(e.pointerId); talkDown(); });
els.talk.addEventListener("pointerup", talkUp);
els.talk.addEventListener("pointercancel", talkUp);
els.talk.addEventListener("keydown", (e) => {
  if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); talkDown(); }
});
els.talk.addEventListener("keyup", (e) => {
  if (e.key === " " || e.key === "Enter") { e.preventDefault(); talkUp(); }
});
els.talk.addEventListener("blur", talkUp);
els.talk.addEventListener("click", (e) => e.preventDefault());

// ---------------------------------------------------------------- start
updateMode();
renderHistory();
updateButtons();
loadServerSettings();
