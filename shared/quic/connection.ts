/**
 * One QUIC connection: the quiche state machine plus its timer and its send path.
 *
 * The endpoint (server or client) feeds packets in with {@linkcode receivePacket}; after
 * every packet, timer expiry or application write, {@linkcode flushConnection} drains
 * `conn.send()` into pooled buffers and re-arms the timer. Applications see a small
 * {@linkcode QuicConnection} surface and get events through {@linkcode ConnectionHandlers}.
 *
 * @module
 */
import {
  type ConnectionStats,
  type HostPort,
  isDone,
  type NativeConnection,
  quiche,
} from "./native.ts";
import type { UdpSocket, UdpTarget } from "../udp_socket.ts";

/** Why a connection ended, from either side. */
export interface ConnectionError {
  /** True for an application close code, false for a transport/TLS one. */
  isApp: boolean;
  /** The QUIC error code. */
  code: number;
  /** The reason phrase sent with the close. */
  reason: string;
}

/** What the application learns when a connection is gone. */
export interface CloseInfo {
  /** The error we closed with, if we closed it. */
  local: ConnectionError | null;
  /** The error the peer closed with, if it closed it. */
  peer: ConnectionError | null;
  /** True when the idle timeout ended the connection. */
  timedOut: boolean;
  /** True when the handshake had completed. */
  established: boolean;
}

/** Events delivered to the application. Every callback is optional. */
export interface ConnectionHandlers {
  /** The handshake completed (peer certificate verified). */
  onEstablished?(): void;
  /** A DATAGRAM frame arrived; `data` is only valid during the call. */
  onDatagram?(data: Uint8Array): void;
  /** A stream has data (or a FIN/reset) to read with `streamRead`. */
  onStreamReadable?(streamId: number): void;
  /** A stream that `streamWrite` could not fully accept has capacity again. */
  onStreamWritable?(streamId: number): void;
  /** The connection is closed; no callback follows. */
  onClosed?(info: CloseInfo): void;
}

/** Application error codes carried in CONNECTION_CLOSE. */
export const CloseCode = {
  /** Orderly shutdown. */
  NO_ERROR: 0,
  /** The peer broke the control protocol. */
  PROTOCOL_VIOLATION: 1,
  /** The peer is not allowed (authentication or authorization). */
  FORBIDDEN: 2,
  /** A limit was exceeded. */
  LIMIT: 3,
  /** The endpoint is going away (drain finished). */
  GOING_AWAY: 4,
  /** An internal failure. */
  INTERNAL: 5,
} as const;

/** The application's view of a QUIC connection. */
export interface QuicConnection {
  /** Short id for logs (`conn` field). */
  readonly id: string;
  /** The peer's address. */
  readonly peer: HostPort;
  /** True once the handshake has completed. */
  readonly established: boolean;
  /** True once the connection is fully closed. */
  readonly closed: boolean;
  /** Replaces the event handlers. */
  setHandlers(handlers: ConnectionHandlers): void;
  /** The peer's leaf certificate (DER) once established. */
  peerCertificate(): Uint8Array | null;
  /**
   * Queues a DATAGRAM frame. Returns false (nothing queued) when the send queue is full,
   * the frame is too large or the connection cannot carry datagrams: the caller counts the drop.
   */
  sendDatagram(data: Uint8Array): boolean;
  /** The largest DATAGRAM payload that fits one packet now, or null before the handshake. */
  maxDatagramSize(): number | null;
  /** True when the DATAGRAM send queue is full (pace on it). */
  datagramQueueFull(): boolean;
  /**
   * Writes to a stream; returns the bytes quiche accepted (possibly fewer than given).
   * When not everything fit, `onStreamWritable` fires once capacity returns.
   */
  streamWrite(streamId: number, data: Uint8Array, fin?: boolean): number;
  /**
   * Reads from a stream into `buffer`. Returns null when nothing is readable (or the
   * stream is gone); `resetCode` is set when the peer reset the stream.
   */
  streamRead(streamId: number, buffer: Uint8Array): StreamRead | null;
  /** Aborts one or both directions of a stream with an application error code. */
  streamReset(streamId: number, code: number): void;
  /** Closes the connection with an application error code and reason. */
  close(code: number, reason: string): void;
  /** quiche's counters for this connection. */
  stats(): ConnectionStats;
}

/** The outcome of one {@linkcode QuicConnection.streamRead}. */
export interface StreamRead {
  /** Bytes written into the buffer. */
  bytes: number;
  /** True when the peer finished (or reset) its side of the stream. */
  fin: boolean;
  /** The peer's application error code when it reset the stream. */
  resetCode?: number;
}

