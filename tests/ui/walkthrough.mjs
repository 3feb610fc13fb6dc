// A signed-in user's visit: sign in, search, open a repository, an index and its images, an image
// with its layers, config and referrers, copy the pull command, delete a tag (after confirming),
// and sign out. Hostile labels and annotations must show as text.
import { assert, assertSafe, fixture, listed, scenario, shoot, signIn, step, url, visitor } from "./lib.mjs";

await scenario("walkthrough", async (browser) => {
  const page = await visitor(browser);

  step("anonymous visitors are sent to sign in");
  await page.goto(url("/ui/"));
  await page.waitForURL(url("/ui/login?next=%2Fui%2F"));
  await shoot(page, "sign-in");

  step("sign in and see every repository");
  await signIn(page, "admin");
  assert.deepEqual(await listed(page), [
    "bob/tool", "infra/cache", "infra/db", "team/app", "team/multi", "team/web",
  ]);
  await shoot(page, "repositories");

  step("query strings are never markup");
  const hostile = `"><script>alert("q")</script><img src=x onerror=alert(2)>`;
  await page.goto(url(`/ui/?q=${encodeURIComponent(hostile)}`));
  assert.equal(await page.getByRole("searchbox").inputValue(), hostile.toLowerCase());
  assert.match(await page.locator("p.count").textContent(), /0 repositories matching/);
  await assertSafe(page);
  await page.goto(url(`/ui/r/team/app?deleted=${encodeURIComponent(hostile)}`));
  assert.equal(await page.getByRole("status").count(), 0, "only a real reference is echoed");
  const refused = await page.goto(url(`/ui/r/team/app/-/delete?tag=${encodeURIComponent(hostile)}`));
  assert.equal(refused.status(), 400);
  await assertSafe(page);
  await page.goto(url("/ui/"));

  step("search");
  await page.getByRole("searchbox").fill("multi");
  await page.getByRole("button", { name: "Search" }).click();
  assert.deepEqual(await listed(page), ["team/multi"]);
  assert.equal(await page.getByRole("searchbox").inputValue(), "multi");
  await shoot(page, "search");

  step("a repository with a multi-platform index");
  await page.getByRole("link", { name: "team/multi" }).click();
  await page.waitForURL(url("/ui/r/team/multi"));
  const row = page.locator("tr[data-tag='1.0']");
  assert.match(await row.textContent(), /index/);
  assert.deepEqual(await row.locator("ul.platforms li").allTextContents(), [
    "linux/amd64", "linux/arm64",
  ]);
  assert.equal(await row.locator(".badge").textContent(), "immutable", "kept by the rule");
  assert.equal(await row.getByRole("link", { name: "Delete" }).count(), 0);
  assert.equal(await row.locator("td[data-label=Pulled]").textContent(), "never");

  step("the index and one of its images");
  await row.getByRole("link", { name: "1.0" }).click();
  assert.equal(await page.getByTestId("digest").textContent(), fixture.digests.multi);
  const platforms = page.locator("section", { hasText: "Platforms" }).locator("tbody tr");
  assert.equal(await platforms.count(), 2);
  await shoot(page, "index");
  await platforms.filter({ hasText: "linux/arm64" }).getByRole("link").click();
  assert.equal(await page.getByTestId("digest").textContent(), fixture.digests.arm64);
  assert.equal(await page.locator("section.layers tbody tr").count(), 2, "config and one layer");

  step("a repository's tags");
  await page.goto(url("/ui/r/team/app"));
  const tags = await page.locator("tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.tag));
  assert.deepEqual(tags.sort(), [
    "old", `sha256-${fixture.digests.app.slice("sha256:".length)}.sig`, "v1",
  ].sort());
  await shoot(page, "tags");

  step("an image: layers, config, labels, annotations, referrers");
  await page.locator("tr[data-tag='v1']").getByRole("link", { name: "v1" }).click();
  assert.equal(await page.getByTestId("digest").textContent(), fixture.digests.app);
  assert.equal(await page.locator("section.layers tbody tr").count(), 3, "config and two layers");
  const labels = page.locator("table.labels");
  assert.equal(await labels.locator("tr", { hasText: "evil" }).locator("td").textContent(),
    fixture.hostile.label);
  assert.equal(
    await page.locator("table.annotations tr", { hasText: "note" }).locator("td").textContent(),
    fixture.hostile.annotation);
  assert.ok((await page.locator("ul.env li").allTextContents()).includes(fixture.hostile.env));
  const facts = await page.locator("section.config dl").textContent();
  assert.match(facts, /Entrypoint\/app\/run\.sh/);
  assert.match(facts, /Command--serve 'it'\\''s here'/);
  const referrers = page.locator("section.referrers");
  assert.equal(await referrers.locator("h3").textContent(), fixture.signatureType);
  assert.equal(await referrers.locator("li a").count(), 1);
  await shoot(page, "image");

  step("copy the pull command");
  const pull = `docker pull 127.0.0.1:${fixture.port}/team/app:v1`;
  const command = page.locator(".command", { hasText: "docker pull" });
  await command.getByRole("button", { name: "Copy" }).click();
  // The button says so once the clipboard has taken the text (the click only starts that).
  await command.getByRole("button", { name: "Copied" }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), pull);

  step("the signature refers back to its image");
  await referrers.locator("li a").click();
  assert.equal(await page.getByTestId("digest").textContent(), fixture.digests.signature);
  assert.ok((await page.locator("dl.facts").first().textContent())
    .includes(`Artifact type${fixture.signatureType}`));
  assert.equal(await page.locator("section.config").count(), 0, "an empty config shows nothing");
  await page.getByRole("link", { name: fixture.digests.app }).click();
  assert.equal(await page.getByTestId("digest").textContent(), fixture.digests.app);

  step("delete a tag, after confirming");
  await page.goto(url("/ui/r/team/app"));
  await page.locator("tr[data-tag='old']").getByRole("link", { name: "Delete" }).click();
  assert.match(await page.locator("main").textContent(), /This deletes the tag team\/app:old/);
  await shoot(page, "confirm-delete");
  await page.getByRole("link", { name: "Cancel" }).click();
  assert.equal(await page.locator("tr[data-tag='old']").count(), 1, "cancel keeps the tag");
  await page.locator("tr[data-tag='old']").getByRole("link", { name: "Delete" }).click();
  await page.getByRole("button", { name: "Delete" }).click();
  await page.waitForURL(url("/ui/r/team/app?deleted=old"));
  assert.equal(await page.getByRole("status").textContent(), "Deleted old.");
  assert.equal(await page.locator("tr[data-tag='old']").count(), 0, "the tag is gone");
  assert.equal(await page.locator("tr[data-tag='v1']").count(), 1);
  await shoot(page, "deleted");

  step("sign out");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(url("/ui/login?next=%2Fui%2F"));
  await page.goto(url("/ui/r/team/app"));
  await page.waitForURL(url("/ui/login?next=%2Fui%2Fr%2Fteam%2Fapp"));
});
