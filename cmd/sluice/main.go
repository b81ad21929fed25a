// Command sluice is Sluice's one binary: `sluice run JOB` runs a job in this
// process; later commands start the dispatcher, framework and taskmanagers.
package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

const usage = `usage: sluice <command> [flags] [args]

commands:
  run JOB        run a job in this process (the embedded default: no cluster needed);
                 with --cluster N, on N TaskManager processes with this one as job master
  framework      a job's master (--job JOB) with its TaskManagers (--resource-manager local)
  taskmanager    a worker process that registers with a job master (--master ADDR)
  validate JOB   check a job spec and print its plan, or the first error
  skip-backlog   make a running job's sources skip to their newest data: ID (via the
                 dispatcher), or --job URL (via one master's --http API)
  dispatcher     the REST API that keeps jobs in a store (--store URI) and runs one
                 framework master per job (--resource-manager local)
  submit JOB     submit a job to the dispatcher (--dispatcher URL); prints its id
  list           the dispatcher's jobs
  status ID      a job's state, master, TaskManagers and latest checkpoint
  cancel ID      cancel a job (--savepoint: after a final savepoint)
  savepoint ID   write a savepoint of a running job (progress on stderr while it is written)
  rescale ID N   savepoint, stop, and start the job again with parallelism N
                 (--wait: until the new run has restored)
  upgrade ID JOB upgrade a running job to a new spec: the new version's TaskManagers
                 first, then savepoint, stop, and start the new version from it
  size           the network a keyed, windowed job needs per machine (the sizing arithmetic)
  marathon       print the dispatcher's Marathon app definition (app) or write its DC/OS package (package --out DIR)
  help           this text

Run 'sluice <command> -h' for a command's flags.
`

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:])
	case "framework":
		return cmdFramework(args[1:])
	case "taskmanager":
		return cmdTaskManager(args[1:])
	case "validate":
		return cmdValidate(args[1:])
	case "skip-backlog":
		return cmdSkipBacklogAny(args[1:])
	case "dispatcher":
		return cmdDispatcher(args[1:])
	case "submit":
		return cmdSubmit(args[1:])
	case "list":
		return cmdList(args[1:])
	case "status":
		return cmdStatus(args[1:])
	case "cancel":
		return cmdCancel(args[1:])
	case "savepoint":
		return cmdSavepoint(args[1:])
	case "rescale":
		return cmdRescale(args[1:])
	case "upgrade":
		return cmdUpgrade(args[1:])
	case "marathon":
		return cmdMarathon(args[1:])
	case "size":
		return cmdSize(args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
