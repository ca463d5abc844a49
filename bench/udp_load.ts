/**
 * UDP load generator, run as its own process so its CPU is not the tunnel's: sends paced
 * datagrams of one size to a target in steps of increasing offered rate and, in echo mode,
 * counts the echoes and their round-trip times.
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-ffi=<libc> bench/udp_load.ts '<json plan>'`
 * (without the libc grant it falls back to the portable socket), where the plan is
 * {@linkcode LoadPlan}. Prints JSON lines: `{"msg":"step",…}` per step, then `{"msg":"done"}`.
 *
 * Every datagram starts with `u32 step | u32 seq | f64 sent_at_ms`; the sink (or the echo
 * path) uses the step number to attribute each datagram to its step.
 *
 * @module
 */

import { openUdpSocket, udpTarget } from "../shared/quic/udp_socket.ts";

/** What the generator does. */
export interface LoadPlan {
  /** Destination `host:port`. */
  target: string;
  /** Payload bytes (at least 16). */
  size: number;
  /** Offered rates in datagrams per second, one step each. */
  rates: number[];
  /** Duration of each step. */
  stepMs: number;
  /** Wait after each step for stragglers (echoes, sink counts). */
  settleMs: number;
  /** Count echoes and round trips. */
  echo: boolean;
  /** Datagrams sent (slowly) before the steps, to open the tunnel flow. */
  warmup: number;
}

/** The outcome of one step. */
export interface StepResult {
  msg: "step";
  step: number;
  rate: number;
  sent: number;
  /** Achieved send rate (the generator itself may fall short of the offer). */
  sentRate: number;
  echoed: number;
  /** Round-trip times in ms (echo mode): p50, p99, p99.9, max. */
  rtt: { p50: number; p99: number; p999: number; max: number } | null;
}

export const HEADER_BYTES = 16;

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))];
}

async function run(plan: LoadPlan): Promise<void> {
  const [host, portText] = [
    plan.target.slice(0, plan.target.lastIndexOf(":")),
    plan.target.slice(plan.target.lastIndexOf(":") + 1),
  ];
  const to = udpTarget(host, Number(portText));
  let currentStep = -1;
  let echoed = 0;
  let rtts: number[] = [];
  // The product's socket layer (batched where it can run): the generator must outpace the
  // tunnel it measures.
  const socket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    sendBufferBytes: Math.max(2048, plan.size),
    onPacket(data) {
      if (data.length < HEADER_BYTES) return;
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      if (view.getUint32(0) !== currentStep) return;
      echoed++;
      rtts.push(performance.now() - view.getFloat64(8));
    },
  });
  console.error(JSON.stringify({ msg: "socket", kind: socket.kind }));
  const payload = new Uint8Array(plan.size);
  const header = new DataView(payload.buffer);

  function send(step: number, seq: number): void {
    header.setUint32(0, step);
    header.setUint32(4, seq);
    header.setFloat64(8, performance.now());
    socket.send(payload, to);
  }

  // Warm-up (step 0xffffffff): opens the agent's flow before any measured step.
  for (let i = 0; i < plan.warmup; i++) {
    send(0xffffffff, i);
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, plan.warmup > 0 ? 300 : 0));

  for (let step = 0; step < plan.rates.length; step++) {
    const rate = plan.rates[step];
    currentStep = step;
    echoed = 0;
    rtts = [];
    const started = performance.now();
    const total = Math.round(rate * plan.stepMs / 1000);
    let sent = 0;
    // Send what is due by now (they leave together at the end of the turn), then let the
    // reader run; sleep 1 ms when nothing is due: bursts of about rate/1000 per ms.
    while (sent < total) {
      const due = Math.min(total, Math.floor((performance.now() - started) * rate / 1000));
      if (due <= sent) {
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      const burstEnd = Math.min(due, sent + 256);
      for (; sent < burstEnd; sent++) send(step, sent);
      await new Promise((r) => setTimeout(r, 0));
    }
    const elapsed = performance.now() - started;
    await new Promise((r) => setTimeout(r, plan.settleMs));
    const sorted = rtts.sort((a, b) => a - b);
    const result: StepResult = {
      msg: "step",
      step,
      rate,
      sent,
      sentRate: Math.round(sent / (elapsed / 1000)),
      echoed,
      rtt: plan.echo
        ? {
          p50: pct(sorted, 50),
          p99: pct(sorted, 99),
          p999: pct(sorted, 99.9),
          max: pct(sorted, 100),
        }
        : null,
    };
    console.log(JSON.stringify(result));
  }
  socket.close();
  await socket.closed;
  console.log(JSON.stringify({ msg: "done" }));
}

if (import.meta.main) {
  const plan = JSON.parse(Deno.args[0]) as LoadPlan;
  console.log(JSON.stringify({ msg: "ready" }));
  await run(plan);
}
