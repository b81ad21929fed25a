package framework

import "github.com/sluice-stream/sluice/engine/runtime"

// Progress is the job's savepoints' and restores' progress (GET
// /v1/progress): the driver's operations with the TaskManagers' shares.
func (m *Master) Progress() *runtime.Progress { return m.progress }
