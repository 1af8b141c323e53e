import { describeBackendConformance } from "@statesaver/core/testing"
import { type HostBackend, hostBackend } from "@statesaver/core"

describeBackendConformance({
  name: "host",
  backend: () => hostBackend(),
  liveTensors: (backend) => (backend as HostBackend).liveTensors(),
})
