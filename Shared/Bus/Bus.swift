// Bus: ZeroMQ through libzmq — sockets, polling, and CURVE (keys, the ZAP
// handler that admits listed keys, handshake monitoring). It owns how bytes
// move between processes; it must not know what the frames mean (that is
// Protocol) nor anything of jobs or roles.
