// Client: a client of the broker (a DEALER to its frontend for commands and
// requests, a SUB to its events), as the command line, the memory service and
// the tests use it. It owns calls and their replies, heartbeats while waiting,
// and event subscriptions; it must not know HTTP, jobs' planning or any model.
