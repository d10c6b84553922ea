// Chorus web interface: plain JavaScript, no dependencies, no build step.
// Talks to the gateway next to it: POST ../turns (Server-Sent Events), GET ../voices, GET ../config.
"use strict";

const API = new URL("../", window.location.href); // /api/
const HISTORY_KEY = "chorus.history";
const SETTINGS_KEY = "chorus.settings";

const $ = (id) => document.getElementById(id);
const els = {
  chat: $("chat"), text: $("text"), send: $("send"), mic: $("mic"), keep: $("keep-listening"),
  status: $("status"), error: $("error"), errorText: $("error-text"), voice: $("voice"),
  imageMode: $("image-mode"), language: $("language"), speak: $("speak"), apiKey: $("api-key"),
  player: $("player"), composer: $("composer"),
};

// Turn limits (max_text_chars, max_history_messages, max_history_chars) and max_upload_bytes come
// from the gateway's /api/config, which has the turn limits from the orchestrator's settings: no
// numbers of our own to drift. Until they arrive nothing is trimmed here; the gateway still refuses.
let limits = {};
let history = loadJSON(HISTORY_KEY, []);
let busy = false;
let currentTurn = null; // AbortController of the turn in flight

function loadJSON(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; }
}

// ---------------------------------------------------------------- errors and status
function showError(message) {
  els.errorText.textContent = message;
  els.error.hidden = false;
}
function clearError() { els.error.hidden = true; els.errorText.textContent = ""; }
$("error-close").addEventListener("click", clearError);
function setStatus(text) { els.status.textContent = text; }

function authHeaders() {
  const key = els.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function describeHttpError(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch { /* not JSON */ }
  const hints = {
    401: "The gateway wants an API key (Settings → API key).",
    413: "That recording or message is too large.",
    429: "Chorus is busy or a limit was reached; try again shortly.",
    503: "Chorus cannot answer right now.",
    504: "Chorus took too long to answer.",
  };
  return hints[response.status] ? `${hints[response.status]} (${message})` : message;
}

// ---------------------------------------------------------------- settings
function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify({
    voice: els.voice.value, imageMode: els.imageMode.value, language: els.language.value,
    speak: els.speak.checked,
  }));
}
function restoreSettings() {
  const s = loadJSON(SETTINGS_KEY, {});
  if (s.imageMode) els.imageMode.value = s.imageMode;
  if (s.language !== undefined) els.language.value = s.language;
  if (s.speak !== undefined) els.speak.checked = s.speak;
  return s;
}
for (const el of [els.voice, els.imageMode, els.language, els.speak]) el.addEventListener("change", saveSettings);
$("settings-form").addEventListener("submit", (e) => e.preventDefault());

async function loadVoices(saved) {
  try {
    const response = await fetch(new URL("voices", API), { headers: authHeaders() });
    if (!response.ok) throw new Error(await describeHttpError(response));
    const { voices } = await response.json();
    for (const v of voices) {
      const option = new Option(`${v.name || v.id} (${v.language})`, v.id);
      els.voice.add(option);
    }
    if (saved.voice && voices.some((v) => v.id === saved.voice)) els.voice.value = saved.voice;
  } catch (error) {
    showError(`Could not load the voices: ${error.message}`);
  }
}

async function loadConfig() {
  try {
    const response = await fetch(new URL("config", API), { headers: authHeaders() });
    if (response.ok) limits = await response.json();
    if (limits.max_text_chars) els.text.maxLength = limits.max_text_chars;
    trimHistory();
  } catch { /* no limits known: the gateway's answer says which one was broken */ }
}

// ---------------------------------------------------------------- chat rendering
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
function renderHistory() {
  els.chat.replaceChildren();
  for (const m of history) addMessage(m.role, m.content);
}
function remember(userText, replyText) {
  if (!userText || !replyText) return;
  history.push({ role: "user", content: userText }, { role: "assistant", content: replyText });
  trimHistory();
}
// Drop the oldest exchanges until the history fits the turn's limits (count and characters).
function trimHistory() {
  const maxMessages = limits.max_history_messages ?? Infinity;
  const maxChars = limits.max_history_chars ?? Infinity;
  let chars = history.reduce((n, m) => n + m.content.length, 0);
  while (history.length && (history.length > maxMessages || chars > maxChars)) {
    for (const m of history.splice(0, 2)) chars -= m.content.length;
  }
  localStorage.setItem(HISTORY_KEY, JSON.stringify(history));
}

$("new-conversation").addEventListener("click", () => {
  if (currentTurn) currentTurn.abort();
  history = [];
  localStorage.removeItem(HISTORY_KEY);
  stopAudio();
  els.chat.replaceChildren();
  clearError();
  setStatus("New conversation");
  els.text.focus();
});

