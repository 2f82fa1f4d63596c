// The page: upload a file to /transcribe, show and download its transcript, stream the
// microphone to /v1/realtime. No build step, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("amanuensis-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("amanuensis-key", keyInput.value));
const authHeaders = () => (keyInput.value ? { Authorization: `Bearer ${keyInput.value}` } : {});

async function showStatus() {
  try {
    const response = await fetch("/status", { headers: authHeaders() });
    const status = await response.json();
    $("model").textContent = status.model;
    $("mel-backend").textContent = status.mel_backend || "not loaded";
  } catch (error) {
    $("model").textContent = "unreachable";
  }
}

// --- file upload -----------------------------------------------------------------------
let result = null;

function clock(seconds, separator) {
  const ms = Math.round(seconds * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(Math.floor(ms / 3600000))}:${pad(Math.floor(ms / 60000) % 60)}:` +
    `${pad(Math.floor(ms / 1000) % 60)}${separator}${pad(ms % 1000, 3)}`;
}

async function transcribe(file) {
  $("upload-status").textContent = `Transcribing ${file.name}…`;
  $("transcript").replaceChildren();
  $("downloads").hidden = true;
  const form = new FormData();
  form.append("file", file);
  const response = await fetch("/transcribe", { method: "POST", body: form, headers: authHeaders() });
  const body = await response.json();
  if (!response.ok) {
    $("upload-status").textContent = `Error ${response.status}: ${body.error.message}`;
    return;
  }
  result = body;
  $("upload-status").textContent =
    `${file.name}: ${body.duration.toFixed(1)} s of audio in ${body.processing_time.toFixed(2)} s`;
  $("realtime-factor").textContent = `${body.realtime_factor.toFixed(1)}x`;
  $("mel-backend").textContent = body.mel_backend;
  for (const segment of body.segments) {
    const item = document.createElement("li");
    item.className = "segment";
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = `${clock(segment.start, ".")} → ${clock(segment.end, ".")}`;
    item.append(time, segment.text.trim());
    $("transcript").append(item);
  }
  $("downloads").hidden = false;
}

const subtitles = {
  srt: (segments) => segments.map((s, i) =>
    `${i + 1}\n${clock(s.start, ",")} --> ${clock(s.end, ",")}\n${s.text.trim()}\n`).join("\n"),
  vtt: (segments) => "WEBVTT\n\n" + segments.map((s) =>
    `${clock(s.start, ".")} --> ${clock(s.end, ".")}\n${s.text.trim()}\n`).join("\n"),
  txt: () => result.text + "\n",
};

function download(kind) {
  const blob = new Blob([subtitles[kind](result.segments)], { type: "text/plain" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `transcript.${kind}`;
  link.click();
  URL.revokeObjectURL(link.href);
}

for (const kind of Object.keys(subtitles)) $(`download-${kind}`).onclick = () => download(kind);
$("file").addEventListener("change", (event) => event.target.files[0] && transcribe(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) transcribe(event.dataTransfer.files[0]);
});

// --- microphone to /v1/realtime --------------------------------------------------------
const RATE = 24000; // OpenAI's pcm16
let live = null;

function base64Pcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 32767;
  let binary = "";
  const bytes = new Uint8Array(pcm.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function lineFor(itemId) {
  let line = document.querySelector(`#live p[data-item="${itemId}"]`);
  if (!line) {
    line = document.createElement("p");
    line.dataset.item = itemId;
    line.className = "partial";
    $("live").append(line);
  }
  return line;
}

function onEvent(event) {
  if (event.type === "conversation.item.input_audio_transcription.delta") {
    lineFor(event.item_id).textContent += event.delta;
  } else if (event.type === "conversation.item.input_audio_transcription.completed") {
    const line = lineFor(event.item_id);
    line.textContent = event.transcript;
    line.className = "final";
  } else if (event.type === "input_audio_buffer.speech_started") {
    $("mic-status").textContent = "Hearing speech…";
  } else if (event.type === "input_audio_buffer.speech_stopped") {
    $("mic-status").textContent = "Transcribing…";
  } else if (event.type === "error") {
    $("mic-status").textContent = `Error: ${event.error.message}`;
  }
}

async function startMic() {
  const media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const context = new AudioContext({ sampleRate: RATE });
  await context.audioWorklet.addModule("/web/pcm-worklet.js");
  const source = context.createMediaStreamSource(media);
  const blocks = new AudioWorkletNode(context, "pcm-blocks");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const protocols = keyInput.value ? [`openai-insecure-api-key.${keyInput.value}`] : [];
  const socket = new WebSocket(`${scheme}://${location.host}/v1/realtime`, protocols);
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = () => stopMic();
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "transcription_session.update", session: {
      input_audio_format: "pcm16", turn_detection: { type: "server_vad", silence_duration_ms: 800 } } }));
    blocks.port.onmessage = (message) => socket.readyState === WebSocket.OPEN &&
      socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64Pcm16(message.data) }));
    source.connect(blocks);
    $("mic-status").textContent = "Listening…";
  };
  live = { media, context, socket };
  $("mic").textContent = "Stop microphone";
  $("mic").setAttribute("aria-pressed", "true");
}

function stopMic() {
  if (!live) return;
  const { media, context, socket } = live;
  live = null;
  media.getTracks().forEach((track) => track.stop());
  context.close();
  if (socket.readyState <= WebSocket.OPEN) socket.close();
  $("mic").textContent = "Start microphone";
  $("mic").setAttribute("aria-pressed", "false");
  $("mic-status").textContent = "Stopped.";
}

$("mic").onclick = () => (live ? stopMic() : startMic().catch((error) => {
  $("mic-status").textContent = `Microphone unavailable: ${error.message}`;
}));

showStatus();
