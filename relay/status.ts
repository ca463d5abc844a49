/**
 * The relay's `/status` document: for each service its connectors and open flows, the
 * channels of end-to-end sessions (who to whom, since, encrypted bytes), the connected
 * agents with identity, address, since and bytes, the relay's uptime and drain state. Identities and addresses only: no token, key or certificate ever appears here.
 *
 * @module
 */
import { addTotals, emptyTotals, type FlowEntry, type FlowTotals } from "../shared/flow_ledger.ts";
import type { StatusPage } from "../shared/ops/status_page.ts";

/** One authenticated connection, as the relay knows it. */
export interface StatusSession {
  role: "connector" | "agent";
  identity: string;
  peer: string;
  /** Unix ms. */
  since: number;
  /** Services a connector registered. */
  offers: string[];
  /** Totals of the agent's closed flows. */
  closedTotals: FlowTotals;
}

/** One channel of an end-to-end session, as the relay knows it. */
export interface StatusChannel {
  /** The agent side's id. */
  channel: number;
  agent: string;
  agentPeer: string;
  connector: string;
  services: string[];
  /** Unix ms. */
  since: number;
  /** Encrypted bytes forwarded each way. */
  bytesToConnector: number;
  bytesToAgent: number;
}

/** What {@linkcode relayStatus} reads. */
export interface RelayStatusInput {
  relayId: string;
  draining: boolean;
  /** Services of the current policy. */
  services: string[];
  sessions: StatusSession[];
  /** Open flows (the ledger's live entries). */
  flows: FlowEntry[];
  /** Live channels. */
  channels: StatusChannel[];
  /** Per-service totals since start (closed and open flows). */
  traffic: Map<string, FlowTotals>;
  /** Services with at least one registered connector. */
  servicesRegistered: number;
  /** Seconds since the process started. @default {performance.now() / 1000} */
  uptimeSeconds?: number;
  /** Clock. @default {Date.now} */
  now?: () => number;
}

/** Bytes and packets each way, as status and audit print them. */
export interface TrafficFields {
  bytes_to_service: number;
  bytes_to_agent: number;
  packets_to_service: number;
  packets_to_agent: number;
}

/** The `/status.json` document. */
export interface RelayStatus {
  relay_id: string;
  time: string;
  uptime_seconds: number;
  draining: boolean;
  connections: { connector: number; agent: number };
  flows_active: { udp: number; tcp: number };
  channels_active: number;
  services_registered: number;
  services: ({
    name: string;
    connectors: { identity: string; peer: string; since: string }[];
    flows: ({
      flow: number;
      protocol: string;
      agent: string;
      agent_peer: string;
      connector: string;
      since: string;
    } & TrafficFields)[];
  } & TrafficFields)[];
  channels: {
    channel: number;
    agent: string;
    agent_peer: string;
    connector: string;
    services: string[];
    since: string;
    bytes_to_connector: number;
    bytes_to_agent: number;
  }[];
  agents: ({
    identity: string;
    peer: string;
    since: string;
    flows: number;
    channels: number;
  } & TrafficFields)[];
}

