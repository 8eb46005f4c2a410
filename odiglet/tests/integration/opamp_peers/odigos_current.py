# Drives the real Odigos Python agent's OpAMP client (odigos-opentelemetry-python 1.0.90).
# Env: ODIGOS_OPAMP_SERVER_HOST or ODIGOS_OPAMP_UNIX_SOCKET, ODIGOS_POD_NAME,
# ODIGOS_WORKLOAD_NAMESPACE, ODIGOS_CONTAINER_NAME. Stdin commands: "beat" (wake the 30 s
# heartbeat worker now), "stop" (shutdown: agent_disconnect + health). Prints JSON lines.
import json, sys, threading
from opamp.http_client import OpAMPHTTPClient

class Ev:
    def __init__(self):
        self.event = threading.Event()
        self.error = False

def emit(**kw):
    print(json.dumps(kw), flush=True)

ev = Ev()
client = OpAMPHTTPClient(ev, threading.Condition(threading.Lock()))
client.register_config_update_cb(lambda cfg: emit(event="config", container_config=cfg.container_config))
client.start(True)
ev.event.wait(18)
emit(event="registered", error=ev.error, uid=client.instance_uid, container_config=client.container_config)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "beat":
        with client.condition:
            client.condition.notify_all()
    elif cmd == "stop":
        client.shutdown()
        emit(event="stopped")
        break
