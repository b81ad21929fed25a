package controlpb

import "github.com/sluice-stream/sluice/engine/runtime"

// FromProgress converts a TaskManager's progress report; nil when nothing
// changed.
func FromProgress(es []runtime.ProgressEntry) *ProgressReport {
	if len(es) == 0 {
		return nil
	}
	r := &ProgressReport{Shares: make([]*ProgressShare, len(es))}
	for i, e := range es {
		r.Shares[i] = &ProgressShare{Op: e.Op, Kind: e.Kind, Node: e.Node, Subtask: int32(e.Subtask),
			BytesDone: e.BytesDone, BytesTotal: e.BytesTotal, FilesDone: e.FilesDone, FilesTotal: e.FilesTotal,
			Done: e.Done, Error: e.Error}
	}
	return r
}

// Entries converts a report back for runtime.Progress.Merge.
func (r *ProgressReport) Entries() []runtime.ProgressEntry {
	es := make([]runtime.ProgressEntry, 0, len(r.GetShares()))
	for _, s := range r.GetShares() {
		es = append(es, runtime.ProgressEntry{Op: s.Op, Kind: s.Kind, Node: s.Node, Subtask: int(s.Subtask),
			BytesDone: s.BytesDone, BytesTotal: s.BytesTotal, FilesDone: s.FilesDone, FilesTotal: s.FilesTotal,
			Done: s.Done, Error: s.Error})
	}
	return es
}
