import RoleWorker

@main
enum VerifierMain {
    static func main() {
        WorkerCommand.role = .verifier
        WorkerCommand.main()
    }
}
