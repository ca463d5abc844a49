import assert from "node:assert/strict";
import { metric, portOf, scrape, startEchoService } from "../_support/harness.ts";
import { startTrio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { numberedStream, untilEcho } from "../_support/ops_util.ts";

const DRAIN_MS = 3000;
const OPENED = 'ztna_connector_flows_opened_total{protocol="udp"}';
const ACTIVE = 'ztna_connector_flows_active{protocol="udp"}';

Deno.test("connector drain: new flows go to the other connector, existing flows run out the drain", async () => {
  const echo = await startEchoService();
  await using trio = await startTrio({
    connectors: 2,
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    relay: { drain_ms: 2000 },
    connector: { drain_ms: DRAIN_MS },
    processes: [echo.proc],
  });
  const { connectors } = trio;
  const agent = { proc: trio.agent, port: portOf(trio.listen[0]) };
  // startTrio waited for both connectors to register.
  const stream = numberedStream(agent.port, 10);
  await waitFor("the stream flowing", () => stream.received >= 20);
  const active = await Promise.all(
    connectors.map(async (c) => metric(await scrape(String(c.ready.metrics)), ACTIVE)),
  );
  const drainingIndex = active.indexOf(1);
  assert.ok(drainingIndex >= 0, `one connector serves the stream: ${active}`);
  const draining = connectors[drainingIndex];
  const other = connectors[1 - drainingIndex];
  const openedBefore = await Promise.all(
    connectors.map(async (c) => metric(await scrape(String(c.ready.metrics)), OPENED)),
  );

  const signalled = performance.now();
  const firstSeqInDrain = stream.lastEchoed + 1;
  const exited = draining.stop("SIGTERM", DRAIN_MS + 5000).then((code) => ({
    code,
    ms: performance.now() - signalled,
  }));
  await draining.waitForLog((l) => l.msg === "shutdown requested");
  await new Promise((r) => setTimeout(r, 100)); // the deregister reaches the relay

  // New flows (new local source addresses) all land on the other connector.
  for (let i = 0; i < 4; i++) {
    assert.ok(await untilEcho(agent.port, 3000) !== null, `new flow ${i} during the drain`);
  }
  const drainingOpened = metric(await scrape(String(draining.ready.metrics)), OPENED);
  const otherOpened = metric(await scrape(String(other.ready.metrics)), OPENED);
  assert.equal(drainingOpened, openedBefore[drainingIndex], "no new flow on the draining one");
  assert.ok(otherOpened >= openedBefore[1 - drainingIndex] + 4, "new flows on the other one");

  const { code, ms: exitMs } = await exited;
  assert.equal(code, 0, "draining connector exit code");
  // A lower bound only (timers fire late, never early): the existing flow got the whole
  // drain period. How soon after it the process exits is not judged; stop()'s guard
  // catches a hang.
  assert.ok(exitMs >= DRAIN_MS - 100, `exited after ${exitMs.toFixed(0)} ms: flows cut early`);

  // After the drain the stream re-opens through the other connector.
  const resumeFrom = stream.lastEchoed;
  await waitFor("the stream resuming", () => stream.lastEchoed >= resumeFrom + 20, 5000);
  const report = await stream.stop();
  // Every datagram sent during the drain period (less a margin for the close) came back.
  const drainEnd = signalled + DRAIN_MS - 200;
  const lostInDrain =
    report.sentAt.filter((at, seq) =>
      seq >= firstSeqInDrain && at <= drainEnd && !report.echoedAt.has(seq)
    ).length;
  assert.equal(lostInDrain, 0, "datagrams of the existing flow lost during the drain");
  assert.ok(
    !agent.proc.logs.some((l) => l.msg === "service down"),
    "no service_down",
  );
  console.log(
    `connector drain: exit 0 after ${exitMs.toFixed(0)} ms (drain ${DRAIN_MS} ms); ` +
      `existing flow lost ${lostInDrain} during the drain, ${report.lost} of ${report.sent} ` +
      `overall, longest gap ${report.maxGapMs.toFixed(0)} ms (the move after the drain)`,
  );
});
