// Many Elastic OpAMP clients (@elastic/opamp-client-node 0.5.0) in one Node process, as one
// node's worth of Node.js agents. argv: endpoint, client count, heartbeat seconds. Each client
// is its own pod (storm-7d4b9c8f6-NNNNN) and acknowledges every config (APPLIED). Prints JSON
// lines: {"event":"configured"} once every client has a config, {"event":"summary", ...} on a
// `summary` line on stdin; shuts every client down (agent_disconnect) when stdin closes.
const dc = require('node:diagnostics_channel');
const { createOpAMPClient, AgentCapabilities, RemoteConfigStatuses, DIAG_CH_SEND_SUCCESS, DIAG_CH_SEND_FAIL } = require('@elastic/opamp-client-node');
const [endpoint, count, beat] = process.argv.slice(2);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
let sendOk = 0, fullState = 0;
const failures = [];
dc.subscribe(DIAG_CH_SEND_FAIL, (m) => failures.push(String(m.err)));
dc.subscribe(DIAG_CH_SEND_SUCCESS, (m) => { sendOk++; if (m.s2a && (Number(m.s2a.flags) & 1)) fullState++; });
const configured = new Set();
const clients = [];
for (let i = 0; i < Number(count); i++) {
  const pod = `storm-7d4b9c8f6-${String(i).padStart(5, '0')}`;
  const client = createOpAMPClient({
    endpoint, heartbeatIntervalSeconds: Number(beat), diagEnabled: true,
    capabilities: BigInt(AgentCapabilities.AgentCapabilities_AcceptsRemoteConfig | AgentCapabilities.AgentCapabilities_ReportsRemoteConfig),
    onMessage: ({ remoteConfig }) => {
      if (!remoteConfig) return;
      client.setRemoteConfigStatus({ lastRemoteConfigHash: remoteConfig.configHash, status: RemoteConfigStatuses.RemoteConfigStatuses_APPLIED });
      if (!configured.has(pod)) {
        configured.add(pod);
        if (configured.size === clients.length) emit({ event: 'configured' });
      }
    },
  });
  client.setAgentDescription({ identifyingAttributes: {
    'service.name': 'storm', 'k8s.namespace.name': 'ns-storm', 'k8s.pod.name': pod,
    'k8s.container.name': 'app', 'process.vpid': 1000 + i, 'telemetry.sdk.language': 'nodejs' } });
  clients.push(client);
}
clients.forEach((c) => c.start());
require('node:readline').createInterface({ input: process.stdin })
  .on('line', (line) => {
    if (line === 'summary') emit({ event: 'summary', send_ok: sendOk, full_state: fullState, failures: failures.slice(0, 5), failed: failures.length });
  })
  .on('close', () => Promise.all(clients.map((c) => c.shutdown())).then(() => process.exit(0)));
