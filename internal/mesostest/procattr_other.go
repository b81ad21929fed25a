//go:build !linux

package mesostest

import "syscall"

// sysProcAttr puts a task in its own process group (Close and kills signal
// the group).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
