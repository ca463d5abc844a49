import assert from "node:assert/strict";
import { PROJECT_ROOT } from "../../tools/permissions.ts";
import { readLines } from "../../tools/text_lines.ts";

/** Runs a pasted shell command line from the project root; resolves with its output. */
async function shell(line: string, ms: number): Promise<{ code: number; out: string }> {
  const child = new Deno.Command("sh", {
    args: ["-c", line],
    cwd: PROJECT_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  const out = await child.output();
  clearTimeout(timer);
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, out: text };
}

Deno.test("deno task dev: starts the demo, and the printed agent and probe commands (UDP, TCP) work when pasted", async () => {
  const dev = new Deno.Command(Deno.execPath(), {
    args: ["task", "dev"],
    cwd: PROJECT_ROOT,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const printed: string[] = [];
  const stdout = dev.stdout.pipeTo(new WritableStream());
  let agentCommand: string | undefined;
  let probeCommand: string | undefined;
  let tcpProbeCommand: string | undefined;
  const reading = (async () => {
    for await (const line of readLines(dev.stderr)) {
      printed.push(line);
      if (line.includes("task agent --config")) agentCommand = line.trim();
      if (line.includes("task probe udp://")) probeCommand = line.trim();
      if (line.includes("task probe tcp://")) tcpProbeCommand = line.trim();
      if (agentCommand && probeCommand && tcpProbeCommand) return;
    }
  })();
  const timeout = new Promise<void>((r) => setTimeout(r, 60_000));
  await Promise.race([reading, timeout]);
  let agent: Deno.ChildProcess | undefined;
  try {
    assert.ok(
      agentCommand && probeCommand && tcpProbeCommand,
      `dev printed the commands:\n${printed.join("\n")}`,
    );
    assert.match(
      agentCommand,
      /^npx -y deno@2\.9\.6 task agent --config \.state\/dev\/agent\.json$/,
    );
    // Its own process group (setsid): the pasted command is npx → deno task → launcher →
    // agent, and the whole group must stop with the test.
    agent = new Deno.Command("setsid", {
      args: ["sh", "-c", agentCommand],
      cwd: PROJECT_ROOT,
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const agentLines = readLines(agent.stdout);
    for await (const line of agentLines) {
      if (line.includes('"relay link up"')) break;
    }
    for (const command of [probeCommand, tcpProbeCommand]) {
      const probe = await shell(command, 30_000);
      assert.equal(probe.code, 0, probe.out);
      assert.match(probe.out, /reply from 127\.0\.0\.1:\d+ in [\d.]+ ms: hello/);
    }
  } finally {
    if (agent) {
      await new Deno.Command("kill", { args: ["-TERM", "--", `-${agent.pid}`] }).output();
      await agent.status;
      await agent.stdout.cancel().catch(() => {});
    }
    dev.kill("SIGTERM");
    const status = await dev.status;
    await Promise.allSettled([stdout, reading]);
    assert.equal(status.code, 0, "dev stops cleanly on SIGTERM");
  }
});
