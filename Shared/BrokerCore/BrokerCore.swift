// BrokerCore: the broker as a library — the router (workers by role, least
// recently used first, slots, heartbeats, retries, expiry, cancel) over the
// worker socket, the job engine's effects carried out, the frontend's
// commands, events, CURVE's gatekeeper and the metrics page. The router knows
// requests and workers, not jobs; the executable only reads its settings.
