/**
 * Control-stream messages: frames of `u32 big-endian length + UTF-8 JSON
 * object`, each validated with zod on receipt. Anything malformed or oversized
 * raises {@linkcode ProtocolError}, which the connection turns into a close
 * with a protocol-violation code.
 *
 * @module
 */

import { z } from "zod";

/** Version carried in `hello.v`. */
export const PROTOCOL_VERSION = 2;

/** Default largest JSON body of one control frame, in bytes. */
export const DEFAULT_MAX_FRAME_BYTES = 65536;

/** Length of the frame's length prefix. */
const PREFIX_LENGTH = 4;

/** First allocation for a frame split across reads; it doubles as more bytes arrive. */
const INITIAL_BODY_BYTES = 4096;

/**
 * Largest control frame a peer may send before its `hello` is accepted: a `hello` is well
 * under 1 KiB, and an unauthenticated peer must not make the relay buffer more.
 */
export const PRE_AUTH_MAX_FRAME_BYTES = 4096;

/** Pattern every service name matches. */
export const SERVICE_NAME_PATTERN: RegExp = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** A service name. */
export const serviceNameSchema = z.string().regex(SERVICE_NAME_PATTERN);
/** A safe non-negative integer (ids, sequence numbers, durations). */
const uint = z.int().nonnegative();
/** Transport of a service or flow. */
export const serviceProtocolSchema = z.enum(["udp", "tcp"]);
/** Why an `open` was refused. */
export const refusedReasonSchema = z.enum([
  "forbidden",
  "unknown_service",
  "unavailable",
  "limit",
  "backend_error",
  "draining",
  "unsupported",
]);

/** A W3C `traceparent` as carried in `open`: short text, checked by the receiver's tracer. */
export const traceparentSchema = z.string().max(64);

/** `hello`: first message each way; the relay answers with role "relay" and the peer identity. */
export const helloSchema = z.strictObject({
  type: z.literal("hello"),
  v: uint,
  role: z.enum(["connector", "agent", "relay"]),
  token: z.string().max(512).optional(),
  identity: z.string().max(1024).optional(),
  /**
   * A connector's process instance (random per start): lets an agent ask a second relay for
   * a channel to the same connector process that holds its end-to-end session.
   */
  instance: z.string().regex(/^[0-9a-f]{8,64}$/).optional(),
});
/** `register`: a connector offers services. */
export const registerSchema = z.strictObject({
  type: z.literal("register"),
  services: z.array(z.strictObject({ name: serviceNameSchema, protocol: serviceProtocolSchema }))
    .min(1).max(256),
});
/** `registered`: the relay's answer to `register`. */
export const registeredSchema = z.strictObject({
  type: z.literal("registered"),
  services: z.array(serviceNameSchema).max(256),
  rejected: z.array(z.strictObject({ name: z.string(), reason: z.string() })).max(256),
});
/** `deregister`: a connector withdraws services (all when `services` is absent). */
export const deregisterSchema = z.strictObject({
  type: z.literal("deregister"),
  services: z.array(serviceNameSchema).max(256).optional(),
});
/** `open`: ask for a flow; `flow` is set when the relay asks a connector to open its side. */
export const openSchema = z.strictObject({
  type: z.literal("open"),
  id: uint,
  service: serviceNameSchema,
  protocol: serviceProtocolSchema,
  flow: uint.optional(),
  /**
   * The agent identity the flow is for; set by the relay towards a connector, so that the
   * connector can bound what one identity holds of its sockets.
   */
  agent: z.string().min(1).max(256).optional(),
  /**
   * Set by the relay for a UDP flow: the largest DATAGRAM frame (flow id included) it can
   * forward to the far end; the receiver fragments by the smaller of this and its own limit.
   */
  max_datagram: uint.optional(),
  /**
   * W3C `traceparent` of the sender's span of this flow's setup (docs/PROTOCOL.md §3), when it
   * traces. Optional; a value that does not parse as version 00 is ignored, not refused.
   */
  traceparent: traceparentSchema.optional(),
});
/**
 * `opened`: the flow for request `id`; for a UDP flow the relay adds `max_datagram` (see
 * `open`).
 */
