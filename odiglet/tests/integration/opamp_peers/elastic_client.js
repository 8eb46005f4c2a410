// Elastic's Node OpAMP client (@elastic/opamp-client-node 0.5.0). argv: endpoint, pod name,
// heartbeat seconds. Acknowledges every config (APPLIED) and prints diagnostics events as
// JSON lines: {"event":"config"|"send-fail"|"send-ok", ...}. Runs until killed or stdin closes.
const dc = require('node:diagnostics_channel');
const { createOpAMPClient, AgentCapabilities, RemoteConfigStatuses, DIAG_CH_SEND_SUCCESS, DIAG_CH_SEND_FAIL } = require('@elastic/opamp-client-node');
const [endpoint, pod, beat] = process.argv.slice(2);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
dc.subscribe(DIAG_CH_SEND_FAIL, (m) => emit({ event: 'send-fail', err: String(m.err), retryAfterMs: m.retryAfterMs ?? null }));
dc.subscribe(DIAG_CH_SEND_SUCCESS, (m) => emit({ event: 'send-ok', fullState: Boolean(m.s2a && (Number(m.s2a.flags) & 1)) }));
const client = createOpAMPClient({
  endpoint, heartbeatIntervalSeconds: Number(beat), diagEnabled: true,
  capabilities: BigInt(AgentCapabilities.AgentCapabilities_AcceptsRemoteConfig | AgentCapabilities.AgentCapabilities_ReportsRemoteConfig),
  onMessage: ({ remoteConfig }) => {
    if (!remoteConfig) return;
    emit({ event: 'config', hash: Buffer.from(remoteConfig.configHash).toString('hex'), files: Object.keys(remoteConfig.config.configMap).sort() });
    client.setRemoteConfigStatus({ lastRemoteConfigHash: remoteConfig.configHash, status: RemoteConfigStatuses.RemoteConfigStatuses_APPLIED });
  },
});
client.setAgentDescription({ identifyingAttributes: {
  'service.name': 'node-demo', 'k8s.namespace.name': 'ns-node', 'k8s.pod.name': pod,
  'k8s.container.name': 'app', 'process.vpid': process.pid, 'telemetry.sdk.language': 'nodejs' } });
client.start();
process.stdin.on('end', () => client.shutdown().then(() => process.exit(0)));
process.stdin.resume();
