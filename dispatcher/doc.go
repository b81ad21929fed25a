// Package dispatcher accepts job specs over HTTP, keeps them in a job store
// (engine/fs: file:// or hdfs://), starts one framework master per job
// through a Launcher (local child processes here; Mesos tasks later) and
// supervises it: a master that dies is started again on the same HA
// directory, where it takes the next fencing epoch and adopts the job's
// TaskManagers. A dispatcher that restarts recovers every job from the
// store and adopts the masters that still run, found through their HA
// directories.
//
// It talks to masters only over their REST API and reads their HA
// directories as files: it imports no runtime package (framework,
// taskmanager), so the layout of a master's HA directory is read here as
// framework/ha.go writes it.
//
// Not here: the Mesos launcher and quota (later), the web UI.
package dispatcher
