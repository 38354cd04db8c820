// chorus-verifier: the verifier role worker, which checks a solution and says
// what is wrong with it; RoleWorker holds all of it but the role's name.

import RoleWorker

@main
enum VerifierMain {
    static func main() {
        WorkerCommand.role = .verifier
        WorkerCommand.main()
    }
}