// ---------------------------------------------------------------- audio playback queue
const audioQueue = [];
let playing = false;
function base64ToBlob(b64, type) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}
function enqueueAudio(chunk) {
  const types = { AUDIO_ENCODING_MP3: "audio/mpeg", AUDIO_ENCODING_OGG_OPUS: "audio/ogg", AUDIO_ENCODING_FLAC: "audio/flac" };
  audioQueue.push(URL.createObjectURL(base64ToBlob(chunk.audio, types[chunk.encoding] || "audio/wav")));
  if (!playing) playNext();
}
function playNext() {
  const url = audioQueue.shift();
  if (!url) { playing = false; onSpeechDone(); return; }
  playing = true;
  els.player.src = url;
  els.player.play().catch((error) => {
    playing = false;
    showError(`The reply audio could not play: ${error.message}`);
  });
}
els.player.addEventListener("ended", () => { URL.revokeObjectURL(els.player.src); playNext(); });
function stopAudio() {
  audioQueue.splice(0).forEach((u) => URL.revokeObjectURL(u));
  els.player.pause();
  playing = false;
}

// ---------------------------------------------------------------- one turn
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

function turnOptions() {
  return {
    history,
    voice: els.voice.value,
    image_mode: els.imageMode.value,
    language: els.language.value,
    text_only: !els.speak.checked,
  };
}

async function runTurn(body, headers, userBubble) {
  if (busy) return;
  busy = true;
  clearError();
  stopAudio();
  els.send.disabled = true;
  setStatus("Thinking…");
  const controller = new AbortController();
  currentTurn = controller;
  let userText = userBubble.dataset.text || "";
  let reply = null;
  let replyText = "";
  let image = null;
  const replyBubble = () => {
    if (!reply) reply = addMessage("assistant");
    return reply;
  };
  try {
    const response = await fetch(new URL("turns", API), {
      method: "POST", body, headers: { ...headers, ...authHeaders() }, signal: controller.signal,
    });
    if (!response.ok) throw new Error(await describeHttpError(response));
    for await (const { event, data } of readEvents(response)) {
      switch (event) {
        case "transcript_partial":
          userBubble.querySelector(".text").innerHTML = "";
          userBubble.querySelector(".text").append(Object.assign(document.createElement("span"), { className: "partial", textContent: data.text }));
          break;
        case "transcript_final":
          userText = data.text.trim();
          userBubble.querySelector(".text").textContent = userText || "(nothing heard)";
          userBubble.dataset.text = userText;
          break;
        case "reply_delta":
          replyText += data.text;
          replyBubble().querySelector(".text").textContent = replyText;
          setStatus("Replying…");
          break;
        case "reply_final":
          replyText = data.text;
          replyBubble().querySelector(".text").textContent = replyText;
          break;
        case "image_progress": {
          const bubble = replyBubble();
          let bar = bubble.querySelector("progress");
          if (!bar) {
            bar = document.createElement("progress");
            bar.setAttribute("aria-label", "Drawing the picture");
            bubble.append(bar);
          }
          bar.max = data.total_steps || 1;
          bar.value = data.step;
          setStatus(`Drawing… ${data.step}/${data.total_steps}`);
          break;
        }
        case "image_result": {
          const bubble = replyBubble();
          bubble.querySelector("progress")?.remove();
          image = document.createElement("img");
          image.src = `data:image/png;base64,${data.png}`;
          image.alt = `Picture: ${data.prompt}`;
          image.width = data.width;
          image.height = data.height;
          bubble.append(image);
          break;
        }
        case "audio_chunk":
          enqueueAudio(data);
          break;
        case "turn_timings":
          setStatus(`Done in ${data.total_seconds.toFixed(1)} s`);
          break;
        case "error": {
          const where = (data.stage || "").replace("STAGE_", "").toLowerCase();
          const text = `${data.fatal ? "The turn failed" : "Part of the turn failed"}${where && where !== "unspecified" ? ` (${where})` : ""}: ${data.message}`;
          if (data.fatal) showError(text);
          else replyBubble().append(Object.assign(document.createElement("div"), { className: "note", textContent: text }));
          if (where === "image") replyBubble().querySelector("progress")?.remove();
          break;
        }
        default:
          break;
      }
    }
    remember(userText, replyText);
  } catch (error) {
    if (error.name === "AbortError") return;
    const message = error instanceof TypeError
      ? "Cannot reach the Chorus gateway (is it running?)."
      : error.message;
    showError(message);
    setStatus("");
  } finally {
    busy = false;
    currentTurn = null;
    els.send.disabled = false;
    if (!playing) onSpeechDone();
  }
}

