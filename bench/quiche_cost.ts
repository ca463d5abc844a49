/**
 * The cost of quiche itself per DATAGRAM: two native connections (the same binding and
 * config the endpoint uses) pumped against each other in this process, no sockets, no
 * event loop. One datagram costs one encrypt (sender), one decrypt (receiver) and its share
 * of ACK traffic both ways: the work a relay must do per relayed datagram at the least.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import {
  createCa,
  createClientCertificate,
  createRelayCertificate,
} from "../shared/identity/dev_ca.ts";
import { CONN_ID_LEN, type NativeConnection, quiche } from "../shared/quic/native.ts";
import { createQuicConfig } from "../shared/quic/tls_config.ts";
import { cpuSeconds } from "./bench_util.ts";

/** The measured cost. */
export interface QuicheCost {
  datagrams: number;
  size: number;
  /** CPU microseconds per datagram (encrypt + decrypt + ACKs), from `/proc/self/stat`. */
  cpuMicros: number;
  /** Wall microseconds per datagram. */
  wallMicros: number;
}

/** Pumps `count` datagrams of `size` bytes from a client to a server connection. */
export async function measureQuicheCost(count = 100_000, size = 1200): Promise<QuicheCost> {
  const enc = new TextEncoder();
  const ca = await createCa();
  const relay = await createRelayCertificate(ca);
  const client = await createClientCertificate(ca, "bench");
  const serverConfig = createQuicConfig({
    cert: enc.encode(relay.cert),
    key: enc.encode(relay.key),
    ca: enc.encode(ca.cert),
  }, { datagramQueue: 4096 });
  const clientConfig = createQuicConfig({
    cert: enc.encode(client.cert),
    key: enc.encode(client.key),
    ca: enc.encode(ca.cert),
  }, { datagramQueue: 4096 });
  const serverAddr = { host: "127.0.0.1", port: 4433 };
  const clientAddr = { host: "127.0.0.1", port: 50000 };
  const c = quiche.Connection.connect(
    "localhost",
    randomBytes(CONN_ID_LEN),
    clientAddr,
    serverAddr,
    clientConfig,
  );
  const s = quiche.Connection.accept(
    randomBytes(CONN_ID_LEN),
    null,
    serverAddr,
    clientAddr,
    serverConfig,
  );
  const buffer = new Uint8Array(1500);
  const toServer = { from: clientAddr, to: serverAddr };
  const toClient = { from: serverAddr, to: clientAddr };
  let received = 0;
  const pump = (from: NativeConnection, to: NativeConnection, info: typeof toServer): number => {
    let packets = 0;
    for (;;) {
      let written: [number, unknown] | null;
      try {
        written = from.send(buffer);
      } catch {
        break;
      }
      if (written === null) break;
      packets++;
      try {
        to.recv(buffer.subarray(0, written[0]), info);
      } catch {
        // Done: nothing to do with the packet.
      }
    }
    return packets;
  };
  const drainDatagrams = () => {
    for (;;) {
      let d: Uint8Array | null;
      try {
        d = s.dgramRecvVec();
      } catch {
        break;
      }
      if (d === null) break;
      received++;
    }
  };
  for (let i = 0; i < 50 && !(c.isEstablished() && s.isEstablished()); i++) {
    pump(c, s, toServer);
    pump(s, c, toClient);
  }
  if (!c.isEstablished() || !s.isEstablished()) throw new Error("in-process handshake failed");
  const payload = new Uint8Array(size);
  const cpuBefore = cpuSeconds("self");
  const wallBefore = performance.now();
  let sent = 0;
  while (sent < count) {
    // A burst the size a congestion window allows, then the ACKs back: like real traffic.
    for (let i = 0; i < 32 && sent < count && !c.isDgramSendQueueFull(); i++, sent++) {
      c.dgramSend(payload);
    }
    pump(c, s, toServer);
    drainDatagrams();
    pump(s, c, toClient);
  }
  const wall = performance.now() - wallBefore;
  const cpu = cpuSeconds("self") - cpuBefore;
  if (received < count * 0.99) throw new Error(`only ${received} of ${count} datagrams arrived`);
  return {
    datagrams: count,
    size,
    cpuMicros: Number((cpu * 1e6 / count).toFixed(2)),
    wallMicros: Number((wall * 1e3 / count).toFixed(2)),
  };
}

if (import.meta.main) {
  console.log(JSON.stringify(await measureQuicheCost()));
}