const traffic = (t: FlowTotals): TrafficFields => ({
  bytes_to_service: t.bytesToService,
  bytes_to_agent: t.bytesToAgent,
  packets_to_service: t.packetsToService,
  packets_to_agent: t.packetsToAgent,
});

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Builds the status document.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { relayStatus } from "./status.ts";
 *
 * const status = relayStatus({
 *   relayId: "r1",
 *   draining: false,
 *   services: ["echo"],
 *   sessions: [],
 *   flows: [],
 *   channels: [],
 *   traffic: new Map(),
 *   servicesRegistered: 0,
 *   uptimeSeconds: 5,
 *   now: () => 0,
 * });
 * assert.equal(status.services[0].name, "echo");
 * assert.deepEqual(status.connections, { connector: 0, agent: 0 });
 * ```
 *
 * @param input The relay's live state.
 * @returns The document.
 */
export function relayStatus(input: RelayStatusInput): RelayStatus {
  const { now = Date.now } = input;
  const connections = { connector: 0, agent: 0 };
  for (const session of input.sessions) connections[session.role]++;
  const flowsActive = { udp: 0, tcp: 0 };
  for (const flow of input.flows) flowsActive[flow.protocol]++;
  const names = [...new Set([...input.services, ...input.flows.map((f) => f.service)])].sort();
  // A live connection's peer address is unique on the relay's socket: it ties flows to agents.
  const byPeer = new Map<string, FlowEntry[]>();
  for (const flow of input.flows) {
    const peer = String(flow.fields.peer);
    byPeer.set(peer, [...byPeer.get(peer) ?? [], flow]);
  }
  return {
    relay_id: input.relayId,
    time: iso(now()),
    uptime_seconds: Math.round(input.uptimeSeconds ?? performance.now() / 1000),
    draining: input.draining,
    connections,
    flows_active: flowsActive,
    channels_active: input.channels.length,
    services_registered: input.servicesRegistered,
    services: names.map((name) => ({
      name,
      connectors: input.sessions
        .filter((s) => s.role === "connector" && s.offers.includes(name))
        .map((s) => ({ identity: s.identity, peer: s.peer, since: iso(s.since) })),
      flows: input.flows.filter((f) => f.service === name).map((f) => ({
        flow: f.id,
        protocol: f.protocol,
        agent: String(f.fields.identity),
        agent_peer: String(f.fields.peer),
        connector: String(f.fields.connector),
        since: iso(f.since),
        ...traffic(f),
      })),
      ...traffic(input.traffic.get(name) ?? emptyTotals()),
    })),
    channels: input.channels.map((c) => ({
      channel: c.channel,
      agent: c.agent,
      agent_peer: c.agentPeer,
      connector: c.connector,
      services: c.services,
      since: iso(c.since),
      bytes_to_connector: c.bytesToConnector,
      bytes_to_agent: c.bytesToAgent,
    })),
    agents: input.sessions.filter((s) => s.role === "agent").map((s) => {
      const flows = byPeer.get(s.peer) ?? [];
      const sum = { ...s.closedTotals };
      for (const f of flows) addTotals(sum, f);
      return {
        identity: s.identity,
        peer: s.peer,
        since: iso(s.since),
        flows: flows.length,
        channels: input.channels.filter((c) => c.agentPeer === s.peer).length,
        ...traffic(sum),
      };
    }),
  };
}

/**
 * The status document as the page shows it: a summary, one table per service (its
 * connectors and open flows), and the agents.
 *
 * @param status The document.
 * @returns The page.
 */
export function relayStatusPage(status: RelayStatus): StatusPage {
  const bytes = (t: TrafficFields) => `${t.bytes_to_service} / ${t.bytes_to_agent}`;
  return {
    title: `ztna-edge relay ${status.relay_id}`,
    summary: [
      ["Relay", status.relay_id],
      ["Uptime", `${status.uptime_seconds} s`],
      ["State", status.draining ? "draining" : "serving"],
      [
        "Connections",
        `${status.connections.connector} connectors, ${status.connections.agent} agents`,
      ],
      ["Open flows", `${status.flows_active.udp} UDP, ${status.flows_active.tcp} TCP`],
      ["Channels", String(status.channels_active)],
      ["As of", status.time],
    ],
    sections: [
      ...status.services.map((service) => ({
        id: `service-${service.name}`,
        heading: `Service ${service.name}`,
        note: `bytes to service / to agent since start: ${bytes(service)}`,
        tables: [
          {
            caption: "Connectors",
            className: "connectors",
            columns: ["Identity", "Address", "Since"],
            rows: service.connectors.map((c) => [c.identity, c.peer, c.since]),
          },
          {
            caption: "Open flows",
            className: "flows",
            columns: [
              "Flow",
              "Protocol",
              "Agent",
              "Agent address",
              "Connector",
              "Since",
              "Bytes to service / to agent",
            ],
            rows: service.flows.map((f) => [
              String(f.flow),
              f.protocol,
              f.agent,
              f.agent_peer,
              f.connector,
              f.since,
              bytes(f),
            ]),
          },
        ],
      })),
      {
        id: "channels",
        heading: "Channels",
        note: "end-to-end sessions, forwarded blind: the bytes are encrypted",
        tables: [{
          caption: "Live channels",
          className: "channels",
          columns: [
            "Channel",
            "Agent",
            "Agent address",
            "Connector",
            "Services",
            "Since",
            "Bytes to connector / to agent",
          ],
          rows: status.channels.map((c) => [
            String(c.channel),
            c.agent,
            c.agent_peer,
            c.connector,
            c.services.join(", "),
            c.since,
            `${c.bytes_to_connector} / ${c.bytes_to_agent}`,
          ]),
        }],
      },
      {
        id: "agents",
        heading: "Agents",
        tables: [{
          caption: "Connected agents",
          className: "agents",
          columns: [
            "Identity",
            "Address",
            "Since",
            "Open flows",
            "Channels",
            "Bytes to service / to agent",
          ],
          rows: status.agents.map((a) => [
            a.identity,
            a.peer,
            a.since,
            String(a.flows),
            String(a.channels),
            bytes(a),
          ]),
        }],
      },
    ],
  };
}
