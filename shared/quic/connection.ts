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
import type { UdpSocket, UdpTarget } from "./udp_socket.ts";

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

/**
 * Told about an exception that escaped a handler of `conn` (or a function run with
 * {@linkcode QuicConnection.guard}); `where` names the entry point. The connection is then
 * closed with {@linkcode CloseCode.INTERNAL}: a bug in one handler ends that one connection.
 */
export type HandlerErrorReporter = (conn: QuicConnection, error: unknown, where: string) => void;

/**
 * Events delivered to the application. Every callback is optional. Each one runs guarded: an
 * exception it throws is reported (see {@linkcode HandlerErrorReporter}) and closes this
 * connection, never the endpoint or the process.
 */
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
  /** True once the handshake has completed. */
  readonly established: boolean;
  /** True once the connection is fully closed. */
  readonly closed: boolean;
  /** The peer's current address (it changes when the peer's NAT rebinds). */
  readonly peer: HostPort;
  /**
   * Installs the event handlers: once per connection, before the first event (a server's
   * `onConnection`, or right after `connectQuic`). A second call throws.
   */
  setHandlers(handlers: ConnectionHandlers): void;
  /**
   * Runs `fn` as a handler of this connection, for application timers and callbacks that
   * the endpoint does not call: an exception is reported and closes this connection.
   * Returns what `fn` returned, or undefined when it threw.
   */
  guard<T>(where: string, fn: () => T): T | undefined;
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
   *
   * @throws {StreamGoneError} When the peer stopped the stream (STOP_SENDING) or quiche
   * no longer has it: nothing more can be written there.
   */
  streamWrite(streamId: number, data: Uint8Array, fin?: boolean): number;
  /**
   * Reads from a stream into `buffer`. Returns null when nothing is readable (or the
   * stream is gone); `resetCode` is set when the peer reset the stream.
   */
  streamRead(streamId: number, buffer: Uint8Array): StreamRead | null;
  /** Aborts both directions of a stream with an application error code. */
  streamReset(streamId: number, code: number): void;
  /**
   * Stops reading a stream: asks the peer to stop sending (STOP_SENDING with `code`) and
   * discards what still arrives; our own direction is left as it is.
   */
  streamStop(streamId: number, code: number): void;
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

/** A stream write failed because the stream is gone: stopped by the peer, or collected. */
export class StreamGoneError extends Error {
  /** The peer's STOP_SENDING code, or null when quiche no longer knows the stream. */
  readonly stopCode: number | null;

  /**
   * Constructs a new instance.
   *
   * @param streamId The stream.
   * @param stopCode The peer's STOP_SENDING code, or null.
   * @param options Standard error options (`cause`).
   */
  constructor(streamId: number, stopCode: number | null, options?: ErrorOptions) {
    super(
      stopCode === null
        ? `stream ${streamId} is gone`
        : `stream ${streamId} was stopped by the peer (code ${stopCode})`,
      options,
    );
    this.name = "StreamGoneError";
    this.stopCode = stopCode;
  }
}