export const openedSchema = z.strictObject({
  type: z.literal("opened"),
  id: uint,
  flow: uint,
  max_datagram: uint.optional(),
});
/** `refused`: request `id` was refused. */
export const refusedSchema = z.strictObject({
  type: z.literal("refused"),
  id: uint,
  reason: refusedReasonSchema,
  message: z.string(),
});
/** `close`: a flow ended. */
export const closeSchema = z.strictObject({
  type: z.literal("close"),
  flow: uint,
  reason: z.string().optional(),
});
/** An end-to-end session's id: chosen by the agent, the same through every relay. */
export const sessionIdSchema = z.string().regex(/^[0-9a-f]{32}$/);
/** A channel's id on one side (u32, never 0). */
const channelIdSchema = z.int().min(1).max(0xffff_ffff);
/**
 * `session_open`: an agent asks for a channel to a connector of `service` for its end-to-end
 * session `session`; with `connector`, to that connector instance (moving a live session).
 */
export const sessionOpenSchema = z.strictObject({
  type: z.literal("session_open"),
  id: uint,
  service: serviceNameSchema,
  session: sessionIdSchema,
  connector: z.string().regex(/^[0-9a-f]{8,64}$/).optional(),
  /** W3C `traceparent` of the flow setup that needed the session, as in `open`. */
  traceparent: traceparentSchema.optional(),
});
/**
 * `session_opened`: the relay's answer to `session_open`: the agent's channel id, the
 * connector identity its certificate must name, its instance, and the services granted.
 */
export const sessionOpenedSchema = z.strictObject({
  type: z.literal("session_opened"),
  id: uint,
  channel: channelIdSchema,
  connector: z.string().min(1).max(256),
  instance: z.string().regex(/^[0-9a-f]{8,64}$/),
  services: z.array(serviceNameSchema).max(256),
});
/**
 * `channel`: the relay tells a connector that channel `channel` (its side's id) carries
 * end-to-end session `session` of agent identity `agent`, for `services`. Sent again when the
 * grant changes (a policy reload).
 */
export const channelSchema = z.strictObject({
  type: z.literal("channel"),
  channel: channelIdSchema,
  agent: z.string().min(1).max(256),
  session: sessionIdSchema,
  services: z.array(serviceNameSchema).max(256),
});
/** `channel_ready`: the connector is ready for packets on `channel`. */
export const channelReadySchema = z.strictObject({
  type: z.literal("channel_ready"),
  channel: channelIdSchema,
});
/**
 * The `channel_closed` reason of a connector that got packets for a session it does not have
 * (any more): the agent ends that session instead of moving it.
 */
export const SESSION_GONE = "session_gone";

/** `channel_closed`: the sender removed channel `channel` (the receiver's side id). */
export const channelClosedSchema = z.strictObject({
  type: z.literal("channel_closed"),
  channel: channelIdSchema,
  reason: z.string().max(256),
});
/** `service_down`: the relay tells agents a service lost its connectors. */
export const serviceDownSchema = z.strictObject({
  type: z.literal("service_down"),
  service: serviceNameSchema,
});
/** `service_up`: the relay tells agents a service is reachable again. */
export const serviceUpSchema = z.strictObject({
  type: z.literal("service_up"),
  service: serviceNameSchema,
});
/** `draining`: the peer is shutting down; reconnect elsewhere after `reconnect_ms`. */
export const drainingSchema = z.strictObject({ type: z.literal("draining"), reconnect_ms: uint });
/** `ping`: liveness probe. */
export const pingSchema = z.strictObject({ type: z.literal("ping"), seq: uint });
/** `pong`: answer to `ping` with the same `seq`. */
export const pongSchema = z.strictObject({ type: z.literal("pong"), seq: uint });
/** `error`: the sender reports a failure before closing. */
export const errorSchema = z.strictObject({
  type: z.literal("error"),
  code: z.string(),
  message: z.string(),
});

