// Package procs finds processes as an operator would, from /proc: the
// `sluice taskmanager` processes of a job master, by parent and command
// line. Tests and the bench harness use it to kill and watch them.
package procs

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Proc is one process.
type Proc struct {
	PID, PPID int
	// State is /proc's state letter ("Z": exited, not reaped yet).
	State   string
	Cmdline []byte // NUL-separated
}

// Get reads pid's entry; ok is false when it is gone.
func Get(pid int) (p Proc, ok bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return Proc{}, false
	}
	// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Proc{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return Proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	return Proc{PID: pid, PPID: ppid, State: f[0], Cmdline: cmdline}, true
}

// Live lists the processes that have not exited.
func Live() []Proc {
	var out []Proc
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := Get(pid); ok && p.State != "Z" {
			out = append(out, p)
		}
	}
	return out
}

// IsTaskManager reports whether p runs `sluice taskmanager`.
func (p Proc) IsTaskManager() bool {
	return bytes.Contains(p.Cmdline, []byte("\x00taskmanager\x00"))
}

// TaskManagers lists the `sluice taskmanager` children of parent.
func TaskManagers(parent int) []int {
	var out []int
	for _, p := range Live() {
		if p.PPID == parent && p.IsTaskManager() {
			out = append(out, p.PID)
		}
	}
	return out
}

// TaskManagersWith lists the `sluice taskmanager` processes whose command
// line holds s, whatever their parent (they outlive a killed master).
func TaskManagersWith(s string) []int {
	var out []int
	for _, p := range Live() {
		if p.IsTaskManager() && bytes.Contains(p.Cmdline, []byte(s)) {
			out = append(out, p.PID)
		}
	}
	return out
}

// Exited reports whether pid is gone or exited (not reaped yet).
func Exited(pid int) bool {
	p, ok := Get(pid)
	return !ok || p.State == "Z"
}

// CPU is a process's own user+system CPU time (not its children's), from
// /proc/PID/stat in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func CPU(pid int) (time.Duration, bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	// After "pid (comm)": state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 || f[0] == "Z" {
		return 0, false
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond, true
}

// Busiest is the process of pids that used the most CPU over d (an idle
// spare TaskManager is never it while others work); 0 when none is left.
func Busiest(pids []int, d time.Duration) int {
	before := map[int]time.Duration{}
	for _, p := range pids {
		before[p], _ = CPU(p)
	}
	time.Sleep(d)
	best, most := 0, time.Duration(-1)
	for _, p := range pids {
		if c, ok := CPU(p); ok && c-before[p] > most {
			best, most = p, c-before[p]
		}
	}
	return best
}
