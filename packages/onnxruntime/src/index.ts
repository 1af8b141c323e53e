export * from "./ort-backend.js"
export * from "./state-pairing.js"
export * from "./stateful-session.js"
export * from "./streaming-session.js"