/** Any control message, discriminated on `type`. */
export const controlMessageSchema = z.discriminatedUnion("type", [
  helloSchema,
  registerSchema,
  registeredSchema,
  deregisterSchema,
  openSchema,
  openedSchema,
  refusedSchema,
  closeSchema,
  sessionOpenSchema,
  sessionOpenedSchema,
  channelSchema,
  channelReadySchema,
  channelClosedSchema,
  serviceDownSchema,
  serviceUpSchema,
  drainingSchema,
  pingSchema,
  pongSchema,
  errorSchema,
]);

/** Any control message. */
export type ControlMessage = z.infer<typeof controlMessageSchema>;
/** The `type` of a control message. */
export type ControlMessageType = ControlMessage["type"];
/** Transport of a service or flow. */
export type ServiceProtocol = z.infer<typeof serviceProtocolSchema>;
/** Why an `open` was refused. */
export type RefusedReason = z.infer<typeof refusedReasonSchema>;
/** `hello` message. */
export type HelloMessage = z.infer<typeof helloSchema>;
/** `register` message. */
export type RegisterMessage = z.infer<typeof registerSchema>;
/** `registered` message. */
export type RegisteredMessage = z.infer<typeof registeredSchema>;
/** `deregister` message. */
export type DeregisterMessage = z.infer<typeof deregisterSchema>;
/** `open` message. */
export type OpenMessage = z.infer<typeof openSchema>;
/** `opened` message. */
export type OpenedMessage = z.infer<typeof openedSchema>;
/** `refused` message. */
export type RefusedMessage = z.infer<typeof refusedSchema>;
/** `close` message. */
export type CloseMessage = z.infer<typeof closeSchema>;
/** `session_open` message. */
export type SessionOpenMessage = z.infer<typeof sessionOpenSchema>;
/** `session_opened` message. */
export type SessionOpenedMessage = z.infer<typeof sessionOpenedSchema>;
/** `channel` message. */
export type ChannelMessage = z.infer<typeof channelSchema>;
/** `service_down` message. */
export type ServiceDownMessage = z.infer<typeof serviceDownSchema>;
/** `service_up` message. */
export type ServiceUpMessage = z.infer<typeof serviceUpSchema>;
/** `draining` message. */
export type DrainingMessage = z.infer<typeof drainingSchema>;
/** `ping` message. */
export type PingMessage = z.infer<typeof pingSchema>;
/** `pong` message. */
export type PongMessage = z.infer<typeof pongSchema>;
/** `error` message. */
export type ErrorMessage = z.infer<typeof errorSchema>;

/** Why a control frame was rejected. */
export type ProtocolErrorReason = "oversized_frame" | "malformed_json" | "invalid_message";

/** A control frame violated the protocol; the connection should be closed. */
export class ProtocolError extends Error {
  /** What was wrong, for the close reason and metrics label. */
  readonly reason: ProtocolErrorReason;

  /**
   * Constructs a new instance.
   *
   * @param reason What was wrong.
   * @param message Human-readable detail.
   * @param options Standard error options (`cause`).
   */
  constructor(reason: ProtocolErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
    this.reason = reason;
  }
}

/** Options for {@linkcode encodeControl} and {@linkcode createControlDecoder}. */
export interface ControlFrameOptions {
  /**
   * Largest JSON body of one frame, in bytes (the 4-byte prefix not included).
   *
   * @default {65536}
   */
  maxFrameBytes?: number;
}

