/**
 * The `/status` page of the ops listener: plain HTML, no framework and no script. It
 * refreshes itself with `<meta http-equiv="refresh">`, so it works with JavaScript off.
 *
 * Every string it prints goes through {@linkcode escapeHtml}: identities are certificate
 * names the peer chose, and a CN like `<script>` must show as text, never run.
 *
 * @module
 */

/** One table of the page. */
export interface StatusTable {
  caption: string;
  /** A class on the table, for tools that read the DOM. */
  className: string;
  columns: string[];
  rows: string[][];
}

/** A titled part of the page with its tables. */
export interface StatusSection {
  /** Element id (escaped like the rest). */
  id: string;
  heading: string;
  note?: string;
  tables: StatusTable[];
}

/** What the page shows. */
export interface StatusPage {
  title: string;
  /** Label/value pairs at the top. */
  summary: [string, string][];
  sections: StatusSection[];
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/**
 * Escapes text for HTML element content and quoted attribute values.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeHtml } from "./status_page.ts";
 *
 * assert.equal(escapeHtml(`<img src=x onerror="alert('1')">&`),
 *   "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;");
 * ```
 *
 * @param text Any string.
 * @returns The escaped text.
 */
export function escapeHtml(text: string): string {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** Options for {@linkcode renderStatusPage}. */
export interface RenderOptions {
  /**
   * Seconds between the page's own reloads.
   * @default {5}
   */
  refreshSeconds?: number;
}

/**
 * Renders the page as a complete HTML document.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderStatusPage } from "./status_page.ts";
 *
 * const html = renderStatusPage({
 *   title: "relay",
 *   summary: [["State", "serving"]],
 *   sections: [{
 *     id: "agents",
 *     heading: "Agents",
 *     tables: [{ caption: "Agents", className: "agents", columns: ["Identity"], rows: [["<b>"]] }],
 *   }],
 * });
 * assert.match(html, /<meta http-equiv="refresh" content="5">/);
 * assert.match(html, /<td>&lt;b&gt;<\/td>/);
 * assert.doesNotMatch(html, /<script/);
 * ```
 *
 * @param page What to show.
 * @param options Refresh interval.
 * @returns The HTML document.
 */
export function renderStatusPage(page: StatusPage, options: RenderOptions = {}): string {
  const { refreshSeconds = 5 } = options;
  if (!Number.isInteger(refreshSeconds) || refreshSeconds < 1) {
    throw new RangeError(
      `Cannot render status page as 'refreshSeconds' must be a positive integer: current value is ${refreshSeconds}`,
    );
  }
  const e = escapeHtml;
  const table = (t: StatusTable) =>
    `<table class="${e(t.className)}"><caption>${e(t.caption)}</caption>` +
    `<thead><tr>${t.columns.map((c) => `<th scope="col">${e(c)}</th>`).join("")}</tr></thead>` +
    `<tbody>${
      t.rows.length === 0
        ? `<tr><td colspan="${t.columns.length}" class="none">none</td></tr>`
        : t.rows.map((r) => `<tr>${r.map((cell) => `<td>${e(cell)}</td>`).join("")}</tr>`).join(
          "",
        )
    }</tbody></table>`;
  const section = (s: StatusSection) =>
    `<section id="${e(s.id)}"><h2>${e(s.heading)}</h2>` +
    (s.note === undefined ? "" : `<p class="note">${e(s.note)}</p>`) +
    s.tables.map(table).join("\n") + `</section>`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="${refreshSeconds}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${e(page.title)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #111; }
table { border-collapse: collapse; margin: 0.5em 0 1em; min-width: 40em; }
caption { text-align: left; font-weight: 600; padding: 0.2em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
td.none { color: #777; font-style: italic; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.summary dt { font-weight: 600; }
.note { color: #444; }
</style>
</head>
<body>
<h1>${e(page.title)}</h1>
<dl class="summary">${
    page.summary.map(([k, v]) => `<dt>${e(k)}</dt><dd>${e(v)}</dd>`).join("")
  }</dl>
${page.sections.map(section).join("\n")}
<p class="note">This page reloads every ${refreshSeconds} s. Machine-readable: <a href="status.json">status.json</a></p>
</body>
</html>
`;
}
