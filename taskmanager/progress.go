package taskmanager

import pb "github.com/sluice-stream/sluice/internal/controlpb"

// sendProgress sends the master what changed in the progress of this
// TaskManager's shares of savepoints and restores (nothing when nothing
// changed: a report costs nothing between operations).
func (s *session) sendProgress() {
	if r := pb.FromProgress(s.tm.progress.Report()); r != nil {
		s.send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Progress{Progress: r}})
	}
}
