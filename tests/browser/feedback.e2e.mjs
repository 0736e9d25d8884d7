// The feedback snippet as a person uses it, in Debian's Chromium: a thumbs-down with "what should
// be different?", a vote changed by clicking the other thumb and taken back by clicking the same
// one again. Run by tests/test_browser_feedback.py, which starts a real proxy and passes the set-up
// as JSON in E2E_CONFIG; this script exits non-zero on the first failed expectation and writes
// what it saw to E2E_RESULT for the Python side to check against the ledger.
import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

const cfg = JSON.parse(process.env.E2E_CONFIG);
const seen = { steps: [], screenshots: [], requests: [], ids: {} };
const step = (name) => { seen.steps.push(name); console.log("step:", name); };

async function shot(page, name) {
  mkdirSync(cfg.screenshots, { recursive: true });
  const path = join(cfg.screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  seen.screenshots.push(path);
}

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "speclearn-chromium-")), {
  executablePath: cfg.chromium,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 900, height: 640 },
});
context.setDefaultTimeout(15000);
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("request", (req) => {
    if (req.url().startsWith(cfg.proxy + "/v1/feedback")) seen.requests.push(`${req.method()} ${new URL(req.url()).pathname}`);
  });
  const example = (id) => `${cfg.appOrigin}/feedback.html?proxy=${encodeURIComponent(cfg.proxy)}&key=${cfg.feedbackKey}&inference_id=${id}`;
  const up = page.locator(".speclearn-up");
  const down = page.locator(".speclearn-down");
  const box = page.getByLabel("What should be different?");
  const status = page.locator(".speclearn-status");
  const pressed = async () => [await up.getAttribute("aria-pressed"), await down.getAttribute("aria-pressed")];
  const settled = async (text) => { await page.waitForFunction((t) => document.querySelector(".speclearn-status").textContent === t, text); };

  step("thumbs-down, then say what should be different");
  await page.goto(example(cfg.inferenceIds.first));
  assert.equal(await box.isVisible(), false, "no comment box before a thumbs-down");
  await down.click();
  await settled("Thanks!");
  await box.waitFor({ state: "visible" });
  seen.ids.firstVote = await page.getAttribute("#thumbs", "data-feedback-id");
  assert.deepEqual(await pressed(), ["false", "true"]);
  await box.fill(cfg.comment);
  await shot(page, "snippet-comment");
  await page.getByRole("button", { name: "Send" }).click();
  await settled("Thanks, noted.");
  assert.equal(await box.isVisible(), false);

  step("click the other thumb: the vote changes");
  await up.click();
  await settled("Thanks!");
  assert.deepEqual(await pressed(), ["true", "false"]);
  assert.equal(await page.getAttribute("#thumbs", "data-feedback-id"), seen.ids.firstVote, "a change keeps the id");
  assert.equal(await box.isVisible(), false, "no comment box after a thumbs-up");

  step("click the same thumb again: the vote is taken back");
  await up.click();
  await settled("Vote removed.");
  assert.deepEqual(await pressed(), ["false", "false"]);
  assert.equal(await page.getAttribute("#thumbs", "data-feedback-id"), null);
  await shot(page, "snippet-retracted");

  step("a second answer: up, changed to down, with a comment");
  await page.goto(example(cfg.inferenceIds.second));
  await up.click();
  await settled("Thanks!");
  seen.ids.secondVote = await page.getAttribute("#thumbs", "data-feedback-id");
  await down.click();
  await settled("Thanks!");
  assert.deepEqual(await pressed(), ["false", "true"]);
  await box.fill(cfg.secondComment);
  await box.press("Tab");
  await page.keyboard.press("Enter");  // the Send button, reached by keyboard
  await settled("Thanks, noted.");
  assert.equal(await page.getAttribute("#thumbs", "data-feedback-id"), seen.ids.secondVote);
  await shot(page, "snippet-changed");
} finally {
  writeFileSync(process.env.E2E_RESULT, JSON.stringify(seen, null, 2));
  await context.close();
}
