/**
 * Test helpers for the protocol tests: seeded randomness so failures reproduce.
 *
 * @module
 */

/**
 * Returns a deterministic random source in [0, 1) (mulberry32).
 *
 * @param seed Any 32-bit integer.
 * @returns The random source.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Shuffles `items` in place (Fisher-Yates) and returns it.
 *
 * @param items The array.
 * @param random The random source.
 * @returns `items`.
 */
export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}
