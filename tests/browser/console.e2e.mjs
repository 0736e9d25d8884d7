// The console and the feedback snippet, used as a person would, in Debian's Chromium.
// Run by tests/test_console_e2e.py, which starts a real proxy and passes the set-up as JSON in
// E2E_CONFIG; this script exits non-zero on the first failed expectation and writes what it saw
// to E2E_RESULT for the Python side to check against the ledger and the registry.
import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

const cfg = JSON.parse(process.env.E2E_CONFIG);
const proxy = cfg.proxy;
const seen = { steps: [], screenshots: [], foreignRequests: [], policyViolations: [] };
const step = (name) => { seen.steps.push(name); console.log("step:", name); };

async function chatVersion() {
  const r = await fetch(`${proxy}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${cfg.clientKey}`, "x-spec": "support" },
    body: JSON.stringify({ model: "fake-model", messages: [{ role: "user", content: "where is my parcel?" }] }),
  });
  assert.equal(r.status, 200);
  return r.headers.get("x-spec-version");
}

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
  viewport: { width: 1280, height: 860 },
});
context.setDefaultTimeout(15000);
try {
  const page = context.pages()[0] || (await context.newPage());
  // a console page fetches nothing from outside the proxy
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) seen.policyViolations.push(msg.text());
  });
  let watching = true;  // until the example pages, which live on other origins
  page.on("request", (req) => {
    if (!watching || req.isNavigationRequest() || req.url().startsWith("data:")) return;
    if (!req.url().startsWith(proxy)) seen.foreignRequests.push(req.url());
  });

  step("a wrong admin key is refused");
  let response = await page.goto(`${proxy}/console/specs`);
  assert.match(page.url(), /\/console\/login\?next=/);
  await page.fill("#key", "not-the-key");
  [response] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.equal(response.status(), 401);
  await page.getByText("That is not the admin key.").waitFor();
  await shot(page, "login");

  step("log in");
  await page.fill("#key", cfg.adminKey);
  await Promise.all([page.waitForURL(`${proxy}/console/specs`), page.click("button[type=submit]")]);
  const [cookie] = (await context.cookies()).filter((c) => c.name === "speclearn_console");
  assert.ok(cookie, "no session cookie");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(cookie.expires > Date.now() / 1000, "the cookie must expire");
  assert.equal(await page.evaluate(() => document.cookie.includes("speclearn_console")), false);  // HttpOnly
  await page.getByRole("link", { name: "support" }).first().waitFor();
  await shot(page, "specs");

  step("open a spec");
  await Promise.all([page.waitForURL(`${proxy}/console/specs/support`), page.getByRole("link", { name: "support", exact: true }).first().click()]);
  await page.locator("figure.plot svg circle").first().waitFor();
  seen.plotPoints = await page.locator("figure.plot svg circle").count();
  await shot(page, "spec");

  step("read a diff");
  await Promise.all([page.waitForURL(/\/versions\/2$/), page.getByRole("link", { name: "v2", exact: true }).first().click()]);
  seen.inserted = await page.locator(".diff ins").allTextContents();
  seen.principles = await page.locator(".principle .rule").allTextContents();
  seen.quotes = await page.locator(".principle blockquote").allTextContents();
  seen.tokens = (await page.locator("#spec-tokens").textContent()).trim();
  await shot(page, "version");

  step("promote v2 and see X-Spec-Version change");
  seen.before = await chatVersion();
  await Promise.all([page.waitForURL(/\?done=promoted$/), page.click("#promote")]);
  await page.getByText("production is now v2").waitFor();
  seen.afterPromote = await chatVersion();
  await shot(page, "version-promoted");

  step("a forged form (bad CSRF token) is refused");
  await page.evaluate(() => { document.querySelector("form[action$='/rollback'] input[name=csrf]").value = "forged"; });
  [response] = await Promise.all([page.waitForNavigation(), page.click("#rollback")]);
  assert.equal(response.status(), 403);
  await page.getByText("CSRF token").waitFor();
  seen.afterForged = await chatVersion();
  await shot(page, "forged-form");

  step("phone width");
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const [name, path] of [["specs-phone", "/console/specs"], ["spec-phone", "/console/specs/support"],
                              ["version-phone", "/console/specs/support/versions/2"]]) {
    await phone.goto(proxy + path);
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${path} scrolls sideways on a phone by ${overflow}px`);
    await shot(phone, name);
  }
  await phone.close();

  step("an expired session is refused");
  await context.clearCookies();
  const url = new URL(proxy);
  await context.addCookies([{ name: "speclearn_console", value: cfg.expiredCookie, domain: url.hostname, path: "/console",
                              httpOnly: true, sameSite: "Strict" }]);
  await page.goto(`${proxy}/console/specs/support`);
  assert.match(page.url(), /\/console\/login\?next=%2Fconsole%2Fspecs%2Fsupport$/);

  step("click the snippet's thumb on the example page");
  watching = false;
  const example = `${cfg.appOrigin}/feedback.html?proxy=${encodeURIComponent(proxy)}&key=${cfg.feedbackKey}`;
  await page.goto(`${example}&inference_id=${cfg.inferenceIds.allowed}`);
  await page.click(".speclearn-up");
  await page.getByText("Thanks!").waitFor();
  seen.feedbackId = await page.getAttribute("#thumbs", "data-feedback-id");
  await shot(page, "example");

  step("a wrong publishable key is refused");
  await page.goto(`${cfg.appOrigin}/feedback.html?proxy=${encodeURIComponent(proxy)}&key=pk-wrong&inference_id=${cfg.inferenceIds.wrongKey}`);
  await page.click(".speclearn-down");
  await page.getByText(/Not sent: missing or invalid API key/).waitFor();

  step("a disallowed origin is refused");
  await page.goto(`${cfg.evilOrigin}/feedback.html?proxy=${encodeURIComponent(proxy)}&key=${cfg.feedbackKey}&inference_id=${cfg.inferenceIds.evil}`);
  await page.click(".speclearn-up");
  await page.getByText(/Not sent/).waitFor();
  seen.evilError = await page.getAttribute("#thumbs", "data-feedback-error");
  await shot(page, "example-disallowed-origin");
} finally {
  writeFileSync(process.env.E2E_RESULT, JSON.stringify(seen, null, 2));
  await context.close();
}
