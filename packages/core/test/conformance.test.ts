import { describeBackendConformance } from "@statesaver/core/testing"
import { hostBackend } from "@statesaver/core"

describeBackendConformance({
  name: "host",
  backend: () => hostBackend(),
  liveTensors: (backend) => backend.liveTensors(),
})
