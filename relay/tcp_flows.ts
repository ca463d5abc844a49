/**
 * The relay's TCP flows: an agent opens a bidirectional stream starting with an `open`
 * header; the relay authorizes it (the same policy and registry as UDP flows), opens a
 * stream to the chosen connector with an `open` header of its own, forwards the connector's
 * answer, and then splices the two streams.
 *
 * @module
 */
import type { Logger } from "../shared/log.ts";
import type { RefusedReason } from "../shared/protocol/control.ts";
import {
  encodeStreamHeader,
  type StreamAnswer,
  StreamCode,
  type StreamHeader,
} from "../shared/protocol/stream_header.ts";
import type { QuicConnection } from "../shared/quic/mod.ts";
import {
  createStreamHeaderReader,
  finishStream,
  type PendingWrite,
  type StreamHeaderReader,
  writeStreamHeader,
} from "../shared/stream_header_io.ts";
import type { RelayMetrics } from "./metrics.ts";
import { type Splice, spliceStreams } from "./stream_splice.ts";
import { createChunkCounter } from "../shared/protocol/stream_chunks.ts";
import { countFlow, type FlowEntry, type FlowLedger } from "../shared/flow_ledger.ts";
import type { FlowSpan, FlowTracer } from "../shared/trace.ts";

/** What the TCP flow table needs to know about a session. */
export interface StreamPeer {
  readonly conn: QuicConnection;
  /** The authenticated identity (agent identities go to the connector in `open`). */
  readonly identity: string;
  readonly log: Logger;
}

/**
 * The outcome of authorizing an open: a connector, or why not; with the policy rule that
 * decided (absent when the policy was not asked, e.g. while draining).
 */
export type OpenDecision<P> = { connector: P; rule: string } | {
  reason: RefusedReason;
  message: string;
  rule?: string;
};

/** Options for {@linkcode createTcpFlows}. */
export interface TcpFlowsOptions<P extends StreamPeer> {
  /** Policy, limits and connector choice, exactly as for a UDP `open`, traced under `span`. */
  authorize(agent: P, service: string, span: FlowSpan): OpenDecision<P>;
  metrics: RelayMetrics;
  /** The relay's flow ledger: open TCP flows are entered, counted and closed there. */
  ledger: FlowLedger;
  tracer: FlowTracer;
  /** The audit fields of a flow between `agent` and `connector`. */
  flowFields(agent: P, connector: P, rule: string): Record<string, unknown>;
  /** Writes `flow_refused` for an open that never became a flow. */
  refused(agent: P, service: string, reason: string, fields: Record<string, unknown>): void;
  /** A flow's entry closed (its totals move to the agent's). */
  closed(agent: P, entry: FlowEntry): void;
  /**
   * A connector that has not answered an open in this time is given up on.
   * @default {5000}
   */
  openTimeoutMs?: number;
}

/** The relay's TCP flows; the relay routes non-control stream events here. */
export interface TcpFlows<P extends StreamPeer> {
  /** A non-control stream of an agent's connection became readable. */
  agentReadable(agent: P, streamId: number): void;
  /** A non-control stream of an agent's connection has capacity again. */
  agentWritable(agent: P, streamId: number): void;
  /** A non-control stream of a connector's connection became readable. */
  connectorReadable(connector: P, streamId: number): void;
  /** A non-control stream of a connector's connection has capacity again. */
  connectorWritable(connector: P, streamId: number): void;
  /** The session is gone: every flow through it is reset at its other end. */
  peerClosed(peer: P): void;
  /**
   * Resets, at both ends, every opening or open flow that `allowed` now rejects (a policy
   * reload); returns how many.
   */
  revoke(allowed: (agent: P, service: string, connector: P) => boolean): number;
  /** Live TCP flows (opening and open) through `peer`, or through all peers. */
  count(peer?: P): number;
}

type State =
  /** Reading the agent's `open` header. */
  | "header"
  /** Waiting for the connector's answer. */
  | "opening"
  | "open"
  /** Refused: reading and discarding until both FINs are in. */
  | "closing";

interface TcpFlow<P> {
  state: State;
  service: string;
  agent: P;
  agentStream: number;
  agentReader: StreamHeaderReader;
  connector: P | null;
  connectorStream: number;
  connectorReader: StreamHeaderReader | null;
  openWrite: PendingWrite | null;
  splice: Splice | null;
  started: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The relay's span of the open; null until the header is read. */
  span: FlowSpan | null;
  /** The policy rule that allowed the flow. */
  rule: string | undefined;
  /** The ledger entry once open. */
  entry: FlowEntry | null;
  /** Ends still to be drained in the closing state. */
  agentOpen: boolean;
  connectorOpen: boolean;
}

