/**
 * A stateless CONNECTION_CLOSE in an Initial packet (RFC 9000 §10.2.3, RFC 9001 §5.2).
 *
 * The server answers an Initial whose Retry token is invalid with transport error
 * INVALID_TOKEN (RFC 9000 §8.1.3): the client already followed a Retry, so it would ignore
 * another one and only time out. quiche cannot write this packet for us: once a quiche
 * connection has read the ClientHello it sends its close in a Handshake packet, which the
 * client cannot decrypt yet. The packet is therefore built here, with the Initial keys both
 * sides derive from the client's Destination Connection ID.
 *
 * @module
 */
import { createCipheriv, createHmac } from "node:crypto";

/** QUIC v1's Initial salt (RFC 9001 §5.2). */
// deno-fmt-ignore
const INITIAL_SALT_V1 = Uint8Array.from([
  0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
  0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
]);

/** The transport error code INVALID_TOKEN (RFC 9000 §20.1). */
export const INVALID_TOKEN = 0x0b;

/** AEAD and header-protection keys of one direction of the Initial packet space. */
export interface InitialKeys {
  /** AES-128-GCM key. */
  key: Uint8Array;
  /** AEAD nonce base. */
  iv: Uint8Array;
  /** AES-128 header-protection key. */
  hp: Uint8Array;
}

const encoder = new TextEncoder();

/** HKDF-Expand-Label of TLS 1.3 for outputs of at most one SHA-256 block (32 bytes). */
function expandLabel(secret: Uint8Array, label: string, length: number): Uint8Array {
  const name = encoder.encode(`tls13 ${label}`);
  const info = new Uint8Array(4 + name.length);
  info[0] = length >> 8;
  info[1] = length & 0xff;
  info[2] = name.length;
  info.set(name, 3);
  // The trailing 0 is the empty context's length; 0x01 is HKDF's first block counter.
  return createHmac("sha256", secret).update(info).update(Uint8Array.of(1)).digest()
    .subarray(0, length);
}

/**
 * Derives the Initial secret (HKDF-Extract over the client's Destination Connection ID) and,
 * from it, one side's packet protection keys.
 *
 * @example
 * ```ts
 * import { initialKeys } from "./initial_close.ts";
 * const keys = initialKeys(new Uint8Array(8), "server");
 * if (keys.key.length !== 16 || keys.iv.length !== 12) throw new Error();
 * ```
 */
export function initialKeys(clientDcid: Uint8Array, side: "client" | "server"): InitialKeys {
  const initial = createHmac("sha256", INITIAL_SALT_V1).update(clientDcid).digest();
  const secret = expandLabel(initial, side === "server" ? "server in" : "client in", 32);
  return {
    key: expandLabel(secret, "quic key", 16),
    iv: expandLabel(secret, "quic iv", 12),
    hp: expandLabel(secret, "quic hp", 16),
  };
}

/**
 * Writes a QUIC v1 server Initial packet holding one CONNECTION_CLOSE frame (transport error
 * `errorCode`, no reason) into `out` and returns its length (about 60 bytes: far less than
 * the 1200-byte Initial it answers, so it cannot amplify). `clientDcid` and `clientScid` are
 * the connection ids of the client's Initial: the packet goes to `clientScid`, comes from
 * `clientDcid`, and is protected with the keys derived from `clientDcid`.
 *
 * @example
 * ```ts
 * import { INVALID_TOKEN, writeInitialClose } from "./initial_close.ts";
 * const out = new Uint8Array(1500);
 * const length = writeInitialClose(new Uint8Array(16), new Uint8Array(16), INVALID_TOKEN, out);
 * if ((out[0] & 0xf0) !== 0xc0 || length > 100) throw new Error();
 * ```
 */
export function writeInitialClose(
  clientDcid: Uint8Array,
  clientScid: Uint8Array,
  errorCode: number,
  out: Uint8Array,
): number {
  if (errorCode > 0x3f) throw new RangeError(`error code ${errorCode} needs a longer varint`);
  const keys = initialKeys(clientDcid, "server");
  // CONNECTION_CLOSE (type 0x1c), error code, offending frame type 0 (unknown), empty reason.
  const payload = Uint8Array.of(0x1c, errorCode, 0x00, 0x00);
  const tagLength = 16;
  let at = 0;
  // Initial packet type, one packet-number byte (packet number 0: our first and only packet).
  out[at++] = 0xc0;
  out[at++] = 0x00;
  out[at++] = 0x00;
  out[at++] = 0x00;
  out[at++] = 0x01;
  out[at++] = clientScid.length;
  out.set(clientScid, at);
  at += clientScid.length;
  out[at++] = clientDcid.length;
  out.set(clientDcid, at);
  at += clientDcid.length;
  out[at++] = 0x00; // token length
  const length = 1 + payload.length + tagLength;
  out[at++] = 0x40 | (length >> 8); // two-byte varint
  out[at++] = length & 0xff;
  const pnOffset = at;
  out[at++] = 0x00; // packet number 0
  const header = out.subarray(0, at);
  // The nonce is the IV XOR the packet number, which is 0 here.
  const aead = createCipheriv("aes-128-gcm", keys.key, keys.iv);
  aead.setAAD(header);
  const sealed = aead.update(payload);
  aead.final();
  out.set(sealed, at);
  at += sealed.length;
  out.set(aead.getAuthTag(), at);
  at += tagLength;
  // Header protection (RFC 9001 §5.4): the sample starts 4 bytes after the packet number.
  const sample = out.subarray(pnOffset + 4, pnOffset + 4 + 16);
  const mask = createCipheriv("aes-128-ecb", keys.hp, null).update(sample);
  out[0] ^= mask[0] & 0x0f;
  out[pnOffset] ^= mask[1];
  return at;
}