/** Incremental decoder for one control stream. */
export interface ControlDecoder {
  /**
   * Feeds stream bytes and returns the messages completed by them, in order.
   * After it throws, the decoder is failed and every later call throws the same error.
   *
   * @param chunk Bytes read from the stream (not retained; may be reused by the caller).
   * @returns Zero or more messages.
   * @throws {ProtocolError} On an oversized frame, malformed JSON or an invalid message.
   */
  push(chunk: Uint8Array): ControlMessage[];
  /** Bytes of the incomplete frame received so far, length prefix included. */
  readonly buffered: number;
  /**
   * The largest frame body accepted from now on (e.g. raised once the peer authenticated);
   * a frame whose length prefix was already read keeps the limit it was checked against.
   */
  maxFrameBytes: number;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function resolveMaxFrameBytes(options: ControlFrameOptions, action: string): number {
  const { maxFrameBytes = DEFAULT_MAX_FRAME_BYTES } = options;
  if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 2 || maxFrameBytes > 0xffff_ffff) {
    throw new RangeError(
      `Cannot ${action} as 'maxFrameBytes' must be an integer in [2, 2^32-1]: current value is ${maxFrameBytes}`,
    );
  }
  return maxFrameBytes;
}

function describeIssues(error: z.ZodError): string {
  const issue = error.issues[0];
  const path = issue.path.length === 0 ? "(root)" : issue.path.join(".");
  const more = error.issues.length > 1 ? ` (+${error.issues.length - 1} more)` : "";
  return `${path}: ${issue.message}${more}`;
}

function validate(value: unknown): ControlMessage {
  const result = controlMessageSchema.safeParse(value);
  if (!result.success) {
    throw new ProtocolError(
      "invalid_message",
      `Invalid control message: ${describeIssues(result.error)}`,
      { cause: result.error },
    );
  }
  return result.data;
}

/**
 * Validates and encodes a control message as one frame.
 *
 * @example Usage
 * ```ts
 * import { createControlDecoder, encodeControl, PROTOCOL_VERSION } from "./control.ts";
 * import assert from "node:assert/strict";
 *
 * const frame = encodeControl({ type: "hello", v: PROTOCOL_VERSION, role: "agent" });
 * const decoder = createControlDecoder();
 * assert.deepEqual(decoder.push(frame), [{ type: "hello", v: 2, role: "agent" }]);
 * ```
 *
 * @param msg The message.
 * @param options Frame size limit.
 * @returns The frame: length prefix and JSON body.
 * @throws {ProtocolError} When `msg` is invalid (`invalid_message`) or too big (`oversized_frame`).
 */
export function encodeControl(msg: ControlMessage, options: ControlFrameOptions = {}): Uint8Array {
  const maxFrameBytes = resolveMaxFrameBytes(options, "encode control message");
  const body = textEncoder.encode(JSON.stringify(validate(msg)));
  if (body.length > maxFrameBytes) {
    throw new ProtocolError(
      "oversized_frame",
      `Control frame of ${body.length} bytes exceeds the limit of ${maxFrameBytes} bytes`,
    );
  }
  const frame = new Uint8Array(PREFIX_LENGTH + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, PREFIX_LENGTH);
  return frame;
}

function decodeBody(body: Uint8Array): ControlMessage {
  let value: unknown;
  try {
    value = JSON.parse(textDecoder.decode(body));
  } catch (error) {
    throw new ProtocolError("malformed_json", "Control frame is not UTF-8 JSON", {
      cause: error,
    });
  }
  return validate(value);
}

/**
 * Creates an incremental control-stream decoder. Frames may be split across
 * pushes at any byte; an oversized frame is detected from its length prefix
 * before any of its body is buffered, and a complete frame inside one chunk is
 * decoded without copying.
 *
 * @example Usage
 * ```ts
 * import { createControlDecoder, encodeControl } from "./control.ts";
 * import assert from "node:assert/strict";
 *
 * const frame = encodeControl({ type: "ping", seq: 1 });
 * const decoder = createControlDecoder();
 * assert.deepEqual(decoder.push(frame.subarray(0, 3)), []);
 * assert.equal(decoder.buffered, 3);
 * assert.deepEqual(decoder.push(frame.subarray(3)), [{ type: "ping", seq: 1 }]);
 * ```
 *
 * @param options Frame size limit.
 * @returns The decoder.
 */
