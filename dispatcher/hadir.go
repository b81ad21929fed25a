package dispatcher

import (
	"context"

	"github.com/sluice-stream/sluice/framework"
)

// MasterInfo is what a framework master publishes in its HA directory.
type MasterInfo = framework.MasterInfo

// CheckpointPointer is a run's latest completed checkpoint.
type CheckpointPointer = framework.CheckpointPointer

// Leader reads the newest master that published itself in the HA
// directory at uri; nil when none has.
func Leader(ctx context.Context, uri string) (*MasterInfo, error) {
	ha, err := framework.OpenHA(uri)
	if err != nil {
		return nil, err
	}
	return ha.Published(ctx)
}

// LatestCheckpoint reads the run's latest completed checkpoint; nil when
// none is recorded.
func LatestCheckpoint(ctx context.Context, uri string) (*CheckpointPointer, error) {
	ha, err := framework.OpenHA(uri)
	if err != nil {
		return nil, err
	}
	return ha.Checkpoint(ctx)
}
