// Package runtime executes a job graph in one process: it turns logical nodes
// into parallel subtasks, chains forward edges into one goroutine, moves
// batches between tasks through bounded, credit-limited exchanges
// (back-pressure), and runs asynchronous barrier snapshotting with a pure
// checkpoint coordinator (coordinator.go) driven by a thin loop (job.go).
//
// It is not the place for operator logic (engine/nodes, engine/connectors, engine/window) nor for
// storage formats (engine/checkpoint). An exchange is an in-process channel
// today; the task only sees the inbox/outbox abstraction so that a TCP
// exchange can replace it when TaskManagers become separate processes.
package runtime
