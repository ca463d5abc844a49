/**
 * Traces across the three hops, exported by Deno's built-in OpenTelemetry to an OTLP/HTTP
 * receiver this test runs on 127.0.0.1: the first flow setup (UDP) yields spans from agent,
 * relay (its session open: policy decision, connector choice) and connector that share one
 * trace id, linked parent to child through the `traceparent` of `session_open` and `open`;
 * the next one (TCP) rides the same end-to-end session, agent to connector; the log lines of
 * a setup carry its trace id.
 */
import assert from "node:assert/strict";
import type { Component } from "../../tools/permissions.ts";
import { portOf, startComponent, startEchoService, udpClient } from "../_support/harness.ts";
import { startTrio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { startOtlpReceiver } from "../_support/otlp_receiver.ts";
import { readAll, startEchoTrio, writeAll } from "../_support/tcp_util.ts";
import type { ReceivedSpan } from "../_support/otlp_receiver.ts";

Deno.test("trace: one flow setup exports linked spans from agent, relay and connector", async () => {
  const receiver = startOtlpReceiver();
  // The standard variables only: Deno reads them at start. JSON so the test can read it;
  // a short batch delay so the spans arrive while the processes run.
  const otel = (component: Component) => ({
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: `ztna-${component}`,
    OTEL_BSP_SCHEDULE_DELAY: "100",
  });
  const trio = await startEchoTrio({
    relay: { log_level: "debug" },
    connector: { log_level: "debug" },
    agent: { log_level: "debug" },
    cleanups: [() => receiver.close()],
    start: (component, config) => startComponent(component, config, { env: otel(component) }),
  });
  try {
    const client = udpClient();
    await client.send(new Uint8Array([1, 2, 3]), portOf(trio.listen[0]));
    assert.deepEqual(await client.receive(5000), new Uint8Array([1, 2, 3]));
    client.close();

    const byName = (name: string, protocol: string) =>
      receiver.spans.find((s) => s.name === name && s.attributes["ztna.protocol"] === protocol);
    const chain = async (protocol: string) => {
      const agent = await waitFor(
        `agent span (${protocol})`,
        () => byName("agent.flow_open", protocol),
        15_000,
      );
      const trace = (name: string) =>
        waitFor(
          `${name} (${protocol})`,
          () => receiver.spans.find((s) => s.name === name && s.traceId === agent.traceId),
          15_000,
        );
      return {
        agent,
        connector: await trace("connector.backend_connect"),
        trace,
      };
    };
    const checkChain = (
      spans: { agent: ReceivedSpan; connector: ReceivedSpan },
      protocol: string,
    ) => {
      const { agent, connector } = spans;
      assert.equal(agent.parentSpanId, "", "the agent's span is the root");
      assert.equal(agent.scope, "ztna-edge/agent");
      assert.equal(agent.service, "ztna-agent");
      // The flow opens inside the end-to-end session, between agent and connector.
      assert.equal(connector.parentSpanId, agent.spanId, "connector under agent");
      assert.equal(connector.service, "ztna-connector");
      assert.equal(connector.traceId, agent.traceId);
      assert.equal(connector.attributes["ztna.protocol"], protocol);
    };
    const udp = await chain("udp");
    checkChain(udp, "udp");
    // That first flow needed the session: the relay's decision joins its trace.
    const relay = await udp.trace("relay.session_open");
    const policy = await udp.trace("relay.policy_decision");
    const choice = await udp.trace("relay.connector_choice");
    assert.equal(relay.parentSpanId, udp.agent.spanId, "relay under agent");
    assert.equal(relay.service, "ztna-relay");
    assert.equal(relay.attributes["ztna.agent"], "agent-1");
    assert.equal(policy.parentSpanId, relay.spanId, "policy decision under the session open");
    assert.equal(choice.parentSpanId, relay.spanId, "connector choice under the session open");
    assert.equal(policy.attributes["ztna.rule"], "services.echo.agents");
    assert.equal(policy.attributes["ztna.allowed"], true);
    assert.equal(choice.attributes["ztna.connector"], "connector-1");

    const traceId = udp.agent.traceId;
    for (const proc of [trio.agent, trio.connector]) {
      const line = await proc.waitForLog((l) => l.msg === "flow opened" && l.trace_id === traceId);
      assert.match(String(line.span_id), /^[0-9a-f]{16}$/);
    }
    await trio.relay.waitForLog((l) => l.msg === "channel opened" && l.trace_id === traceId);
    const open = trio.relay.logs.find((l) => l.audit === "channel_open");
    assert.equal(open?.trace_id, traceId);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(trio.listen[1]) });
    await writeAll(conn, new TextEncoder().encode("hello"));
    await conn.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(conn, 10_000)), "hello");
    conn.close();
    const tcp = await chain("tcp");
    checkChain(tcp, "tcp");
    assert.notEqual(tcp.agent.traceId, traceId, "each flow setup is its own trace");
    const paths = new Set(receiver.requests.map((r) => `${r.path} ${r.contentType}`));
    console.log(
      `trace: ${receiver.spans.length} spans received; udp trace ${traceId}, tcp trace ` +
        `${tcp.agent.traceId}; requests: ${[...paths].join(", ")}`,
    );
  } finally {
    await trio.stop();
  }
});

Deno.test("trace: off by default: nothing is exported and log lines carry no trace ids", async () => {
  const receiver = startOtlpReceiver();
  const echo = await startEchoService();
  const trio = await startTrio({
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    relay: { log_level: "debug" },
    connector: { log_level: "debug" },
    agent: { log_level: "debug" },
    processes: [echo.proc],
    cleanups: [() => receiver.close()],
    // The endpoint is set, OTEL_DENO is not: nothing may be exported.
    start: (component, config) =>
      startComponent(component, config, {
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY: "100" },
      }),
  });
  try {
    const client = udpClient();
    await client.send(new Uint8Array([9]), portOf(trio.listen[0]));
    assert.deepEqual(await client.receive(5000), new Uint8Array([9]));
    client.close();
    const line = await trio.connector.waitForLog((l) => l.msg === "flow opened");
    assert.equal(line.trace_id, undefined);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(receiver.requests.length, 0, "nothing exported");
  } finally {
    await trio.stop();
  }
});
