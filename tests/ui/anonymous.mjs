// With anonymous pull on, anyone browses without signing in, and sees no delete button; failed
// sign-ins count towards the registry's lockout (three allowed here).
import { assert, fixture, listed, scenario, shoot, step, url, visitor } from "./lib.mjs";

await scenario("anonymous", async (browser) => {
  const page = await visitor(browser);

  step("anonymous visitors browse");
  await page.goto(url("/ui/"));
  assert.equal(page.url(), url("/ui/"));
  assert.ok((await listed(page)).includes("team/app"));
  assert.equal(await page.getByRole("link", { name: "Sign in" }).count(), 1);
  await page.goto(url("/ui/r/team/app"));
  assert.equal(await page.locator("a.danger").count(), 0);
  await shoot(page, "tags-anonymous");

  step("deleting asks them to sign in");
  await page.goto(url("/ui/r/team/app/-/delete?tag=v1"));
  await page.waitForURL(/\/ui\/login\?next=/);

  step("failed sign-ins lock out");
  for (let attempt = 1; attempt <= 3; attempt++) {
    await page.goto(url("/ui/login"));
    await page.getByLabel("User name").fill("reader");
    await page.getByLabel("Password or token").fill(`wrong-${attempt}`);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === "POST"),
      page.getByRole("button", { name: "Sign in" }).click(),
    ]);
    assert.equal(answer.status(), 401);
    assert.equal(await page.getByRole("alert").textContent(), "wrong user name or password");
  }
  await page.getByLabel("User name").fill("reader");
  await page.getByLabel("Password or token").fill(fixture.users.reader);
  const [locked] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST"),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
  assert.equal(locked.status(), 429, "even the right password waits out the lockout");
  assert.match(await page.getByRole("alert").textContent(), /too many failed sign-ins/);
  await shoot(page, "sign-in-locked");
});
