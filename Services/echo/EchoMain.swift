import RoleWorker

@main
enum EchoMain {
    static func main() {
        WorkerCommand.role = .echo
        WorkerCommand.main()
    }
}