/** Endpoint-side state of one connection. */
export interface ConnectionState {
  readonly api: QuicConnection;
  readonly native: NativeConnection;
  /** Address quiche needs with every received packet. */
  readonly recvInfo: { from: HostPort; to: HostPort };
  readonly target: UdpTarget;
  readonly socket: UdpSocket;
  handlers: ConnectionHandlers;
  wasEstablished: boolean;
  finished: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  timerDeadline: number;
  flushQueued: boolean;
  /** Flush deferred after received packets (coalesces ACKs), or undefined. */
  ackTimer: ReturnType<typeof setTimeout> | undefined;
  /** `flushConnection(state)` bound once, so scheduling a flush allocates no closure. */
  flushNow: () => void;
  /** Streams waiting for capacity after a short write, longest waiting first. */
  blocked: Set<number>;
  /** Blocked streams still to be checked since the last packet or timer. */
  wakeOwed: number;
  /** Pending run of the stream events (see `dispatchStreamEvents`), or undefined. */
  streamTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the stream events last ran (`performance.now()`). */
  streamEventsAt: number;
  /** Streams that run visited (readable ones and blocked ones checked). */
  streamEventsVisited: number;
  /** Runs the stream events from the timer (bound once). */
  streamEventsNow: () => void;
  /** Called once after `onClosed`, for the endpoint's bookkeeping. */
  onFinished: () => void;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
let nextConnectionNumber = 1;

function toError(e: { isApp: boolean; errorCode: number; reason: Uint8Array } | null) {
  return e === null
    ? null
    : { isApp: e.isApp, code: e.errorCode, reason: decoder.decode(e.reason) };
}

/** Wraps a native connection for the endpoint that owns `socket`. */
export function createConnectionState(
  native: NativeConnection,
  local: HostPort,
  peer: HostPort,
  socket: UdpSocket,
  onFinished: () => void,
): ConnectionState {
  const state: ConnectionState = {
    api: undefined as unknown as QuicConnection,
    native,
    recvInfo: { from: peer, to: local },
    target: { transport: "udp", hostname: peer.host, port: peer.port },
    socket,
    handlers: {},
    wasEstablished: false,
    finished: false,
    timer: undefined,
    timerDeadline: Infinity,
    flushQueued: false,
    ackTimer: undefined,
    flushNow: () => {
      state.flushQueued = false;
      state.ackTimer = undefined;
      flushConnection(state);
    },
    blocked: new Set(),
    wakeOwed: 0,
    streamTimer: undefined,
    streamEventsAt: -Infinity,
    streamEventsVisited: 0,
    streamEventsNow: () => {
      state.streamTimer = undefined;
      // Readers and writers called here schedule their own flush.
      if (!state.finished) runStreamEvents(state);
    },
    onFinished,
  };
  const id = `c${(nextConnectionNumber++).toString(36)}`;
  const scheduleFlush = () => {
    if (state.flushQueued || state.finished) return;
    state.flushQueued = true;
    // One flush per turn batches all writes the application made in it.
    queueMicrotask(state.flushNow);
  };
  (state as { api: QuicConnection }).api = {
    id,
    peer,
    get established() {
      return native.isEstablished();
    },
    get closed() {
      return state.finished;
    },
    setHandlers(handlers) {
      state.handlers = handlers;
    },
    peerCertificate() {
      const chain = native.peerCertChain();
      return chain && chain.length > 0 ? chain[0] : null;
    },
    sendDatagram(data) {
      if (state.finished || native.isDgramSendQueueFull()) return false;
      try {
        native.dgramSend(data);
      } catch {
        return false;
      }
      scheduleFlush();
      return true;
    },
    maxDatagramSize() {
      return native.dgramMaxWritableLen();
    },
    datagramQueueFull() {
      return native.isDgramSendQueueFull();
    },
    streamWrite(streamId, data, fin = false) {
      if (state.finished) return 0;
      let written = 0;
      try {
        written = native.streamSend(streamId, data, fin) ?? 0;
      } catch (error) {
        if (!isDone(error)) throw error;
      }
      // A stream stays in `blocked` only while a writer waits on it: a full write (say, of
      // bytes held back earlier) takes it out, so wake-ups go to writers that need them.
      if (written < data.length) state.blocked.add(streamId);
      else state.blocked.delete(streamId);
      scheduleFlush();
      return written;
    },
    streamRead(streamId, buffer) {
      if (state.finished) return null;
      try {
        const result = native.streamRecv(streamId, buffer);
        // Reading frees flow-control credit: the MAX_STREAM_DATA that grants it must go out
        // even when no packet arrives (a blocked sender sends none).
        if (result !== null) scheduleFlush();
        return result === null ? null : { bytes: result[0], fin: result[1] };
      } catch (error) {
        const reset = error instanceof Error && /^StreamReset\((\d+)\)/.exec(error.message);
        if (reset) return { bytes: 0, fin: true, resetCode: Number(reset[1]) };
        // Done, or a stream quiche already collected (InvalidStreamState): nothing to read.
        return null;
      }
    },
    streamReset(streamId, code) {
      if (state.finished) return;
      for (const direction of [quiche.Shutdown.Read, quiche.Shutdown.Write]) {
        try {
          native.streamShutdown(streamId, direction, code);
        } catch {
          // Already finished in that direction: nothing to reset.
        }
      }
      state.blocked.delete(streamId);
      scheduleFlush();
    },
    close(code, reason) {
      if (state.finished) return;
      try {
        native.close(true, code, encoder.encode(reason));
      } catch {
        // Already closing: quiche reports Done.
      }
      scheduleFlush();
    },
    stats() {
      return native.stats();
    },
  };
  return state;
}

/**
 * Feeds one received packet to the connection and dispatches the events it caused.
 * Returns false when quiche rejected the packet (the caller counts it).
 */
export function receivePacket(state: ConnectionState, packet: Uint8Array): boolean {
  let accepted = true;
  try {
    state.native.recv(packet, state.recvInfo);
  } catch (error) {
    // A bad packet (or a failed handshake) must not stop the endpoint; quiche records
    // the connection error and closes if the failure is fatal.
    if (!isDone(error)) accepted = false;
  }
  dispatchEvents(state);
  if (state.wasEstablished) deferFlush(state);
  else flushConnection(state);
  return accepted;
}

/**
 * After the handshake, what a received packet makes quiche send is mostly an ACK, and
 * quiche answers every ack-eliciting packet with one when flushed at once: a packet sent
 * and received (two syscalls, an encrypt and a decrypt) per datagram per hop. Deferring
 * that flush to the next event-loop turn lets the packets that arrive meanwhile share one
 * ACK; anything the application writes in this turn still goes out in this turn (its
 * microtask flush carries the ACK too). The delay is far below quiche's max_ack_delay.
 */
function deferFlush(state: ConnectionState): void {
  if (state.ackTimer !== undefined || state.flushQueued || state.finished) return;
  state.ackTimer = setTimeout(state.flushNow, 0);
}

function dispatchEvents(state: ConnectionState): void {
  const { native, handlers } = state;
  if (!state.wasEstablished && native.isEstablished()) {
    state.wasEstablished = true;
    handlers.onEstablished?.();
  }
  if (!state.wasEstablished) return;
  if (handlers.onDatagram) {
    for (;;) {
      let datagram: Uint8Array | null;
      try {
        datagram = native.dgramRecvVec();
      } catch {
        break;
      }
      if (datagram === null) break;
      state.handlers.onDatagram?.(datagram);
    }
  }
  // A packet or a timer is what can raise a stream's capacity: every blocked stream is owed
  // one check after it.
  state.wakeOwed = state.blocked.size;
  dispatchStreamEvents(state);
}

/**
 * Streams visited by one run of the stream events above which the next run waits for
 * {@linkcode STREAM_EVENTS_INTERVAL_MS}. Listing the readable streams costs a native call
 * per stream, and under load (hundreds of flows, thousands of packets a second, each in its
 * own event-loop turn) streams whose reader waits for its far side stay readable: listing
 * them once per packet cost more than moving the data. Data keeps arriving meanwhile under
 * flow control, so a deferred run reads what several packets brought. Light connections
 * (a few flows) keep running the events on every packet, without the added latency.
 */
const STREAM_EVENTS_BUSY = 32;
/** Least time between two runs of the stream events on a busy connection. */
const STREAM_EVENTS_INTERVAL_MS = 1;

/** Runs the stream events now, or schedules them on a busy connection that ran them lately. */
function dispatchStreamEvents(state: ConnectionState): void {
  if (state.streamTimer !== undefined) return;
  const wait = state.streamEventsVisited < STREAM_EVENTS_BUSY
    ? 0
    : state.streamEventsAt + STREAM_EVENTS_INTERVAL_MS - performance.now();
  if (wait <= 0) runStreamEvents(state);
  else state.streamTimer = setTimeout(state.streamEventsNow, wait);
}

function runStreamEvents(state: ConnectionState): void {
  const { native } = state;
  state.streamEventsAt = performance.now();
  let visited = 0;
  if (native.isReadable()) {
    for (const streamId of native.readable()) {
      visited++;
      state.handlers.onStreamReadable?.(streamId);
    }
  }
  if (state.blocked.size > 0) visited += wakeBlockedStreams(state);
  state.streamEventsVisited = visited;
}

/**
 * Blocked streams found without capacity, in a row, after which a wake-up pass stops: the
 * connection's own send capacity (congestion window, connection flow control) is most
 * likely used up, and checking every other blocked stream would cost a native call each.
 */
const WAKE_ZERO_RUN = 4;

/**
 * Tells blocked writers, oldest first, that their streams have capacity again. Writers
 * write inside `onStreamWritable`, so each check sees the capacity earlier wake-ups used.
 * A stream without capacity moves to the back, so streams stalled by their own flow
 * control (a slow reader far away) cannot keep the others behind them waiting; a pass that
 * stops early schedules a follow-up until every stream blocked at the last packet has been
 * checked once, even when no further packet arrives, and then none: streams stalled for
 * good cost nothing while nothing happens.
 */
function wakeBlockedStreams(state: ConnectionState): number {
  const { native, blocked } = state;
  // Streams re-blocked during the pass join the back of the set; visiting at most the
  // starting size keeps the pass bounded.
  const size = blocked.size;
  let visits = size;
  let zeroRun = 0;
  for (const streamId of blocked) {
    if (visits-- === 0) break;
    let capacity = 0;
    try {
      capacity = native.streamCapacity(streamId);
    } catch {
      // Stream gone (reset or finished): writable callbacks would only fail.
      blocked.delete(streamId);
      continue;
    }
    if (capacity > 0) {
      zeroRun = 0;
      blocked.delete(streamId);
      state.handlers.onStreamWritable?.(streamId);
      continue;
    }
    blocked.delete(streamId);
    blocked.add(streamId);
    if (++zeroRun === WAKE_ZERO_RUN) {
      state.wakeOwed -= size - visits;
      // No packet may come to trigger the next pass.
      if (visits > 0 && state.wakeOwed > 0) {
        state.streamTimer ??= setTimeout(state.streamEventsNow, STREAM_EVENTS_INTERVAL_MS);
      }
      return size - visits;
    }
  }
  state.wakeOwed = 0;
  return size;
}

/** Sends everything quiche has queued, re-arms the timer and finishes a closed connection. */
export function flushConnection(state: ConnectionState): void {
  if (state.finished) return;
  if (state.ackTimer !== undefined) {
    clearTimeout(state.ackTimer);
    state.ackTimer = undefined;
  }
  const { native, socket, target } = state;
  const pool = socket.pool;
  for (;;) {
    const buffer = pool.acquire();
    let written: [number, unknown] | null;
    try {
      written = native.send(buffer);
    } catch (error) {
      pool.release(buffer);
      if (isDone(error)) break;
      // A send error means quiche closed the connection itself; the close check below ends it.
      break;
    }
    if (written === null) {
      pool.release(buffer);
      break;
    }
    socket.sendOwned(buffer, written[0], target);
  }
  if (native.isClosed()) {
    finishConnection(state);
    return;
  }
  armTimer(state);
}

function armTimer(state: ConnectionState): void {
  const timeout = state.native.timeout();
  if (timeout === null) return;
  const deadline = performance.now() + timeout;
  // Firing early is harmless (quiche's onTimeout only acts on expired timers), so a timer
  // is only replaced when the new deadline is earlier: few timer operations per packet.
  if (state.timer !== undefined && state.timerDeadline <= deadline + 1) return;
  if (state.timer !== undefined) clearTimeout(state.timer);
  state.timerDeadline = deadline;
  state.timer = setTimeout(() => {
    state.timer = undefined;
    state.timerDeadline = Infinity;
    if (state.finished) return;
    state.native.onTimeout();
    dispatchEvents(state);
    flushConnection(state);
  }, Math.max(0, Math.ceil(timeout)));
}

function finishConnection(state: ConnectionState): void {
  if (state.finished) return;
  state.finished = true;
  if (state.timer !== undefined) clearTimeout(state.timer);
  state.timer = undefined;
  if (state.ackTimer !== undefined) clearTimeout(state.ackTimer);
  state.ackTimer = undefined;
  if (state.streamTimer !== undefined) clearTimeout(state.streamTimer);
  state.streamTimer = undefined;
  const { native } = state;
  const info: CloseInfo = {
    local: toError(native.localError()),
    peer: toError(native.peerError()),
    timedOut: native.isTimedOut(),
    established: state.wasEstablished,
  };
  try {
    state.handlers.onClosed?.(info);
  } finally {
    state.onFinished();
  }
}
