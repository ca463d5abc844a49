import assert from "node:assert/strict";
import { renderStatusPage } from "./status_page.ts";

Deno.test("renderStatusPage: every string is escaped, in text and attributes alike", () => {
  const evil = `"><script>alert(1)</script><x a='`;
  const html = renderStatusPage({
    title: evil,
    summary: [[evil, evil]],
    sections: [{
      id: evil,
      heading: evil,
      note: evil,
      tables: [{ caption: evil, className: evil, columns: [evil], rows: [[evil]] }],
    }],
  });
  assert.doesNotMatch(html, /<script/);
  assert.doesNotMatch(html, /<x /);
  assert.ok(!html.includes(evil), "the raw text appears nowhere");
  assert.ok(!html.includes(`a='`), "no attribute is broken out of");
  // title (twice: head and h1), summary pair, id, heading, note, caption, class, column, cell
  assert.equal(html.split("&lt;script&gt;").length - 1, 11);
});

Deno.test("renderStatusPage: an empty table says so; refresh must be a positive integer", () => {
  const html = renderStatusPage({
    title: "t",
    summary: [],
    sections: [{
      id: "a",
      heading: "A",
      tables: [{ caption: "c", className: "k", columns: ["x", "y"], rows: [] }],
    }],
  }, { refreshSeconds: 30 });
  assert.match(html, /<td colspan="2" class="none">none<\/td>/);
  assert.match(html, /content="30"/);
  assert.throws(
    () => renderStatusPage({ title: "t", summary: [], sections: [] }, { refreshSeconds: 0 }),
    RangeError,
  );
});