els.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.text.value.trim();
  if (!text || busy) return;
  els.text.value = "";
  const bubble = addMessage("user", text);
  bubble.dataset.text = text;
  runTurn(JSON.stringify({ ...turnOptions(), text }), { "Content-Type": "application/json" }, bubble);
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); els.composer.requestSubmit(); }
});

// ---------------------------------------------------------------- microphone
let stream = null;
let recorder = null;
let chunks = [];
let vad = null;

async function microphone() {
  if (stream) return stream;
  if (!navigator.mediaDevices?.getUserMedia) throw new Error("This browser cannot record audio here (it needs https or localhost).");
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (error) {
    const denied = error.name === "NotAllowedError" || error.name === "SecurityError";
    throw new Error(denied ? "Microphone access was denied. Allow it in the browser to talk to Chorus." : `No microphone: ${error.message}`);
  }
  return stream;
}

function recorderType() {
  for (const type of ["audio/webm;codecs=opus", "audio/webm", "audio/mp4"]) {
    if (window.MediaRecorder && MediaRecorder.isTypeSupported(type)) return type;
  }
  return "";
}

async function startRecording() {
  if (busy || recorder) return;
  clearError();
  try {
    const input = await microphone();
    chunks = [];
    const type = recorderType();
    recorder = new MediaRecorder(input, type ? { mimeType: type } : {});
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = sendRecording;
    recorder.start(250);
    els.mic.setAttribute("aria-pressed", "true");
    setStatus("Listening…");
  } catch (error) {
    recorder = null;
    els.keep.checked = false;
    showError(error.message);
  }
}

function stopRecording() {
  if (recorder && recorder.state !== "inactive") recorder.stop();
  els.mic.setAttribute("aria-pressed", "false");
}

function sendRecording() {
  const type = recorder?.mimeType || "audio/webm";
  recorder = null;
  const blob = new Blob(chunks, { type });
  chunks = [];
  if (blob.size < 200) { setStatus("Nothing recorded"); onSpeechDone(); return; }
  if (blob.size > (limits.max_upload_bytes ?? Infinity)) { showError("That recording is too long to send."); return; }
  const form = new FormData();
  form.append("audio", blob, type.includes("mp4") ? "speech.m4a" : "speech.webm");
  form.append("options", JSON.stringify(turnOptions()));
  const bubble = addMessage("user", "…");
  bubble.querySelector(".text").replaceChildren(Object.assign(document.createElement("span"), { className: "partial", textContent: "(transcribing)" }));
  runTurn(form, {}, bubble);
}

// Push to talk: hold the button with the mouse/touch, or hold Space/Enter while it has focus.
els.mic.addEventListener("pointerdown", (e) => { e.preventDefault(); els.mic.setPointerCapture?.(e.pointerId); startRecording(); });
els.mic.addEventListener("pointerup", () => { if (!els.keep.checked) stopRecording(); });
els.mic.addEventListener("pointercancel", () => { if (!els.keep.checked) stopRecording(); });
els.mic.addEventListener("keydown", (e) => {
  if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); startRecording(); }
});
els.mic.addEventListener("keyup", (e) => {
  if ((e.key === " " || e.key === "Enter") && !els.keep.checked) { e.preventDefault(); stopRecording(); }
});
els.mic.addEventListener("click", (e) => e.preventDefault());

// Keep listening: record whenever speech is heard, send after a pause, listen again after the reply.
const SILENCE_MS = 900;
const THRESHOLD = 0.02;
async function startListening() {
  try {
    const input = await microphone();
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(input).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    let lastVoice = 0;
    vad = { context, timer: setInterval(() => {
      if (busy || playing) return;
      analyser.getFloatTimeDomainData(samples);
      const rms = Math.sqrt(samples.reduce((a, x) => a + x * x, 0) / samples.length);
      const now = performance.now();
      if (rms > THRESHOLD) {
        lastVoice = now;
        if (!recorder) startRecording();
      } else if (recorder && now - lastVoice > SILENCE_MS) {
        stopRecording();
      }
    }, 50) };
    setStatus("Listening (speak any time)");
  } catch (error) {
    els.keep.checked = false;
    showError(error.message);
  }
}
function stopListening() {
  if (vad) { clearInterval(vad.timer); vad.context.close(); vad = null; }
  stopRecording();
  setStatus("");
}
els.keep.addEventListener("change", () => (els.keep.checked ? startListening() : stopListening()));
function onSpeechDone() { if (els.keep.checked && !busy) setStatus("Listening (speak any time)"); }

// ---------------------------------------------------------------- start
const saved = restoreSettings();
renderHistory();
loadConfig().then(() => loadVoices(saved));
