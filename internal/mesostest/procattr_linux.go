package mesostest

import "syscall"

// sysProcAttr puts a task in its own process group (Close and kills signal
// the group) and asks the kernel to kill the task's first process if the
// test process dies (Pdeathsig is not inherited by its children).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