/** Why an open flow ended, as `ztna_relay_flows_closed_total{reason}` counts it. */
type CloseCause = "peer_close" | "disconnect" | "policy";

const scratch = new Uint8Array(16_384);

/**
 * Creates the relay's TCP flow table.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Registry } from "prom-client";
 * import { createRelayMetrics } from "./metrics.ts";
 * import { createTcpFlows, type StreamPeer } from "./tcp_flows.ts";
 * import { createFlowLedger } from "../shared/flow_ledger.ts";
 * import { createFlowTracer } from "../shared/trace.ts";
 *
 * const none = () => ({});
 * const metrics = createRelayMetrics(new Registry(), {
 *   packetDrops: none,
 *   serviceConnectors: none,
 *   preauth: none,
 *   preauthCloses: none,
 *   statelessAnswers: none,
 *   serviceTraffic: none,
 *   channels: () => 0,
 *   channelPackets: none,
 *   channelBytes: none,
 *   channelDrops: none,
 * });
 * const tcp = createTcpFlows<StreamPeer>({
 *   // The relay passes the same rule it applies to UDP opens (policy, limits, round robin).
 *   authorize: () => ({ reason: "forbidden", message: "not in the policy" }),
 *   metrics,
 *   ledger: createFlowLedger({ write() {} }), // audit records go nowhere here
 *   tracer: createFlowTracer("relay"),
 *   flowFields: () => ({}),
 *   refused() {},
 *   closed() {},
 * });
 * // The relay routes each connection's non-control stream events here:
 * // onStreamReadable: (id) => tcp.agentReadable(session, id)
 * assert.equal(tcp.count(), 0);
 * ```
 */
