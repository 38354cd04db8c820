// ServiceKit: what every process shares to start — the config file and
// environment, logging, CURVE and API key files, signals. It must not know the
// bus or the protocol.
