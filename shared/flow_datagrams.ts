/**
 * UDP payloads over DATAGRAM frames for one connection, at the edges of the tunnel (agent
 * and connector): fragmenting payloads larger than one frame on the way in and
 * reassembling them on the way out. The relay never uses this: it forwards frames as they are.
 *
 * @module
 */
import type { QuicConnection } from "./quic/mod.ts";
import { encodeFragments, frameCount, MAX_FRAGMENTS, parseDatagram } from "./protocol/datagram.ts";
import {
  createReassembler,
  type Reassembler,
  type ReassemblerOptions,
  type ReassemblyDropReason,
} from "./protocol/reassembly.ts";

/** The smallest frame limit worth fragmenting into (flow id, fragment header and data). */
const MIN_FRAME_BYTES = 32;

/** Why a payload did not make it into, or out of, the tunnel. */
export type DatagramDropReason = "queue_full" | "too_large" | "not_ready" | "malformed";

/** The per-connection DATAGRAM codec of an agent or connector. */
export interface FlowDatagrams {
  /**
   * Sends one UDP payload on `flow`; returns null when sent, else why it was dropped.
   * The payload may be reused as soon as this returns.
   */
  send(flow: number, payload: Uint8Array): DatagramDropReason | null;
  /**
   * Decodes one received frame; calls `deliver` with a complete payload (only valid during
   * the call) or returns why the frame was dropped. Returns null when the frame was taken
   * (delivered, or held waiting for more fragments).
   */
  receive(
    frame: Uint8Array,
    deliver: (flow: number, payload: Uint8Array) => void,
  ): DatagramDropReason | null;
  /**
   * Caps the frames of `flow` at `maxFrame` bytes (the relay's `max_datagram`: what it can
   * forward to the far end), so payloads are fragmented by the smaller of both hops' limits.
   * Undefined (an older relay) leaves only this connection's own limit.
   */
  limitFlow(flow: number, maxFrame: number | undefined): void;
  /** Forgets a closed flow's partial datagrams and its limit. */
  dropFlow(flow: number): void;
  /**
   * Drops expired partial datagrams and reports reassembly drops counted since the last
   * call, as `reassembly_<reason>`, for the component's drop metric.
   */
  sweep(report: (reason: string, count: number) => void): void;
  /** The reassembler (for its drop counters and pending bytes). */
  readonly reassembler: Reassembler;
}

/**
 * Creates the DATAGRAM codec for `conn`.
 *
 * @example
 * ```ts
 * import type { QuicConnection } from "./quic/mod.ts";
 * import { createFlowDatagrams } from "./flow_datagrams.ts";
 *
 * export function sendOnFlow7(conn: QuicConnection, payload: Uint8Array): void {
 *   const datagrams = createFlowDatagrams(conn, { maxBytes: 4 << 20, timeoutMs: 2000 });
 *   const dropped = datagrams.send(7, payload); // null, or why it was dropped
 *   if (dropped !== null) console.log(`dropped: ${dropped}`);
 * }
 * ```
 */
export function createFlowDatagrams(
  conn: QuicConnection,
  reassembly: ReassemblerOptions = {},
): FlowDatagrams {
  const reassembler = createReassembler(reassembly);
  const scratch = new Uint8Array(2048);
  const flowLimits = new Map<number, number>();
  let nextDatagramId = 0;
  let dropped = false;
  const reported: Record<ReassemblyDropReason, number> = {
    timeout: 0,
    over_budget: 0,
    inconsistent: 0,
    duplicate: 0,
  };
  const emit = (frame: Uint8Array) => {
    if (!conn.sendDatagram(frame)) dropped = true;
  };

  return {
    send(flow, payload) {
      const writable = conn.maxDatagramSize();
      if (writable === null || conn.closed) return "not_ready";
      const maxFrame = Math.min(writable, flowLimits.get(flow) ?? writable, scratch.length);
      // Too small to carry a fragment header and data (a relay may say anything).
      if (maxFrame < MIN_FRAME_BYTES) return "too_large";
      const frames = frameCount(flow, payload.length, maxFrame);
      if (frames > MAX_FRAGMENTS) return "too_large";
      if (conn.datagramQueueFull()) return "queue_full";
      const datagramId = nextDatagramId;
      if (frames > 1) nextDatagramId = (nextDatagramId + 1) & 0xffff;
      dropped = false;
      encodeFragments(flow, datagramId, payload, maxFrame, scratch, emit);
      // A fragment that did not fit makes the whole datagram undeliverable; the far end's
      // reassembly times out and counts it there too.
      return dropped ? "queue_full" : null;
    },
    receive(frame, deliver) {
      const view = parseDatagram(frame, frame.length);
      if (view === null) return "malformed";
      const payload = reassembler.add(view.flow, view, frame);
      if (payload !== null) deliver(view.flow, payload);
      return null;
    },
    limitFlow(flow, maxFrame) {
      if (maxFrame === undefined) flowLimits.delete(flow);
      else flowLimits.set(flow, maxFrame);
    },
    dropFlow(flow) {
      reassembler.dropFlow(flow);
      flowLimits.delete(flow);
    },
    sweep(report) {
      reassembler.sweep();
      const drops = reassembler.drops;
      for (const reason of Object.keys(reported) as ReassemblyDropReason[]) {
        const delta = drops[reason] - reported[reason];
        if (delta > 0) report(`reassembly_${reason}`, delta);
        reported[reason] = drops[reason];
      }
    },
    reassembler,
  };
}
