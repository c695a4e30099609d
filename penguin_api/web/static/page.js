// The upload page's behaviour: preview the chosen photo, post it to /predict, show the answer.
// Plain DOM, no framework. Text from the server goes in with textContent only, never as HTML.
"use strict";

(function () {
  const form = document.getElementById("upload");
  const input = document.getElementById("file");
  const dropzone = document.getElementById("dropzone");
  const chooseLabel = dropzone.querySelector(".button");
  const preview = document.getElementById("preview");
  const canvas = document.getElementById("preview-canvas");
  const noPreview = document.getElementById("preview-none");
  const caption = document.getElementById("preview-caption");
  const result = document.getElementById("result");
  const resultBody = document.getElementById("result-body");
  const modelName = document.getElementById("model-name");
  const modelVersion = document.getElementById("model-version");

  const PREVIEW_MAX_SIDE = 640; // CSS pixels; the preview never needs more
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  let penguinThreshold = null; // from the model card, to explain "no penguin"
  let confidentThreshold = null; // from the model card, to explain "not sure"
  let inFlight = null; // AbortController of the upload being answered

  document.documentElement.classList.add("js");

  // ---- helpers ---------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showResult(state, ...children) {
    result.dataset.state = state;
    result.setAttribute("aria-busy", state === "loading" ? "true" : "false");
    resultBody.replaceChildren(...children);
  }

  // "93.1%", but never a bare "0%" or "100%" for what is merely unlikely or nearly sure.
  function pct(fraction) {
    if (fraction > 0 && fraction < 0.001) return "<" + percent.format(0.001);
    if (fraction < 1 && fraction > 0.999) return ">" + percent.format(0.999);
    return percent.format(fraction);
  }

  // Binary units, as the service counts its upload limit.
  function formatSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1048576) return (bytes / 1024).toFixed(0) + " kB";
    return (bytes / 1048576).toFixed(1) + " MB";
  }

  function setModel(model) {
    if (!model) return;
    if (model.name) modelName.textContent = model.name;
    if (model.version) modelVersion.textContent = model.version;
  }

  // ---- model name and version ------------------------------------------------
  // The server fills them in when this worker's model is loaded; otherwise ask the API.
  const footer = document.getElementById("model");
  if (footer.dataset.penguinThreshold) {
    penguinThreshold = Number(footer.dataset.penguinThreshold);
    if (footer.dataset.confidentThreshold) {
      confidentThreshold = Number(footer.dataset.confidentThreshold);
    }
  } else {
    fetch("/model", { headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((card) => {
        if (!card) return;
        setModel(card);
        const thresholds = card.thresholds || {};
        if (typeof thresholds.penguin_score === "number") penguinThreshold = thresholds.penguin_score;
        if (typeof thresholds.confident === "number") confidentThreshold = thresholds.confident;
      })
      .catch(() => {}); // the footer keeps its placeholder; uploads still work
  }

  // ---- preview -----------------------------------------------------------------
  let previewSeq = 0; // a slow decode of an earlier photo must not overwrite a later one

  async function showPreview(file) {
    const seq = ++previewSeq;
    preview.hidden = false;
    caption.textContent = file.name + " · " + formatSize(file.size);
    canvas.setAttribute("aria-label", "Preview of " + file.name);
    try {
      // Drawn on a canvas rather than an <img> with a blob: URL, so the page's
      // Content-Security-Policy can stay at 'self' only.
      const bitmap = await createImageBitmap(file);
      if (seq !== previewSeq) {
        bitmap.close();
        return;
      }
      const scale = Math.min(1, PREVIEW_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
      const ratio = window.devicePixelRatio || 1;
      canvas.width = Math.round(bitmap.width * scale * ratio);
      canvas.height = Math.round(bitmap.height * scale * ratio);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      canvas.hidden = false;
      noPreview.hidden = true;
    } catch {
      if (seq !== previewSeq) return;
      // Not decodable here (e.g. HEIC in most browsers, or not an image); the server decides.
      canvas.hidden = true;
      noPreview.hidden = false;
    }
  }

  // ---- the answer ------------------------------------------------------------------
  function topKList(topK) {
    const list = el("ol", "topk");
    for (const guess of topK || []) {
      const item = el("li", "guess");
      const label = el("span", "guess-label");
      label.append(el("span", "guess-name", guess.species), el("span", "guess-pct", pct(guess.confidence)));
      const bar = el("span", "bar");
      bar.setAttribute("aria-hidden", "true");
      const fill = el("span", "bar-fill");
      fill.style.width = Math.max(0, Math.min(100, guess.confidence * 100)) + "%";
      bar.append(fill);
      item.append(label, bar);
      list.append(item);
    }
    return list;
  }

  // Below the card's confidence threshold the answer is a lead, not a verdict: the page
  // says so in words (not by colour alone) and lists the alternatives on an equal footing.
  function showUnsure(answer, score) {
    const verdict = el("p", "verdict unsure");
    verdict.append(
      "Not sure — most likely ",
      el("span", "likely", answer.species),
      " (" + pct(answer.confidence) + ")",
    );
    const explain = el("p", "explain");
    explain.textContent =
      confidentThreshold === null
        ? "The model is not confident enough to name one species."
        : "The model names a species outright only from " + pct(confidentThreshold) +
          " confidence; compare the photo with these possibilities.";
    showResult(
      "unsure",
      verdict,
      explain,
      el("h3", "topk-heading", "Possible species"),
      topKList(answer.top_k),
      score,
    );
  }

  function showPrediction(answer) {
    setModel(answer.model);
    const score = el("p", "score", "Penguin score " + pct(answer.penguin_score));
    if (answer.is_penguin && answer.uncertain === true) {
      showUnsure(answer, score);
      return;
    }
    if (answer.is_penguin) {
      showResult(
        "penguin",
        el("p", "verdict", answer.species),
        el("p", "confidence", pct(answer.confidence) + " confident"),
        el("h3", "topk-heading", "Top guesses"),
        topKList(answer.top_k),
        score,
      );
      return;
    }
    if (penguinThreshold !== null) {
      score.textContent += " — a photo counts as a penguin from " + percent.format(penguinThreshold) + ".";
    }
    const closest = el("details", "closest");
    closest.append(el("summary", null, "Closest species anyway"), topKList(answer.top_k));
    showResult(
      "no-penguin",
      el("p", "verdict", "No penguin found"),
      el("p", "explain", "The model does not see a penguin in this photo."),
      score,
      closest,
    );
  }

  function showProblem(title, detail) {
    showResult("error", el("p", "verdict", title), el("p", "detail", detail));
  }

  // ---- upload --------------------------------------------------------------------------
  async function classify(file) {
    if (inFlight) inFlight.abort(); // only the latest photo's answer matters
    const controller = new AbortController();
    inFlight = controller;
    showResult("loading", el("p", "loading", "Looking at " + file.name + "…"));
    const body = new FormData();
    body.append("file", file, file.name);
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body,
        headers: { Accept: "application/json" },
        signal: controller.signal,
      });
      const type = response.headers.get("Content-Type") || "";
      const data = type.includes("json") ? await response.json() : null;
      if (response.ok && data) {
        showPrediction(data);
      } else if (data && data.detail) {
        showProblem(data.title || "Something went wrong", data.detail);
      } else {
        showProblem("Something went wrong", "The service answered " + response.status + " " + response.statusText + ".");
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      showProblem("Could not reach the service", "Check your connection and try again.");
    } finally {
      if (inFlight === controller) inFlight = null;
    }
  }

  function accept(file) {
    if (!file) return;
    chooseLabel.textContent = "Choose another photo";
    showPreview(file);
    // Spare a phone the upload the service would refuse anyway; the service still checks.
    const maxBytes = Number(form.dataset.maxBytes);
    if (maxBytes && file.size > maxBytes) {
      if (inFlight) inFlight.abort();
      showProblem("Upload too large", "The photo is " + formatSize(file.size) + "; the limit is " + form.dataset.maxMb + " MB.");
      return;
    }
    classify(file);
  }

  input.addEventListener("change", () => accept(input.files[0]));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    accept(input.files[0]);
  });

  // Drops anywhere on the page count; the browser must not navigate to the dropped file.
  let dragDepth = 0;
  window.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    dropzone.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropzone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    dropzone.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || files.length === 0) return;
    input.files = files; // keep the form's state in step with what is shown
    accept(files[0]);
  });
})();
