// The demo page: POST /explain, then show the label, the probabilities and the highlighted words;
// POST /predict with sentences, then show each sentence coloured by its label.
// Everything from the server goes into the page as text (textContent), never as HTML.
"use strict";

const SUPPORTS = "234, 120, 30";
const AGAINST = "40, 110, 220";

const SENTENCE_COLOURS = { positive: "46, 160, 67", negative: "207, 34, 46", neutral: "140, 149, 159" };

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function showProbabilities(probabilities, best) {
  const table = $("probabilities");
  table.replaceChildren();
  const rows = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of rows) {
    const row = element("tr", label === best ? "best" : "");
    row.dataset.label = label;
    const bar = element("div", "bar");
    bar.style.width = percent(p);
    const cell = element("td");
    cell.append(bar);
    row.append(element("td", "name", label), cell, element("td", "value", percent(p)));
    table.append(row);
  }
}

function showTokens(text, tokens, label) {
  // The original text, with each token's characters wrapped in a span coloured by its contribution.
  const out = $("tokens");
  out.replaceChildren();
  const scale = Math.max(1e-6, ...tokens.map((t) => Math.abs(t.contribution)));
  let at = 0;
  for (const t of tokens) {
    if (t.start < at) continue; // overlapping spans cannot happen, but never duplicate text
    if (t.start > at) out.append(text.slice(at, t.start));
    const word = element("span", "tok", text.slice(t.start, t.end));
    const strength = Math.abs(t.contribution) / scale;
    const rgb = t.contribution >= 0 ? SUPPORTS : AGAINST;
    word.style.background = `rgba(${rgb}, ${(0.85 * strength).toFixed(3)})`;
    word.dataset.contribution = t.contribution.toFixed(4);
    const towards = t.contribution >= 0 ? "towards" : "away from";
    word.title = `${t.token}: ${t.contribution.toFixed(3)} log-odds ${towards} ${label}`;
    out.append(word);
    at = t.end;
  }
  if (at < text.length) out.append(text.slice(at));
}

function showSentences(text, prediction) {
  // The original text, each sentence's characters (text.slice(start, end)) coloured by its label.
  const out = $("sentences");
  out.replaceChildren();
  let at = 0;
  for (const s of prediction.sentences) {
    if (s.start < at) continue;
    if (s.start > at) out.append(text.slice(at, s.start));
    const node = element("span", `sentence ${s.label}`, text.slice(s.start, s.end));
    const rgb = SENTENCE_COLOURS[s.label] || SENTENCE_COLOURS.neutral;
    node.style.background = `rgba(${rgb}, ${(0.15 + 0.55 * s.score).toFixed(3)})`;
    node.dataset.label = s.label;
    node.title = `${s.label} ${percent(s.score)}`;
    out.append(node);
    at = s.end;
  }
  if (at < text.length) out.append(text.slice(at));
  const count = prediction.sentences.length;
  const mixed = prediction.mixed ? " · mixed: its sentences disagree" : "";
  $("sentences-note").textContent = `${count} sentence${count === 1 ? "" : "s"}${mixed}`;
  $("sentences-section").hidden = false;
}

async function sentences(text, headers) {
  // Best effort: the words above are the main answer; without sentences the section stays hidden.
  $("sentences-section").hidden = true;
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers,
      body: JSON.stringify({ texts: [text], sentences: true }),
    });
    if (response.ok) showSentences(text, (await response.json()).predictions[0]);
  } catch {
    // network error: nothing to show
  }
}

function showResult(text, body) {
  const e = body.explanations[0];
  $("label").textContent = e.label;
  $("score").textContent = percent(e.score);
  showProbabilities(e.probabilities, e.label);
  showTokens(text, e.tokens, e.label);
  for (const node of document.querySelectorAll(".label-name")) node.textContent = e.label;
  const cut = e.truncated ? " · text cut at the model's maximum length" : "";
  $("model").textContent = `model ${body.model.name} · version ${body.model.version}${cut}`;
  $("result").hidden = false;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.message || (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function analyse(event) {
  event.preventDefault();
  const text = $("text").value;
  const headers = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers["x-api-key"] = key;
  $("submit").disabled = true;
  $("error").hidden = true;
  try {
    const response = await fetch("/explain", {
      method: "POST",
      headers,
      body: JSON.stringify({ texts: [text] }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    showResult(text, await response.json());
    await sentences(text, headers);
  } catch (err) {
    $("error").textContent = err.message;
    $("error").hidden = false;
  } finally {
    $("submit").disabled = false;
  }
}

$("form").addEventListener("submit", analyse);
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("form").requestSubmit();
});
