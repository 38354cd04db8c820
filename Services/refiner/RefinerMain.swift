// chorus-refiner: the refiner role worker, which rewrites a solution given a
// critique; RoleWorker holds all of it but the role's name.

import RoleWorker

@main
enum RefinerMain {
    static func main() {
        WorkerCommand.role = .refiner
        WorkerCommand.main()
    }
}
