// chorus-echo: the echo role worker, which returns what it is sent (for
// benchmarks of the bus); RoleWorker holds all of it but the role's name.

import RoleWorker

@main
enum EchoMain {
    static func main() {
        WorkerCommand.role = .echo
        WorkerCommand.main()
    }
}
