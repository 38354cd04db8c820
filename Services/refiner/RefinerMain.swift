import RoleWorker

@main
enum RefinerMain {
    static func main() {
        WorkerCommand.role = .refiner
        WorkerCommand.main()
    }
}
