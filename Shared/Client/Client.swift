// Client: the clients of the broker. `BrokerClient` is the one to use: async,
// one connection shared by every caller (a thread owns the sockets), with
// submit, result, cancel, status, request and a job's events, catching up on
// events it missed; `blocking` for callers that are not async. `BusClient` is
// the synchronous socket session under it (a DEALER to the frontend, a SUB to
// the events), which the bus benchmark and the wire-level tests still use
// directly. It must not know HTTP, jobs' planning or any model.
