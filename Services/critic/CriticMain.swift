import RoleWorker

@main
enum CriticMain {
    static func main() {
        WorkerCommand.role = .critic
        WorkerCommand.main()
    }
}
