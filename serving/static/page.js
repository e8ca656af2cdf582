// The listening page of `us8k serve`: sends a file or a recording to POST /invocations?windows=true
// and to POST /log_mel, and draws what they answer. No feature is computed here: the spectrogram is
// the exported model's own log_mel signature, run by the endpoint.
"use strict";

(() => {
  const UNDETERMINED = "undetermined";
  const MAX_RECORD_SECONDS = 60; // 60 s of 48 kHz 16-bit mono WAV stay under the 6 MiB body limit
  const CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79"];
  const UNDETERMINED_COLOUR = "#9a9a9a";
  const $ = (id) => document.getElementById(id);

  const state = {
    meta: null, // GET /metadata
    answer: null, // the prediction /invocations answered
    threshold: 0.6,
    duration: 0, // seconds of the clip shown
    samples: null, // Float32Array for the waveform, when the browser could decode it
    logMel: null, // the /log_mel answer
    logMelError: null, // why there is none
    recorder: null,
    busy: false,
  };

  class PageError extends Error {}

  // ------------------------------------------------------------------ talking to the endpoint

  const STATUS_TEXT = {
    400: "The endpoint could not use this sound",
    401: "The endpoint needs a token (it runs with --auth-token-file); this page works with an endpoint without one",
    404: "The endpoint has no such route",
    413: "Too large for the endpoint",
    415: "The endpoint cannot read this format",
    500: "The endpoint failed on this sound",
    501: "Not available on this endpoint",
    503: "The endpoint is busy or shutting down",
  };

  function oneLine(text, limit = 400) {
    const line = String(text).replace(/\s+/g, " ").trim();
    return line.length > limit ? line.slice(0, limit - 1) + "…" : line;
  }

  async function call(path, options) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      throw new PageError("Cannot reach the endpoint: is us8k serve still running? (" + oneLine(error.message, 120) + ")");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.error === "string" ? oneLine(body.error) : "no readable message";
      const what = STATUS_TEXT[response.status] || "The endpoint refused the request";
      throw new PageError(what + " (" + response.status + "): " + detail);
    }
    if (body === null || typeof body !== "object") {
      throw new PageError("The endpoint's answer (" + response.status + ") was not the JSON this page expects.");
    }
    return body;
  }

  // ------------------------------------------------------------------ status and errors

  function setStatus(text) { $("status").textContent = text; }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    setStatus("Nothing classified: see the message below.");
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function describe(error) {
    if (error instanceof PageError) return error.message;
    return "Something went wrong on this page: " + oneLine(error && error.message ? error.message : error, 200);
  }

  function setBusy(busy) {
    state.busy = busy;
    $("file-input").disabled = busy;
    if (!state.recorder) $("record-button").disabled = busy;
  }

  // ------------------------------------------------------------------ classifying

  async function classify(blob, contentType, name) {
    if (state.busy) return;
    clearError();
    const meta = state.meta;
    if (meta && blob.size > meta.max_body_bytes) {
      showError("Too large for the endpoint: " + name + " is " + (blob.size / 1048576).toFixed(1) +
        " MiB, and the endpoint takes at most " + (meta.max_body_bytes / 1048576).toFixed(0) + " MiB per request.");
      return;
    }
    if (blob.size === 0) {
      showError("The file " + name + " is empty.");
      return;
    }
    setBusy(true);
    setStatus("Classifying " + name + "…");
    try {
      const body = await blob.arrayBuffer();
      const headers = {"Content-Type": contentType};
      const predicted = call("/invocations?windows=true", {method: "POST", headers, body});
      const features = call("/log_mel", {method: "POST", headers, body}).then(
        (answer) => ({answer}), (error) => ({error}));
      const decoded = decodeForDisplay(body.slice(0));
      const answer = await predicted;
      const prediction = answer && Array.isArray(answer.predictions) ? answer.predictions[0] : null;
      if (!prediction || typeof prediction.probabilities !== "object") {
        throw new PageError("The endpoint's answer holds no prediction.");
      }
      state.answer = prediction;
      state.samples = await decoded;
      const logMel = await features;
      state.logMel = logMel.answer || null;
      state.logMelError = logMel.error ? describe(logMel.error) : null;
      state.duration = state.samples ? state.samples.length / state.samples.rate
        : (state.logMel ? state.logMel.duration_s : windowsDuration(prediction));
      $("source-name").textContent = "for " + name;
      $("result").hidden = false;
      render();
      drawLogMel();
      setStatus("Classified " + name + ".");
    } catch (error) {
      $("result").hidden = true;
      showError(describe(error));
    } finally {
      setBusy(false);
    }
  }

  function windowsDuration(prediction) {
    const windows = prediction.windows || [];
    const meta = state.meta || {window_seconds: 4, hop_seconds: 2};
    return windows.length ? windows[windows.length - 1].start_s + meta.window_seconds : meta.window_seconds;
  }

  // The waveform is drawn from the browser's own decoding (display only); the model's input is what
  // the endpoint decodes. A format the browser cannot decode still gets its prediction.
  async function decodeForDisplay(buffer) {
    try {
      const context = new OfflineAudioContext(1, 1, 22050);
      const audio = await context.decodeAudioData(buffer);
      const samples = audio.getChannelData(0);
      samples.rate = audio.sampleRate;
      return samples;
    } catch (error) {
      return null;
    }
  }

  // ------------------------------------------------------------------ drawing the answer

  function labelAt(probabilities, threshold) {
    let top = null;
    let best = -1;
    for (const [name, p] of Object.entries(probabilities)) {
      if (p > best) { best = p; top = name; }
    }
    return {label: best < threshold ? UNDETERMINED : top, top, confidence: best};
  }

  function colourOf(label) {
    const names = state.meta ? state.meta.class_names : [];
    const index = names.indexOf(label);
    return index < 0 ? UNDETERMINED_COLOUR : CLASS_COLOURS[index % CLASS_COLOURS.length];
  }

  function percent(p) { return (100 * p).toFixed(1) + "%"; }

  function render() {
    const prediction = state.answer;
    if (!prediction) return;
    const threshold = state.threshold;
    const {label, top, confidence} = labelAt(prediction.probabilities, threshold);
    const labelBox = $("label");
    labelBox.textContent = label;
    labelBox.classList.toggle("undetermined", label === UNDETERMINED);
    $("confidence").textContent = label === UNDETERMINED
      ? "(top: " + top + ", " + percent(confidence) + ", below the threshold " + threshold.toFixed(2) + ")"
      : "(" + percent(confidence) + ")";
    renderBars(prediction.probabilities, top, threshold);
    drawWaveform();
    renderTimeline(prediction, threshold);
  }

  function renderBars(probabilities, top, threshold) {
    const list = $("bars");
    list.replaceChildren();
    list.style.setProperty("--threshold", String(threshold));
    const names = state.meta ? state.meta.class_names : Object.keys(probabilities);
    for (const name of names) {
      const p = probabilities[name] || 0;
      const item = document.createElement("li");
      if (name === top) item.classList.add("top");
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = (100 * p).toFixed(2) + "%";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = percent(p);
      item.append(label, track, value);
      list.append(item);
    }
  }

  function canvasContext(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    return {context, width, height};
  }

  function drawWaveform() {
    const canvas = $("waveform");
    const {context, width, height} = canvasContext(canvas);
    const samples = state.samples;
    if (!samples) {
      $("waveform-note").textContent = "This browser cannot decode the format to draw it; the endpoint could.";
      canvas.setAttribute("aria-label", "Waveform not shown");
      return;
    }
    $("waveform-note").textContent = state.duration.toFixed(1) + " s";
    canvas.setAttribute("aria-label", "Waveform of " + state.duration.toFixed(1) + " seconds");
    context.fillStyle = "#123a9e";
    const middle = height / 2;
    const perColumn = samples.length / width;
    for (let x = 0; x < width; x++) {
      let low = 0;
      let high = 0;
      const end = Math.min(samples.length, Math.floor((x + 1) * perColumn));
      for (let i = Math.floor(x * perColumn); i < end; i++) {
        const v = samples[i];
        if (v < low) low = v;
        if (v > high) high = v;
      }
      const top = middle - high * middle;
      context.fillRect(x, top, 1, Math.max(1, (high - low) * middle));
    }
  }

  function renderTimeline(prediction, threshold) {
    const windows = Array.isArray(prediction.windows) ? prediction.windows : [];
    $("timeline-block").hidden = windows.length === 0;
    const list = $("timeline");
    list.replaceChildren();
    const meta = state.meta || {window_seconds: 4, hop_seconds: 2};
    const duration = Math.max(state.duration, 1e-6);
    windows.forEach((window, k) => {
      const start = window.start_s;
      const end = k + 1 < windows.length ? windows[k + 1].start_s : Math.min(duration, start + meta.window_seconds);
      const {label, confidence} = labelAt(window.probabilities || {}, threshold);
      const item = document.createElement("li");
      item.style.left = (100 * start / duration) + "%";
      item.style.width = Math.max(0.5, 100 * (Math.max(end, start) - start) / duration) + "%";
      item.style.background = colourOf(label);
      item.title = start.toFixed(1) + " s: " + label + " (" + percent(confidence) + ")";
      const text = document.createElement("span");
      text.className = "visually-hidden";
      text.textContent = item.title;
      item.append(text);
      list.append(item);
    });
    const legend = $("timeline-legend");
    legend.replaceChildren();
    for (const label of new Set(windows.map((window) => labelAt(window.probabilities || {}, threshold).label))) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colourOf(label);
      swatch.setAttribute("aria-hidden", "true");
      item.append(swatch, label);
      legend.append(item);
    }
    const segments = Array.isArray(prediction.segments) ? prediction.segments : [];
    const threshold0 = state.meta ? state.meta.threshold : threshold;
    $("segments-note").textContent = segments.length
      ? "Runs of windows with the same confident label, as the endpoint found them at its threshold " +
        threshold0.toFixed(2) + ":"
      : "No event: no window reached the endpoint's threshold " + threshold0.toFixed(2) + ".";
    const events = $("segments");
    events.replaceChildren();
    const track = $("segment-track");
    track.replaceChildren();
    for (const segment of segments) {
      const block = document.createElement("li");
      block.style.left = (100 * segment.start_s / duration) + "%";
      block.style.width = Math.max(0.5, 100 * (segment.end_s - segment.start_s) / duration) + "%";
      block.style.background = colourOf(segment.label);
      block.title = segment.label + ": " + segment.start_s.toFixed(1) + "–" + segment.end_s.toFixed(1) + " s";
      const text = document.createElement("span");
      text.className = "visually-hidden";
      text.textContent = block.title;
      block.append(text);
      track.append(block);
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colourOf(segment.label);
      swatch.setAttribute("aria-hidden", "true");
      item.append(swatch, segment.label + ": " + segment.start_s.toFixed(1) + "–" + segment.end_s.toFixed(1) +
        " s, confidence " + percent(segment.confidence));
      events.append(item);
    }
  }

  // A dark-to-bright ramp (black, purple, orange, pale yellow) for the features' 8-bit values.
  const RAMP = (() => {
    const stops = [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]];
    const table = new Uint8ClampedArray(256 * 3);
    for (let v = 0; v < 256; v++) {
      const position = v / 255 * (stops.length - 1);
      const i = Math.min(stops.length - 2, Math.floor(position));
      const f = position - i;
      for (let c = 0; c < 3; c++) table[3 * v + c] = stops[i][c] + f * (stops[i + 1][c] - stops[i][c]);
    }
    return table;
  })();

  function drawLogMel() {
    const errorMessage = state.logMelError;
    const canvas = $("log-mel");
    const note = $("log-mel-note");
    const {context, width, height} = canvasContext(canvas);
    const answer = state.logMel;
    if (!answer) {
      note.textContent = "Not shown: " + (errorMessage || "the endpoint sent no features.");
      canvas.setAttribute("aria-label", "Log-mel spectrogram not shown");
      return;
    }
    const [windows, frames, mels] = answer.log_mel.shape;
    const bytes = Uint8Array.from(atob(answer.log_mel.b64), (c) => c.charCodeAt(0));
    const gap = 2; // columns between windows
    const image = new ImageData(windows * frames + (windows - 1) * gap, mels);
    for (let w = 0; w < windows; w++) {
      for (let t = 0; t < frames; t++) {
        const x = w * (frames + gap) + t;
        for (let m = 0; m < mels; m++) {
          const v = bytes[(w * frames + t) * mels + m];
          const offset = 4 * ((mels - 1 - m) * image.width + x); // low mels at the bottom
          image.data[offset] = RAMP[3 * v];
          image.data[offset + 1] = RAMP[3 * v + 1];
          image.data[offset + 2] = RAMP[3 * v + 2];
          image.data[offset + 3] = 255;
        }
      }
    }
    const source = document.createElement("canvas");
    source.width = image.width;
    source.height = image.height;
    source.getContext("2d").putImageData(image, 0, 0);
    context.imageSmoothingEnabled = true;
    context.drawImage(source, 0, 0, width, height);
    const shown = answer.windows_shown;
    let text = shown + (shown === 1 ? " window" : " windows") + " of " + answer.window_seconds +
      " s side by side (one every " + answer.hop_seconds + " s), " + frames + " frames × " + mels +
      " mel bands each, normalised as the model takes them; low frequencies at the bottom.";
    const covered = answer.window_seconds + (answer.window_count - 1) * answer.hop_seconds;
    if (!answer.capped && covered > answer.duration_s + 0.01) {
      text += " The last window runs past the clip's " + answer.duration_s.toFixed(1) +
        " s: the model sees silence there.";
    }
    if (answer.capped) {
      text += " Only the first " + shown + " of the clip's " + answer.window_count +
        " windows are shown: the endpoint computes features for at most " +
        (state.meta ? state.meta.log_mel_max_windows : shown) + " windows per clip.";
    }
    note.textContent = text;
    canvas.setAttribute("aria-label", "Log-mel spectrogram of " + shown + " windows");
  }

  // ------------------------------------------------------------------ the threshold slider

  function setThreshold(value) {
    state.threshold = Math.min(1, Math.max(0, value));
    $("threshold").value = String(state.threshold);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    render();
  }

  // ------------------------------------------------------------------ recording (16-bit WAV)

  function encodeWav(chunks, rate) {
    const length = chunks.reduce((n, chunk) => n + chunk.length, 0);
    const buffer = new ArrayBuffer(44 + 2 * length);
    const view = new DataView(buffer);
    const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
    text(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); text(8, "WAVE");
    text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
    view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
    view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * length, true);
    let offset = 44;
    for (const chunk of chunks) {
      for (let i = 0; i < chunk.length; i++, offset += 2) {
        const v = Math.max(-1, Math.min(1, chunk[i]));
        view.setInt16(offset, v < 0 ? v * 0x8000 : v * 0x7fff, true);
      }
    }
    return new Blob([buffer], {type: "audio/wav"});
  }

  async function startRecording() {
    clearError();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("Recording needs a secure page: open it at http://localhost or http://127.0.0.1, or over https.");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({audio: {
        echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1}});
    } catch (error) {
      showError("The microphone is not available (" + oneLine(error.name || error.message, 80) +
        "): allow this page to use it, or choose a file instead.");
      return;
    }
    const context = new AudioContext();
    await context.resume();
    const source = context.createMediaStreamSource(stream);
    const processor = context.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    processor.onaudioprocess = (event) => { chunks.push(new Float32Array(event.inputBuffer.getChannelData(0))); };
    source.connect(processor);
    processor.connect(context.destination); // silent: the output buffer is never written
    const started = performance.now();
    const timer = setInterval(() => {
      const seconds = (performance.now() - started) / 1000;
      $("record-time").textContent = seconds.toFixed(0) + " s of " + MAX_RECORD_SECONDS + " s";
      if (seconds >= MAX_RECORD_SECONDS) stopRecording();
    }, 250);
    state.recorder = {stream, context, source, processor, chunks, timer};
    const button = $("record-button");
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
    $("file-input").disabled = true;
    setStatus("Recording… press Stop recording to classify it.");
  }

  async function stopRecording() {
    const recorder = state.recorder;
    if (!recorder) return;
    state.recorder = null;
    clearInterval(recorder.timer);
    recorder.source.disconnect();
    recorder.processor.disconnect();
    recorder.stream.getTracks().forEach((track) => track.stop());
    const rate = recorder.context.sampleRate;
    await recorder.context.close();
    const button = $("record-button");
    button.textContent = "Record from the microphone";
    button.setAttribute("aria-pressed", "false");
    $("record-time").textContent = "";
    $("file-input").disabled = false;
    if (!recorder.chunks.length) {
      showError("The recording holds no sound: the microphone sent nothing.");
      return;
    }
    const seconds = recorder.chunks.reduce((n, chunk) => n + chunk.length, 0) / rate;
    await classify(encodeWav(recorder.chunks, rate), "audio/wav", "a " + seconds.toFixed(1) + " s recording");
  }

  // ------------------------------------------------------------------ wiring

  async function loadMetadata() {
    try {
      const meta = await call("/metadata");
      state.meta = meta;
      $("model-info").textContent = meta.class_names.length + " classes; the served model's threshold is " +
        meta.threshold.toFixed(2) + "; up to " + meta.max_seconds + " s of audio and " +
        (meta.max_body_bytes / 1048576).toFixed(0) + " MiB per request.";
      setThreshold(meta.threshold);
    } catch (error) {
      $("model-info").textContent = "The endpoint did not describe its model.";
      showError(describe(error));
    }
  }

  function setUp() {
    $("file-input").addEventListener("change", (event) => {
      const file = event.target.files && event.target.files[0];
      if (file) classify(file, "application/octet-stream", file.name);
    });
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) classify(file, "application/octet-stream", file.name);
    });
    $("record-button").addEventListener("click", () => {
      (state.recorder ? stopRecording() : startRecording()).catch((error) => showError(describe(error)));
    });
    $("threshold").addEventListener("input", (event) => setThreshold(Number(event.target.value)));
    $("threshold-reset").addEventListener("click", () => setThreshold(state.meta ? state.meta.threshold : 0.6));
    window.addEventListener("resize", () => {
      if (state.answer) { drawWaveform(); drawLogMel(); }
    });
    window.addEventListener("unhandledrejection", (event) => showError(describe(event.reason)));
    loadMetadata();
  }

  setUp();
})();
