# The official OpenTelemetry Python OpAMP client (opentelemetry-opamp-client 0.5b0).
# argv: endpoint, heartbeat seconds, run seconds. Prints each decoded config file, then stops
# (agent.stop() sends agent_disconnect; atexit sends it again).
import json, sys, time
from opentelemetry._opamp import OpAMPAgent, OpAMPCallbacks, OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2

class CB(OpAMPCallbacks):
    def on_message(self, agent, client, message):
        if message.remote_config is None:
            return
        names = [name for name, _ in client.decode_remote_config(message.remote_config)]
        print(json.dumps({"event": "config", "files": sorted(names)}), flush=True)
        rcs = client.update_remote_config_status(message.remote_config.config_hash, opamp_pb2.RemoteConfigStatuses_APPLIED)
        if rcs is not None:
            agent.send(client.build_remote_config_status_response_message(rcs))

client = OpAMPClient(endpoint=sys.argv[1], agent_identifying_attributes={
    "service.name": "otel-demo", "k8s.namespace.name": "ns-otel", "k8s.pod.name": "otel-pod",
    "k8s.container.name": "app", "process.pid": 4242, "telemetry.sdk.language": "python"})
agent = OpAMPAgent(interval=float(sys.argv[2]), callbacks=CB(), client=client)
agent.start()
time.sleep(float(sys.argv[3]))
agent.stop()
print(json.dumps({"event": "stopped"}), flush=True)
