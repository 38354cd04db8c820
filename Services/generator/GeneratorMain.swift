import RoleWorker

@main
enum GeneratorMain {
    static func main() {
        WorkerCommand.role = .generator
        WorkerCommand.main()
    }
}
