// ServiceKit: what every process shares to start — the config file and
// environment, logging, CURVE and API key files, signals, and the one boot
// routine every service's main runs through (ServiceBoot: configuration,
// logging, signals, a listener's start and its failure). It must not know the
// bus or the protocol.
