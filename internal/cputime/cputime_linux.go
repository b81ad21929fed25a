// Package cputime reads the CPU time of the calling OS thread: what a
// batch cost itself on a shared machine, without the time other processes
// took the core away. Benchmarks lock the goroutine to its thread.
package cputime

import (
	"syscall"
	"time"
	"unsafe"
)

// Thread is the CPU time of the calling OS thread.
func Thread() time.Duration {
	const clockThreadCPUTime = 3 // CLOCK_THREAD_CPUTIME_ID
	var ts syscall.Timespec
	_, _, _ = syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}
