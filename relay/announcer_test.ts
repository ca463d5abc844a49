import assert from "node:assert/strict";
import { createAnnouncer } from "./announcer.ts";

function harness(agents: string[]) {
  let t = 0;
  const timers: { at: number; fn: () => void }[] = [];
  const sent: string[] = [];
  const up = new Map<string, boolean>();
  const objects = agents.map((name) => ({ name }));
  const announcer = createAnnouncer<{ name: string }>({
    agents: () => objects,
    visible: (_agent, service) => up.get(service) ?? false,
    tell: (agent, type, service) => sent.push(`${agent.name} ${type} ${service}`),
    now: () => t,
    schedule: (fn, ms) => timers.push({ at: t + ms, fn }),
  });
  const advance = (ms: number) => {
    t += ms;
    for (const timer of timers.splice(0).sort((a, b) => a.at - b.at)) {
      if (timer.at <= t) timer.fn();
      else timers.push(timer);
    }
  };
  return { announcer, sent, up, advance, timers };
}

Deno.test("announcer: a flipping service costs at most one announcement per agent per interval", () => {
  const h = harness(["a1", "a2"]);
  h.up.set("echo", true);
  // 770 flips inside 4 s: at most one flush per second, each telling only the net change.
  for (let i = 0; i < 770; i++) {
    h.up.set("echo", i % 2 === 1);
    h.announcer.changed("echo");
    if (i % 192 === 0) h.advance(1000);
  }
  h.advance(1000);
  assert.ok(h.sent.length <= 2 * 5, `sent ${h.sent.length}`);
  // Agents start out assuming "up"; the last state (up) is what they end with.
  const last = (agent: string) => h.sent.filter((line) => line.startsWith(agent)).at(-1);
  assert.ok(last("a1") === undefined || last("a1") === "a1 service_up echo");
});

Deno.test("announcer: only changes from what an agent was told go out; flushNow is immediate", () => {
  const h = harness(["a1"]);
  h.up.set("echo", true);
  h.announcer.changed("echo");
  h.advance(0);
  assert.deepEqual(h.sent, [], "up is what agents assume: nothing to say");
  h.up.set("echo", false);
  h.announcer.flushNow(["echo"]);
  assert.deepEqual(h.sent, ["a1 service_down echo"]);
  h.announcer.flushNow(["echo"]);
  assert.equal(h.sent.length, 1, "told once");
  h.up.set("echo", true);
  h.announcer.changed("echo");
  h.advance(999);
  assert.equal(h.sent.length, 1, "within the interval of the last flush: not yet");
  h.advance(1);
  assert.deepEqual(h.sent, ["a1 service_down echo", "a1 service_up echo"]);
});
