// What every browser scenario shares: the fixture the Rust test wrote, Chromium launched the way
// this machine allows (Debian's build, no sandbox as root, no background traffic), and checks
// that each page is safe and fits a phone.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

export { assert };
export const fixture = JSON.parse(process.env.STOWAGE_UI_FIXTURE);
export const url = (path) => `${fixture.url}${path}`;

const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 900 };

/** Runs `scenario` with a fresh browser; prints each step, fails the process on any error. */
export async function scenario(name, body) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    await body(browser);
    console.log(`${name}: passed`);
  } catch (err) {
    console.error(`${name}: FAILED`);
    console.error(err);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

/** A new visitor: its own cookies, a desktop-sized window, and a record of any dialog. */
export async function visitor(browser, { javaScript = true } = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, javaScriptEnabled: javaScript });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: fixture.url });
  const page = await context.newPage();
  page.dialogs = [];
  page.on("dialog", async (dialog) => {
    page.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  // Blocked scripts and styles show as console errors; failed loads of anything but the page
  // itself (whose status the scenarios check) as responses.
  page.problems = [];
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      page.problems.push(message.text());
    }
  });
  page.on("response", (response) => {
    if (response.request().resourceType() !== "document" && response.status() >= 400) {
      page.problems.push(`${response.status()} for ${response.url()}`);
    }
  });
  return page;
}

export function step(text) {
  console.log(`  - ${text}`);
}

/** Signs in through the form; fails unless it lands on `landing`. */
export async function signIn(page, user, landing = "/ui/") {
  await page.goto(url("/ui/login"));
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password or token").fill(fixture.users[user]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(url(landing));
  assert.equal(await page.getByTestId("user").textContent(), user);
}

/** The repository names listed on the page in view. */
export async function listed(page) {
  return page.locator("ul.repositories a").allTextContents();
}

/** Screenshots the page at a desktop's width, then at a phone's, where nothing may overflow. */
export async function shoot(page, name) {
  await assertSafe(page);
  await page.screenshot({ path: `${fixture.screenshots}/${name}.png`, fullPage: true });
  await page.setViewportSize(PHONE);
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  assert.ok(overflow <= 1, `${name} is ${overflow}px wider than a phone's screen`);
  await page.screenshot({ path: `${fixture.screenshots}/${name}-phone.png`, fullPage: true });
  await page.setViewportSize(DESKTOP);
}

/** Nothing a repository holds ran: no dialog, no element or script but our own. */
export async function assertSafe(page) {
  assert.deepEqual(page.dialogs, [], "a dialog opened");
  assert.deepEqual(page.problems, [], "something on the page failed to load or was blocked");
  const injected = await page.evaluate(() => ({
    scripts: [...document.scripts].map((s) => s.getAttribute("src")),
    images: document.images.length,
    handlers: [...document.querySelectorAll("*")].filter((e) =>
      [...e.attributes].some((a) => a.name.startsWith("on"))).length,
  }));
  assert.equal(injected.scripts.length, 1, `scripts: ${injected.scripts}`);
  assert.match(injected.scripts[0], /^\/ui\/static\/app\.js/);
  assert.equal(injected.images, 0, "an image element was injected");
  assert.equal(injected.handlers, 0, "an event handler attribute was injected");
}
