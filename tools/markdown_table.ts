/**
 * A Markdown table laid out the way `deno fmt` lays it out, so generated docs stay
 * fmt-clean without running the formatter.
 *
 * @module
 */

/**
 * Formats a table: cells padded to their column's width, `|` in cells escaped.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { markdownTable } from "./markdown_table.ts";
 *
 * assert.equal(
 *   markdownTable(["Key", "Meaning"], [["a", "x | y"]]),
 *   "| Key | Meaning |\n| --- | ------- |\n| a   | x \\| y  |\n",
 * );
 * ```
 *
 * @param header The column titles.
 * @param rows The cells, one array per row, as many cells as titles.
 * @returns The table, ending in a newline.
 */
export function markdownTable(header: readonly string[], rows: readonly string[][]): string {
  for (const row of rows) {
    if (row.length !== header.length) {
      throw new RangeError(
        `Cannot format table as 'row' must have ${header.length} cells: current value is ${row.length}`,
      );
    }
  }
  const escaped = [header, ...rows].map((row) =>
    row.map((cell) => cell.replaceAll("|", "\\|").replaceAll("\n", " "))
  );
  const widths = header.map((_, column) =>
    Math.max(3, ...escaped.map((row) => [...row[column]].length))
  );
  const line = (cells: readonly string[]) =>
    `| ${
      cells.map((cell, column) => cell + " ".repeat(widths[column] - [...cell].length)).join(" | ")
    } |`;
  const [head, ...body] = escaped;
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n") + "\n";
}