/** Endpoint-side state of one connection. */
export interface ConnectionState {
  readonly api: QuicConnection;
  readonly native: NativeConnection;
  /** Address quiche needs with every received packet: the source of the latest one. */
  recvInfo: { from: HostPort; to: HostPort };
  /** Where quiche last asked packets to go (it moves after validating a rebound path). */
  target: UdpTarget;
  readonly socket: UdpSocket;
  handlers: ConnectionHandlers | null;
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
  /** Told about exceptions that escaped the application's handlers. */
  onHandlerError: HandlerErrorReporter;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
let nextConnectionNumber = 1;

function toError(e: { isApp: boolean; errorCode: number; reason: Uint8Array } | null) {
  return e === null
    ? null
    : { isApp: e.isApp, code: e.errorCode, reason: decoder.decode(e.reason) };
}

/** The reporter used when an endpoint is given none: one log line on stderr. */
const reportToStderr: HandlerErrorReporter = (conn, error, where) => {
  console.error(`quic connection ${conn.id}: ${where} handler failed:`, error);
};

const NO_HANDLERS: ConnectionHandlers = {};

/** Wraps a native connection for the endpoint that owns `socket`. */
export function createConnectionState(
  native: NativeConnection,
  local: HostPort,
  peer: HostPort,
  socket: UdpSocket,
  onFinished: () => void,
  onHandlerError: HandlerErrorReporter = reportToStderr,
): ConnectionState {
  const state: ConnectionState = {
    api: undefined as unknown as QuicConnection,
    native,
    recvInfo: { from: peer, to: local },
    target: { transport: "udp", hostname: peer.host, port: peer.port },
    socket,
    handlers: null,
    wasEstablished: false,
    finished: false,
    timer: undefined,
    timerDeadline: Infinity,
    flushQueued: false,
    ackTimer: undefined,
    flushNow: () => {
      state.flushQueued = false;
      state.ackTimer = undefined;
      drive(state, "flush", flushConnection);
    },
    blocked: new Set(),
    wakeOwed: 0,
    streamTimer: undefined,
    streamEventsAt: -Infinity,
    streamEventsVisited: 0,
    streamEventsNow: () => {
      state.streamTimer = undefined;
      // Readers and writers called here schedule their own flush.
      if (!state.finished) drive(state, "stream events", runStreamEvents);
    },
    onFinished,
    onHandlerError,
  };
  const id = `c${(nextConnectionNumber++).toString(36)}`;
  const scheduleFlush = () => {
    if (!state.finished) queueFlush(state);
  };
  (state as { api: QuicConnection }).api = {
    id,
    get peer() {
      return state.recvInfo.from;
    },
    get established() {
      return native.isEstablished();
    },
    get closed() {
      return state.finished;
    },
    setHandlers(handlers) {
      // Swapping handlers midway would let events of one phase reach another's code.
      if (state.handlers !== null) throw new Error(`connection ${id}: handlers are already set`);
      state.handlers = handlers;
    },
    guard(where, fn) {
      try {
        return fn();
      } catch (error) {
        handlerFailed(state, error, where);
        return undefined;
      }
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
        if (!isDone(error)) {
          state.blocked.delete(streamId);
          const stopped = error instanceof Error && /^StreamStopped\((\d+)\)/.exec(error.message);
          throw new StreamGoneError(streamId, stopped ? Number(stopped[1]) : null, {
            cause: error,
          });
        }
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
    streamStop(streamId, code) {
      if (state.finished) return;
      try {
        native.streamShutdown(streamId, quiche.Shutdown.Read, code);
      } catch {
        // Already finished in that direction.
      }
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
 * Runs one phase of driving a connection (`step`) as the guarded entry into application code:
 * every way the endpoint reaches a connection (a packet, quiche's timer, a deferred flush,
 * the stream-event timer) comes through here, so an exception a handler throws is reported,
 * and closes that one connection with {@linkcode CloseCode.INTERNAL}, instead of escaping into
 * the socket's read loop or a timer (where it would stop the process).
 */
function drive(state: ConnectionState, where: string, step: (state: ConnectionState) => void) {
  try {
    step(state);
  } catch (error) {
    handlerFailed(state, error, where);
  }
}

/** Reports a handler's exception and closes its connection (once). */
function handlerFailed(state: ConnectionState, error: unknown, where: string): void {
  try {
    state.onHandlerError(state.api, error, where);
  } catch {
    // The reporter itself failed (a logging sink gone): closing still must happen.
  }
  if (state.finished) return;
  try {
    state.native.close(true, CloseCode.INTERNAL, encoder.encode("internal_error"));
  } catch {
    // Already closing.
  }
  // Flushed outside the failed handler: the close goes out even if flushing is what threw.
  queueFlush(state);
}

/**
 * Flushes the connection at the end of this event-loop turn (once, however often asked): one
 * flush carries everything the application wrote in the turn (and any ACK owed), and small
 * DATAGRAM frames written in one turn share packets.
 */
function queueFlush(state: ConnectionState): void {
  if (state.flushQueued) return;
  state.flushQueued = true;
  queueMicrotask(state.flushNow);
}

/**
 * Feeds one received packet to the connection and dispatches the events it caused: the read
 * phase of quiche's server loop, then events, then (deferred, see `deferFlush`) the flush
 * and the timer. `from` is the packet's source: a peer whose NAT rebinds shows up from a new
 * address, which quiche validates (PATH_CHALLENGE) and then moves the connection to.
 * Returns false when quiche rejected the packet (the caller counts it).
 */
export function receivePacket(
  state: ConnectionState,
  packet: Uint8Array,
  from: Deno.NetAddr,
): boolean {
  const seen = state.recvInfo.from;
  // A new object only when the address changed: no allocation per packet.
  if (seen.port !== from.port || seen.host !== from.hostname) {
    state.recvInfo = { from: { host: from.hostname, port: from.port }, to: state.recvInfo.to };
  }
  let accepted = true;
  try {
    state.native.recv(packet, state.recvInfo);
  } catch (error) {
    // A bad packet (or a failed handshake) must not stop the endpoint; quiche records
    // the connection error and closes if the failure is fatal.
    if (!isDone(error)) accepted = false;
  }
  drive(state, "packet", afterPacket);
  return accepted;
}

function afterPacket(state: ConnectionState): void {
  dispatchEvents(state);
  if (state.wasEstablished) deferFlush(state);
  else flushConnection(state);
}

/**
 * After the handshake, what a received packet makes quiche send is mostly an ACK, and
 * quiche answers every ack-eliciting packet with one when flushed at once: a packet sent
 * and received (two syscalls, an encrypt and a decrypt) per datagram per hop. Deferring that
 * flush to the next event-loop turn lets the packets of further receive batches share one
 * ACK; anything the application writes in this turn still goes out in this turn (its
 * microtask flush carries the ACK too). The delay is far below quiche's max_ack_delay. On the
 * batched socket, flushing ACKs at the end of each batch instead cost a quarter of the UDP
 * rate (1200 B one way at ≤ 1% loss: 14,875/s against 19,947/s deferred) and let 200
 * concurrent TCP flows starve each other (a median flow at 0% when the first was done).
 */
function deferFlush(state: ConnectionState): void {
  if (state.ackTimer !== undefined || state.flushQueued || state.finished) return;
  state.ackTimer = setTimeout(state.flushNow, 0);
}

function dispatchEvents(state: ConnectionState): void {
  const { native } = state;
  const handlers = state.handlers ?? NO_HANDLERS;
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
      handlers.onDatagram(datagram);
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
  const handlers = state.handlers ?? NO_HANDLERS;
  let visited = 0;
  if (native.isReadable()) {
    for (const streamId of native.readable()) {
      visited++;
      handlers.onStreamReadable?.(streamId);
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
      state.handlers?.onStreamWritable?.(streamId);
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
  const { native, socket } = state;
  let target = state.target;
  for (;;) {
    // quiche writes each packet straight into the socket's outgoing batch.
    const buffer = socket.sendBuffer();
    let written: ReturnType<NativeConnection["send"]>;
    try {
      written = native.send(buffer);
    } catch {
      // Done, or a send error: quiche then closed the connection itself, and the close
      // check below ends it.
      break;
    }
    if (written === null) break;
    const to = written[1].to;
    // quiche names the path: after a validated NAT rebinding it is the peer's new address.
    if (to.port !== target.port || to.host !== target.hostname) {
      state.target = target = { transport: "udp", hostname: to.host, port: to.port };
    }
    socket.commit(written[0], target);
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
    if (!state.finished) drive(state, "timer", onTimer);
  }, Math.max(0, Math.ceil(timeout)));
}

function onTimer(state: ConnectionState): void {
  state.native.onTimeout();
  dispatchEvents(state);
  flushConnection(state);
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
    state.handlers?.onClosed?.(info);
  } catch (error) {
    // The connection is gone either way; the endpoint's bookkeeping below must still run.
    try {
      state.onHandlerError(state.api, error, "closed");
    } catch {
      // Reporter failed too.
    }
  } finally {
    state.onFinished();
  }
}
