/**
 * The one bounded wait of the test suite: poll a condition until it holds or the time is up.
 *
 * @module
 */

/**
 * Resolves once `test()` returns a value other than undefined/false; rejects after `ms`.
 * The bound is a hang guard: a test asserts what the value is, never how soon it came.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { waitFor } from "./wait.ts";
 *
 * let calls = 0;
 * assert.equal(await waitFor("the third call", () => ++calls === 3 && calls), 3);
 * await assert.rejects(waitFor("never", () => false, 50), /timed out after 50 ms waiting for never/);
 * ```
 *
 * @param what What is awaited, for the timeout message.
 * @param test The condition; its first truthy-enough value is returned.
 * @param ms Hang guard.
 * @returns That value.
 */
export async function waitFor<T>(
  what: string,
  test: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = await test();
    if (value !== undefined && value !== false) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}
