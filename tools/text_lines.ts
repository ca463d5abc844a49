/**
 * Splits a byte stream (a child's stdout) into text lines.
 *
 * @module
 */

/**
 * Yields each line of `stream` without its line ending; a last line without one is yielded
 * too.
 *
 * @example
 * ```ts
 * import { readLines } from "./text_lines.ts";
 * const stream = ReadableStream.from([new TextEncoder().encode("a\nb\r\nc")]);
 * const lines = await Array.fromAsync(readLines(stream));
 * if (lines.join() !== "a,b,c") throw new Error(lines.join());
 * ```
 */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    rest += text;
    let newline: number;
    while ((newline = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, newline).replace(/\r$/, "");
      rest = rest.slice(newline + 1);
    }
  }
  if (rest.length > 0) yield rest;
}