export function createControlDecoder(options: ControlFrameOptions = {}): ControlDecoder {
  let maxFrameBytes = resolveMaxFrameBytes(options, "create control decoder");
  const prefix = new Uint8Array(PREFIX_LENGTH);
  let prefixFilled = 0;
  /** The incomplete frame's bytes so far; it grows as they arrive, up to `bodyLength`. */
  let body: Uint8Array | null = null;
  let bodyLength = 0;
  let bodyFilled = 0;
  let failure: ProtocolError | null = null;

  /**
   * Starts buffering a frame of `length` bytes. Memory follows what the peer has actually
   * sent, not what its length prefix claims: a prefix alone (400 silent connections, each
   * declaring 64 KiB) cost about 64 KiB per connection when the body was allocated whole.
   */
  function startBody(length: number): Uint8Array {
    bodyLength = length;
    bodyFilled = 0;
    return new Uint8Array(Math.min(length, INITIAL_BODY_BYTES));
  }

  function reserve(current: Uint8Array, needed: number): Uint8Array {
    if (needed <= current.length) return current;
    const grown = new Uint8Array(Math.min(bodyLength, Math.max(needed, 2 * current.length)));
    grown.set(current.subarray(0, bodyFilled));
    return grown;
  }

  function checkLength(length: number): void {
    if (length > maxFrameBytes) {
      throw new ProtocolError(
        "oversized_frame",
        `Control frame of ${length} bytes exceeds the limit of ${maxFrameBytes} bytes`,
      );
    }
    if (length === 0) throw new ProtocolError("malformed_json", "Control frame is empty");
  }

  function readLength(bytes: Uint8Array, offset: number): number {
    return ((bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) |
      bytes[offset + 3]) >>> 0;
  }

  function decodeChunk(chunk: Uint8Array): ControlMessage[] {
    const messages: ControlMessage[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (body === null) {
        if (prefixFilled === 0 && chunk.length - offset >= PREFIX_LENGTH) {
          const length = readLength(chunk, offset);
          checkLength(length);
          offset += PREFIX_LENGTH;
          if (chunk.length - offset >= length) {
            // Whole frame inside this chunk: decode in place.
            messages.push(decodeBody(chunk.subarray(offset, offset + length)));
            offset += length;
            continue;
          }
          body = startBody(length);
        } else {
          const take = Math.min(PREFIX_LENGTH - prefixFilled, chunk.length - offset);
          prefix.set(chunk.subarray(offset, offset + take), prefixFilled);
          prefixFilled += take;
          offset += take;
          if (prefixFilled < PREFIX_LENGTH) break;
          prefixFilled = 0;
          const length = readLength(prefix, 0);
          checkLength(length);
          body = startBody(length);
        }
      }
      const take = Math.min(bodyLength - bodyFilled, chunk.length - offset);
      body = reserve(body, bodyFilled + take);
      body.set(chunk.subarray(offset, offset + take), bodyFilled);
      bodyFilled += take;
      offset += take;
      if (bodyFilled === bodyLength) {
        const complete = body.subarray(0, bodyLength);
        body = null;
        bodyFilled = 0;
        messages.push(decodeBody(complete));
      }
    }
    return messages;
  }

  return {
    push(chunk: Uint8Array): ControlMessage[] {
      if (failure !== null) throw failure;
      try {
        return decodeChunk(chunk);
      } catch (error) {
        failure = error instanceof ProtocolError
          ? error
          : new ProtocolError("malformed_json", "Control frame could not be decoded", {
            cause: error,
          });
        throw failure;
      }
    },
    get buffered() {
      return body === null ? prefixFilled : PREFIX_LENGTH + bodyFilled;
    },
    get maxFrameBytes() {
      return maxFrameBytes;
    },
    set maxFrameBytes(value: number) {
      maxFrameBytes = resolveMaxFrameBytes({ maxFrameBytes: value }, "set control frame limit");
    },
  };
}
