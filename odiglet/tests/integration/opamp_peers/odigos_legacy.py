# The 2024 Odigos Python agent (odigos-opentelemetry-python 1.0.12): full SDK bootstrap over
# the X-Odigos-DeviceId flow. Env: ODIGOS_OPAMP_SERVER_HOST, ODIGOS_INSTRUMENTATION_DEVICE_ID,
# OTEL_TRACES_EXPORTER=otlp_proto_http. Prints the process resource the SDK ended up with.
import json
import opentelemetry.sdk._configuration as sc
from initializer.components import initialize_components
t, m, l = sc._import_exporters(sc._get_exporter_names("traces"), sc._get_exporter_names("metrics"), sc._get_exporter_names("logs"))
initialize_components(t, m, l)
from opentelemetry import trace
print(json.dumps({"resource": {k: str(v) for k, v in trace.get_tracer_provider().resource.attributes.items()}}), flush=True)
