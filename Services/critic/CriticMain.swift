// chorus-critic: the critic role worker, which scores whether a chain's answer
// is right (P(yes)) and gives the verdict; RoleWorker holds all of it but the
// role's name.

import RoleWorker

@main
enum CriticMain {
    static func main() {
        WorkerCommand.role = .critic
        WorkerCommand.main()
    }
}