export function createTcpFlows<P extends StreamPeer>(
  options: TcpFlowsOptions<P>,
): TcpFlows<P> {
  const { authorize, metrics, ledger, openTimeoutMs = 5000 } = options;
  const byPeer = new Map<P, Map<number, TcpFlow<P>>>();
  /** Next server-initiated bidirectional stream id per connector (1, 5, 9, ...). */
  const nextStream = new Map<P, number>();
  let live = 0;

  const table = (peer: P) => {
    let flows = byPeer.get(peer);
    if (flows === undefined) byPeer.set(peer, flows = new Map());
    return flows;
  };

  function forget(flow: TcpFlow<P>, cause: CloseCause = "peer_close"): void {
    clearTimeout(flow.timer);
    // An open still in flight when an end went away (ending it again after it opened is a no-op).
    flow.span?.end("abandoned");
    const hadAgent = byPeer.get(flow.agent)?.delete(flow.agentStream) ?? false;
    if (flow.connector !== null) byPeer.get(flow.connector)?.delete(flow.connectorStream);
    if (hadAgent) live--;
    if (flow.state === "open" && hadAgent) {
      metrics.flowsActive.dec({ protocol: "tcp" });
      metrics.flowsClosed.inc({ reason: cause });
    }
    if (flow.entry !== null) {
      ledger.close(flow.entry, cause);
      options.closed(flow.agent, flow.entry);
      flow.entry = null;
    }
  }

  /** Answers the agent with `refused` and FIN; the flow drains until the agent's FIN. */
  function refuse(flow: TcpFlow<P>, reason: RefusedReason, message: string): void {
    metrics.flowRefusals.inc({ reason });
    flow.agent.log.debug("tcp flow refused", {
      service: flow.service,
      reason,
      ...flow.span?.logFields,
    });
    options.refused(flow.agent, flow.service, reason, {
      detail: message,
      rule: flow.rule,
      ...flow.span?.logFields,
    });
    flow.span?.end(reason);
    clearTimeout(flow.timer);
    const write = writeStreamHeader(flow.agent.conn, flow.agentStream, {
      type: "refused",
      reason,
      message,
    }, true);
    // A header the congested stream cannot take at once is not worth waiting for: a reset
    // tells the agent just as promptly.
    if (write === null || !write.done) {
      flow.agent.conn.streamReset(flow.agentStream, StreamCode.GOING_AWAY);
      flow.agentOpen = false;
    }
    flow.state = "closing";
    drainClosing(flow);
  }

  /** Discards bytes of a refused flow until its ends have finished. */
  function drainClosing(flow: TcpFlow<P>): void {
    const drain = (conn: QuicConnection, streamId: number): boolean => {
      for (;;) {
        const result = conn.streamRead(streamId, scratch);
        if (result === null) return !conn.closed;
        if (result.fin) return false;
      }
    };
    if (flow.agentOpen) flow.agentOpen = drain(flow.agent.conn, flow.agentStream);
    if (flow.connector !== null && flow.connectorOpen) {
      flow.connectorOpen = drain(flow.connector.conn, flow.connectorStream);
    }
    if (!flow.agentOpen && !flow.connectorOpen) forget(flow);
  }

  function violation(peer: P, streamId: number, detail: string): void {
    metrics.protocolViolations.inc({ reason: "stream_header" });
    peer.log.warn("invalid tcp stream: resetting it", { stream: streamId, detail });
    peer.conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
  }

  function onAgentHeader(flow: TcpFlow<P>, header: StreamHeader): void {
    if (header.type !== "open") {
      forget(flow);
      return violation(flow.agent, flow.agentStream, `expected open, got ${header.type}`);
    }
    flow.service = header.service;
    flow.span = options.tracer.start("relay.flow_open", {
      parent: header.traceparent,
      attributes: {
        "ztna.service": header.service,
        "ztna.protocol": "tcp",
        "ztna.agent": flow.agent.identity,
      },
    });
    const decision = authorize(flow.agent, header.service, flow.span);
    flow.rule = decision.rule;
    if (!("connector" in decision)) return refuse(flow, decision.reason, decision.message);
    const connector = decision.connector;
    const streamId = nextStream.get(connector) ?? 1;
    nextStream.set(connector, streamId + 4);
    const write = writeStreamHeader(connector.conn, streamId, {
      type: "open",
      service: header.service,
      protocol: "tcp",
      flow: streamId,
      agent: flow.agent.identity,
      ...(flow.span.traceparent === undefined ? {} : { traceparent: flow.span.traceparent }),
    });
    if (write === null) return refuse(flow, "unavailable", "connector refused the stream");
    flow.connector = connector;
    flow.connectorStream = streamId;
    flow.connectorOpen = true;
    flow.connectorReader = createStreamHeaderReader(connector.conn, streamId);
    flow.openWrite = write;
    flow.state = "opening";
    table(connector).set(streamId, flow);
    flow.timer = setTimeout(() =>
      flow.agent.conn.guard("tcp open timeout", () => {
        if (flow.state !== "opening") return;
        connector.conn.streamReset(streamId, StreamCode.GOING_AWAY);
        flow.connectorOpen = false;
        refuse(flow, "unavailable", "connector did not answer in time");
      }), openTimeoutMs);
  }

  function onConnectorAnswer(flow: TcpFlow<P>, answer: StreamAnswer, fin: boolean): void {
    clearTimeout(flow.timer);
    const connector = flow.connector!;
    if (fin) flow.connectorOpen = false;
    if (answer.type === "refused") {
      // The connector FINs after `refused`; ours goes after it so both ends close cleanly.
      if (!finishStream(connector.conn, flow.connectorStream)) flow.connectorOpen = false;
      return refuse(flow, answer.reason, answer.message);
    }
    flow.state = "open";
    metrics.flowsOpened.inc({ protocol: "tcp" });
    metrics.flowsActive.inc({ protocol: "tcp" });
    metrics.flowSetup.observe((performance.now() - flow.started) / 1000);
    const entry = ledger.open({
      id: flow.agentStream,
      service: flow.service,
      protocol: "tcp",
      fields: options.flowFields(flow.agent, connector, flow.rule ?? ""),
      openFields: flow.span?.logFields,
    });
    flow.entry = entry;
    flow.span?.set({ "ztna.flow": flow.agentStream });
    flow.span?.end();
    // The agent learns its flow id (its stream id) with the answer.
    const prefixToA = encodeStreamHeader({ type: "opened", flow: flow.agentStream });
    // The audit counts payload, as the ends do: the splice moves framed bytes.
    const counters = [createChunkCounter(prefixToA.length), createChunkCounter()];
    flow.splice = spliceStreams({
      a: { conn: flow.agent.conn, streamId: flow.agentStream },
      b: { conn: connector.conn, streamId: flow.connectorStream },
      prefixToA,
      finFromB: fin,
      onBytes(toB, bytes, data) {
        metrics.bytesRelayed.inc({ direction: toB ? "to_connector" : "to_agent" }, bytes);
        const counter = counters[toB ? 1 : 0];
        const [payload, chunks] = [counter.payloadBytes, counter.chunks];
        counter.push(data);
        countFlow(entry, toB, counter.payloadBytes - payload, counter.chunks - chunks);
      },
      onEnd: () => forget(flow),
    });
    // Bytes that arrived while the flow was opening are waiting in quiche.
    flow.splice.writable("a");
    flow.splice.readable("a");
    flow.splice.readable("b");
  }

  function agentReadable(agent: P, streamId: number): void {
    let flow = byPeer.get(agent)?.get(streamId);
    if (flow === undefined) {
      // Agents open client-initiated bidirectional streams (id % 4 === 0; 0 is control).
      if (streamId % 4 !== 0) return violation(agent, streamId, "not an agent stream");
      flow = {
        state: "header",
        service: "",
        agent,
        agentStream: streamId,
        agentReader: createStreamHeaderReader(agent.conn, streamId),
        connector: null,
        connectorStream: -1,
        connectorReader: null,
        openWrite: null,
        splice: null,
        started: performance.now(),
        timer: undefined,
        span: null,
        rule: undefined,
        entry: null,
        agentOpen: true,
        connectorOpen: false,
      };
      table(agent).set(streamId, flow);
      live++;
    }
    switch (flow.state) {
      case "header": {
        const read = flow.agentReader.read();
        if (read.kind === "pending") return;
        if (read.kind === "header" && !read.fin) return onAgentHeader(flow, read.header);
        forget(flow);
        if (read.kind === "invalid") violation(agent, streamId, read.detail);
        return;
      }
      case "opening":
        return; // the payload waits (under flow control) until the connector answers
      case "open":
        return flow.splice!.readable("a");
      case "closing":
        return drainClosing(flow);
    }
  }

  function connectorReadable(connector: P, streamId: number): void {
    const flow = byPeer.get(connector)?.get(streamId);
    if (flow === undefined) {
      // Connectors never open streams; a stream we forgot gets a reset.
      connector.conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
      return;
    }
    switch (flow.state) {
      case "opening": {
        const read = flow.connectorReader!.read();
        if (read.kind === "pending") return;
        if (read.kind === "header" && read.header.type !== "open") {
          return onConnectorAnswer(flow, read.header, read.fin);
        }
        connector.conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
        flow.connectorOpen = false;
        if (read.kind === "header" || read.kind === "invalid") {
          metrics.protocolViolations.inc({ reason: "stream_header" });
        }
        return refuse(flow, "backend_error", "connector sent no valid answer");
      }
      case "open":
        return flow.splice!.readable("b");
      case "closing":
        return drainClosing(flow);
      default:
        return;
    }
  }

  return {
    agentReadable,
    agentWritable(agent, streamId) {
      const flow = byPeer.get(agent)?.get(streamId);
      if (flow?.state === "open") flow.splice!.writable("a");
    },
    connectorReadable,
    connectorWritable(connector, streamId) {
      const flow = byPeer.get(connector)?.get(streamId);
      if (flow?.state === "opening") flow.openWrite?.flush();
      else if (flow?.state === "open") flow.splice!.writable("b");
    },
    peerClosed(peer) {
      nextStream.delete(peer);
      for (const flow of [...byPeer.get(peer)?.values() ?? []]) {
        const [other, otherStream] = flow.agent === peer
          ? [flow.connector, flow.connectorStream]
          : [flow.agent, flow.agentStream];
        if (other !== null && !other.conn.closed) {
          other.conn.streamReset(otherStream, StreamCode.GOING_AWAY);
        }
        forget(flow, "disconnect");
      }
      byPeer.delete(peer);
    },
    revoke(allowed) {
      let revoked = 0;
      for (const [peer, flows] of [...byPeer]) {
        for (const flow of [...flows.values()]) {
          // A flow is listed under both of its ends: take it once, from the agent's table.
          if (flow.agent !== peer || (flow.state !== "opening" && flow.state !== "open")) continue;
          const connector = flow.connector!;
          if (allowed(flow.agent, flow.service, connector)) continue;
          revoked++;
          flow.agent.log.info("tcp flow closed: no longer allowed by policy", {
            service: flow.service,
            flow: flow.agentStream,
          });
          // Forgotten first, so the splice's end (which forgets it too) counts nothing more.
          forget(flow, "policy");
          if (flow.splice !== null) {
            flow.splice.abort(StreamCode.FORBIDDEN);
          } else {
            flow.agent.conn.streamReset(flow.agentStream, StreamCode.FORBIDDEN);
            connector.conn.streamReset(flow.connectorStream, StreamCode.FORBIDDEN);
          }
        }
      }
      return revoked;
    },
    count(peer) {
      if (peer === undefined) return live;
      let n = 0;
      for (const flow of byPeer.get(peer)?.values() ?? []) if (flow.agent === peer) n++;
      return n;
    },
  };
}
