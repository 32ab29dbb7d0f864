// End-to-end check of the demo page in headless Chromium, driven by playwright-core.
// Usage: node scripts/browser-test.cjs URL SCREENSHOT  (scripts/browser-test.sh sets everything up).
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const [url, screenshot] = process.argv.slice(2);
const TEXT = "the food was great but the service was terrible";
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

function check(condition, message) {
  if (!condition) throw new Error(`browser test failed: ${message}`);
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "chromium-profile-")); // a fresh user-data-dir
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 900, height: 900 },
  });
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    const origin = new URL(url).origin;
    // Anything not from the service itself (a CDN, a font, analytics) is refused and reported.
    await page.route("**/*", (route) => {
      const target = route.request().url();
      if (target.startsWith(origin) || target.startsWith("data:")) return route.continue();
      problems.push(`request to ${target}`);
      return route.abort();
    });
    page.on("console", (m) => {
      // The browser logs the deliberate 422 below as a failed resource; anything else is a problem.
      if (m.type() === "error" && !m.text().includes("status of 422")) problems.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

    await page.goto(url, { waitUntil: "load" });
    check((await page.title()).includes("sentiment"), "page title");

    // A whitespace-only text: the server's 422 message is shown, not a crash.
    await page.fill("#text", "   ");
    await page.click("#submit");
    await page.waitForSelector("#error:not([hidden])");
    const error = await page.textContent("#error");
    check(error.includes("texts.0"), `error message: ${error}`);

    await page.fill("#text", TEXT);
    await page.click("#submit");
    await page.waitForSelector("#result:not([hidden])");
    await page.waitForSelector("#error", { state: "hidden" });
    const result = await page.evaluate(() => ({
      label: document.querySelector("#label").textContent,
      score: document.querySelector("#score").textContent,
      probabilities: [...document.querySelectorAll("#probabilities tr")].map((r) => [
        r.dataset.label, r.querySelector(".value").textContent,
      ]),
      words: [...document.querySelectorAll("#tokens .tok")].map((s) => [
        s.textContent, Number(s.dataset.contribution), s.style.background,
      ]),
      shownText: document.querySelector("#tokens").textContent,
      model: document.querySelector("#model").textContent,
    }));
    check(["negative", "neutral", "positive"].includes(result.label), `label ${result.label}`);
    check(result.probabilities.length === 3, "three probability rows");
    check(result.shownText === TEXT, `highlighted text is the input: ${result.shownText}`);
    const byWord = Object.fromEntries(result.words.map(([w, c]) => [w, c]));
    check(byWord.great * byWord.terrible < 0, "great and terrible pull in opposite directions");
    await page.screenshot({ path: screenshot, fullPage: true });
    check(problems.length === 0, problems.join("; "));
    console.log(JSON.stringify({ ...result, screenshot }));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err.message || err);
  process.exit(1);
});
