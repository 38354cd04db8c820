// chorus-generator: the generator role worker, which writes a solution to a
// question; RoleWorker holds all of it but the role's name.

import RoleWorker

@main
enum GeneratorMain {
    static func main() {
        WorkerCommand.role = .generator
        WorkerCommand.main()
    }
}
