// Access control in the browser: each user sees only the repositories they may pull; a pull-only
// user gets no delete button, and deletes forged around the pages are refused: a form without the
// session's CSRF token, a token of a user who may not delete, and a form on another site.
import http from "node:http";
import { assert, fixture, listed, scenario, shoot, signIn, step, url, visitor } from "./lib.mjs";

/** Serves one page, on another site (`localhost`, where the registry is `127.0.0.1`), whose
 * form deletes `team/app:v1` as soon as it loads. */
async function attacker() {
  const target = url("/ui/r/team/app/-/delete");
  const page = `<!doctype html><form id="f" method="post" action="${target}">
    <input name="tag" value="v1"><input name="csrf" value="guessed"></form>
    <script>document.getElementById("f").submit()</script>`;
  const server = http.createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end(page);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://localhost:${server.address().port}/` };
}

await scenario("access", async (browser) => {
  step("bob sees only his own repositories");
  const bob = await visitor(browser);
  await signIn(bob, "bob");
  assert.deepEqual(await listed(bob), ["bob/tool"]);
  await shoot(bob, "repositories-bob");
  const hidden = await bob.goto(url("/ui/r/team/app"));
  assert.equal(hidden.status(), 404, "another team's repository looks absent");
  const searched = await bob.goto(url("/ui/?q=team"));
  assert.equal(searched.status(), 200);
  assert.deepEqual(await listed(bob), []);

  step("a pull-only user sees no delete button");
  const reader = await visitor(browser);
  await signIn(reader, "reader");
  assert.deepEqual(await listed(reader), ["team/app", "team/multi", "team/web"]);
  await reader.goto(url("/ui/r/team/app"));
  assert.equal(await reader.locator("a.danger").count(), 0);
  await reader.locator("tr[data-tag='v1']").getByRole("link", { name: "v1" }).click();
  assert.equal(await reader.locator("a.danger").count(), 0);
  assert.equal(await reader.locator("section.danger-zone").count(), 0);
  const confirm = await reader.goto(url("/ui/r/team/app/-/delete?tag=v1"));
  assert.equal(confirm.status(), 403);
  assert.match(await reader.locator("main").textContent(), /you may not delete in team\/app/);

  step("forged delete forms are refused");
  const forged = await reader.request.post(url("/ui/r/team/app/-/delete"), {
    form: { tag: "v1", csrf: "forged" }, maxRedirects: 0,
  });
  assert.equal(forged.status(), 403);
  assert.match(await forged.text(), /not sent from this registry&#39;s pages|not sent from this registry's pages/);
  await reader.goto(url("/ui/"));
  const token = await reader.locator("input[name=csrf]").first().inputValue();
  const withToken = await reader.request.post(url("/ui/r/team/app/-/delete"), {
    form: { tag: "v1", csrf: token }, maxRedirects: 0,
  });
  assert.equal(withToken.status(), 403, "a valid token does not make a reader a deleter");
  assert.match(await withToken.text(), /you may not delete in team\/app/);

  step("another site's form cannot delete for a signed-in admin");
  const admin = await visitor(browser);
  await signIn(admin, "admin");
  const evil = await attacker();
  try {
    const [answer] = await Promise.all([
      admin.waitForResponse((r) => r.url() === url("/ui/r/team/app/-/delete")),
      admin.goto(evil.url),
    ]);
    assert.equal(answer.status(), 403);
  } finally {
    evil.server.close();
  }
  await admin.goto(url("/ui/r/team/app"));
  assert.equal(await admin.locator("tr[data-tag='v1']").count(), 1, "v1 is still there");
  assert.ok((await admin.locator("a.danger").count()) > 0, "admin may delete");

  step("everything works without JavaScript: sign in, browse, delete");
  const plain = await visitor(browser, { javaScript: false });
  await signIn(plain, "admin");
  await plain.getByRole("link", { name: "team/web" }).click();
  await plain.locator("tr[data-tag='2']").getByRole("link", { name: "Delete" }).click();
  await plain.getByRole("button", { name: "Delete" }).click();
  await plain.waitForURL(url("/ui/r/team/web?deleted=2"));
  assert.equal(await plain.locator("tbody tr").count(), 0, "the tag is gone");
  await plain.goto(url("/ui/r/team/app/-/m/" + fixture.digests.app + "?tag=v1"));
  assert.equal(await plain.locator("button.copy:visible").count(), 0, "no copy button without it");
  assert.match(await plain.locator(".command").first().textContent(), /docker pull .*team\/app:v1/);
});
