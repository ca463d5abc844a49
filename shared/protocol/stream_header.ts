/**
 * The header at the start of every TCP-flow stream: `u16 big-endian length + UTF-8 JSON
 * object`, validated with zod. The opener of a stream sends `open`; the other side answers
 * with `opened` or `refused` before any payload byte flows back. After the header the stream
 * carries the TCP byte stream as `u16 length | payload` chunks, ended by a zero-length chunk
 * sent with the FIN (`stream_chunks.ts`, pumped by `shared/tcp_pipe.ts`).
 *
 * The decoder never asks for more bytes than the header still needs, so a reader can pull
 * exactly the header off a stream and leave the payload behind it unread (and so under
 * QUIC flow control).
 *
 * @module
 */
import { z } from "zod";
import {
  ProtocolError,
  refusedReasonSchema,
  serviceNameSchema,
  traceparentSchema,
} from "./control.ts";

/** Largest JSON body of a stream header, in bytes. */
export const MAX_STREAM_HEADER_BYTES = 1024;

/** Length of the header's length prefix. */
const PREFIX_LENGTH = 2;
const uint = z.int().nonnegative();

/** `open`: the first bytes of a new TCP-flow stream (agent → relay, relay → connector). */
export const streamOpenSchema = z.strictObject({
  type: z.literal("open"),
  service: serviceNameSchema,
  protocol: z.literal("tcp"),
  /** The flow id on the receiving connection; set by the relay towards a connector. */
  flow: uint.optional(),
  /** The agent identity the flow is for; set by the relay towards a connector. */
  agent: z.string().min(1).max(256).optional(),
  /** W3C `traceparent` of the sender's span of this flow's setup, as in control `open`. */
  traceparent: traceparentSchema.optional(),
});
/** `opened`: the backend is connected; payload follows. `flow` is the receiver's flow id. */
export const streamOpenedSchema = z.strictObject({
  type: z.literal("opened"),
  flow: uint.optional(),
});
/** `refused`: no flow; the sender finishes the stream right after this header. */
export const streamRefusedSchema = z.strictObject({
  type: z.literal("refused"),
  reason: refusedReasonSchema,
  message: z.string().max(512),
});

/** Any stream header, discriminated on `type`. */
export const streamHeaderSchema = z.discriminatedUnion("type", [
  streamOpenSchema,
  streamOpenedSchema,
  streamRefusedSchema,
]);

/** Any stream header. */
export type StreamHeader = z.infer<typeof streamHeaderSchema>;
/** `open` stream header. */
export type StreamOpen = z.infer<typeof streamOpenSchema>;
/** The answer to an `open` stream header. */
export type StreamAnswer = Exclude<StreamHeader, StreamOpen>;

/**
 * Application error codes of RESET_STREAM / STOP_SENDING on TCP-flow streams.
 * A TCP reset on one end becomes `TCP_RESET` on the stream and a close on the other end.
 */
export const StreamCode = {
  /** The TCP connection at the far end was reset (or failed). */
  TCP_RESET: 1,
  /** The stream header was missing, malformed or unexpected. */
  PROTOCOL_VIOLATION: 2,
  /** The flow ended because a QUIC connection or the process went away. */
  GOING_AWAY: 3,
  /** A policy change took the flow's permission away. */
  FORBIDDEN: 4,
} as const;

/** The end-of-data chunk; defined with the rest of the chunk framing in `stream_chunks.ts`. */
export { END_CHUNK } from "./stream_chunks.ts";

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Validates and encodes a stream header.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeStreamHeader } from "./stream_header.ts";
 *
 * const bytes = encodeStreamHeader({ type: "opened" });
 * assert.deepEqual([...bytes.subarray(0, 2)], [0, 17]);
 * ```
 *
 * @param header The header.
 * @returns Length prefix and JSON body.
 * @throws {ProtocolError} When the header is invalid or longer than
 * {@linkcode MAX_STREAM_HEADER_BYTES}.
 */
export function encodeStreamHeader(header: StreamHeader): Uint8Array {
  const parsed = streamHeaderSchema.safeParse(header);
  if (!parsed.success) {
    throw new ProtocolError("invalid_message", `Invalid stream header: ${parsed.error.message}`);
  }
  const body = textEncoder.encode(JSON.stringify(parsed.data));
  if (body.length > MAX_STREAM_HEADER_BYTES) {
    throw new ProtocolError(
      "oversized_frame",
      `Stream header of ${body.length} bytes exceeds ${MAX_STREAM_HEADER_BYTES}`,
    );
  }
  const bytes = new Uint8Array(PREFIX_LENGTH + body.length);
  new DataView(bytes.buffer).setUint16(0, body.length);
  bytes.set(body, PREFIX_LENGTH);
  return bytes;
}

/** Incremental decoder of one stream header. */
export interface StreamHeaderDecoder {
  /** How many more bytes the header needs; read at most this many from the stream. */
  wanted(): number;
  /**
   * Feeds bytes (never more than {@linkcode StreamHeaderDecoder.wanted}); returns the
   * header once complete, otherwise null.
   *
   * @throws {ProtocolError} On an empty or oversized length, bad JSON or an invalid header.
   */
  push(chunk: Uint8Array): StreamHeader | null;
}

/**
 * Creates a decoder for one stream header.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createStreamHeaderDecoder, encodeStreamHeader } from "./stream_header.ts";
 *
 * const bytes = encodeStreamHeader({ type: "open", service: "web", protocol: "tcp" });
 * const decoder = createStreamHeaderDecoder();
 * assert.equal(decoder.wanted(), 2);
 * assert.equal(decoder.push(bytes.subarray(0, 2)), null);
 * assert.equal(decoder.wanted(), bytes.length - 2);
 * assert.deepEqual(decoder.push(bytes.subarray(2)), { type: "open", service: "web", protocol: "tcp" });
 * ```
 */
export function createStreamHeaderDecoder(): StreamHeaderDecoder {
  const prefix = new Uint8Array(PREFIX_LENGTH);
  let prefixFilled = 0;
  let body: Uint8Array | null = null;
  let bodyFilled = 0;
  let done = false;

  return {
    wanted() {
      if (done) return 0;
      return body === null ? PREFIX_LENGTH - prefixFilled : body.length - bodyFilled;
    },
    push(chunk) {
      if (done || chunk.length > this.wanted()) {
        throw new ProtocolError("invalid_message", "Stream header decoder fed too many bytes");
      }
      if (body === null) {
        prefix.set(chunk, prefixFilled);
        prefixFilled += chunk.length;
        if (prefixFilled < PREFIX_LENGTH) return null;
        const length = (prefix[0] << 8) | prefix[1];
        if (length === 0) throw new ProtocolError("malformed_json", "Stream header is empty");
        if (length > MAX_STREAM_HEADER_BYTES) {
          throw new ProtocolError(
            "oversized_frame",
            `Stream header of ${length} bytes exceeds ${MAX_STREAM_HEADER_BYTES}`,
          );
        }
        body = new Uint8Array(length);
        return null;
      }
      body.set(chunk, bodyFilled);
      bodyFilled += chunk.length;
      if (bodyFilled < body.length) return null;
      done = true;
      let value: unknown;
      try {
        value = JSON.parse(textDecoder.decode(body));
      } catch (error) {
        throw new ProtocolError("malformed_json", "Stream header is not UTF-8 JSON", {
          cause: error,
        });
      }
      const parsed = streamHeaderSchema.safeParse(value);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new ProtocolError(
          "invalid_message",
          `Invalid stream header: ${issue.path.join(".") || "(root)"}: ${issue.message}`,
        );
      }
      return parsed.data;
    },
  };
}
